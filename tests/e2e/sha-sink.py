"""A TCP sink for the end-to-end tests: `sha-sink.py serve PORT` accepts connections (IPv4
and IPv6) and answers each with the sha256 (hex) of everything received before the peer
shut its side down; `sha-sink.py send HOST PORT FILE` sends FILE and prints the answer."""
import hashlib
import socket
import sys
import threading


def handle(conn):
    with conn:
        h = hashlib.sha256()
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            h.update(b)
        conn.sendall(h.hexdigest().encode() + b"\n")


def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def send(host, port, path):
    with socket.create_connection((host, port), timeout=30) as s, open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            s.sendall(b)
        s.shutdown(socket.SHUT_WR)
        print(s.makefile().readline().strip())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
