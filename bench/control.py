"""bench/control.sh's body: see that script for what is measured."""
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

RVS = os.environ["RVS_BIN"]
SIZES = [int(x) for x in os.environ.get("RVS_BENCH_SIZES", "1000 10000 30000").split()]
REPEAT = int(os.environ.get("RVS_BENCH_REPEAT", "21"))
DESTS = 10


def vip(i):
    return f"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def rip(i, j):
    n = i * DESTS + j + 1
    return f"10.{100 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def rules(n):
    out = []
    for i in range(n):
        out.append(f"-A -t {vip(i)}:80 -s wlc")
        for j in range(DESTS):
            out.append(f"-a -t {vip(i)}:80 -r {rip(i, j)}:8080 -m -w 1")
    return "\n".join(out) + "\n"


class Daemon:
    def __init__(self, d):
        self.dir = d
        self.sock = os.path.join(d, "rvs.sock")
        self.state = os.path.join(d, "state", "state.json")
        self.proc = None

    def start(self):
        """Start the daemon; returns seconds until its socket answers."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [RVS, "daemon", "--dataplane", "none", "--socket", self.sock, "--state", self.state],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "daemon.log"), "a"))
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"control.py: the daemon exited ({self.proc.returncode}); see {self.dir}/daemon.log")
            if subprocess.run([RVS, "--socket", self.sock, "ping", "-q"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > 600:
                sys.exit("control.py: the daemon did not answer within 600 s")
            time.sleep(0.002)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def run(self, args, stdin=None, check=True):
        """Run `rvs --socket S ARGS`; returns (seconds, stdout)."""
        t0 = time.monotonic()
        p = subprocess.run([RVS, "--socket", self.sock] + args, input=stdin, capture_output=True, text=True)
        dt = time.monotonic() - t0
        if check and p.returncode != 0:
            sys.exit(f"control.py: rvs {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return dt, p.stdout


def ms(x):
    return x * 1000.0


def per_change(d, n):
    """Median and p90 (ms) of each single change, end to end from the CLI."""
    out = {}
    ks = [(n // 2 + k) % n for k in range(REPEAT)]
    def series(f):
        v = sorted(ms(f(k)) for k in ks)
        return statistics.median(v), v[int(len(v) * 0.9) - 1 if len(v) > 1 else 0]
    new_vip = lambda k: f"10.250.{(k >> 8) & 255}.{k & 255}"
    out["-A (add service)"] = series(lambda k: d.run(["ipvsadm", "-A", "-t", f"{new_vip(k)}:80", "-s", "rr"])[0])
    out["-a (add real server)"] = series(lambda k: d.run(["ipvsadm", "-a", "-t", f"{vip(k)}:80", "-r", f"10.99.0.{k % 250 + 1}:8080", "-m"])[0])
    out["-e (edit real server)"] = series(lambda k: d.run(["ipvsadm", "-e", "-t", f"{vip(k)}:80", "-r", f"{rip(k, 3)}:8080", "-m", "-w", "7"])[0])
    out["-d (delete real server)"] = series(lambda k: d.run(["ipvsadm", "-d", "-t", f"{vip(k)}:80", "-r", f"{rip(k, 4)}:8080"])[0])
    out["-D (delete service)"] = series(lambda k: d.run(["ipvsadm", "-D", "-t", f"{new_vip(k)}:80"])[0])
    out["-Ln -t (one service)"] = series(lambda k: d.run(["ipvsadm", "-Ln", "-t", f"{vip(k)}:80"])[0])
    return out


def measure(n, text):
    res = {}
    with tempfile.TemporaryDirectory(prefix=f"rvs-bench-control-{n}-") as tmp:
        # ipvsadm -R on its own fresh daemon.
        r = Daemon(os.path.join(tmp, "r"))
        os.makedirs(r.dir)
        r.start()
        res["load: ipvsadm -R (s)"] = r.run(["ipvsadm", "-R"], stdin=text)[0]
        r.stop()

        d = Daemon(os.path.join(tmp, "a"))
        os.makedirs(d.dir)
        d.start()
        res["load: restore --atomic (s)"] = d.run(["restore", "--atomic"], stdin=text)[0]
        res["RSS after load (MB)"] = d.kib("VmRSS") / 1024
        t, listing = d.run(["ipvsadm", "-Ln"])
        lines = len(listing.splitlines())
        want = 3 + n * (1 + DESTS)
        if lines != want:
            sys.exit(f"control.py: -Ln listed {lines} lines, expected {want}")
        res["-Ln whole table (s)"] = t
        res.update({k: v for k, v in per_change(d, n).items()})
        res["RSS peak (MB)"] = d.kib("VmHWM") / 1024
        d.stop()
        t0 = time.monotonic()
        res["restart: socket answers (s)"] = d.start()
        _, listing = d.run(["ipvsadm", "-Ln"])
        res["restart: whole table listed (s)"] = time.monotonic() - t0
        if len(listing.splitlines()) != want:
            sys.exit("control.py: the table after the restart differs in size")
        res["RSS after restart (MB)"] = d.kib("VmRSS") / 1024
        d.stop()
    return res


def main():
    results = {}
    for n in SIZES:
        print(f"control.py: {n} services x {DESTS} real servers ({n * (DESTS + 1)} lines)...", file=sys.stderr)
        results[n] = measure(n, rules(n))
    rows = list(results[SIZES[0]].keys())
    head = "| figure | " + " | ".join(f"{n} x {DESTS}" for n in SIZES) + " | growth |"
    lines = [head, "|" + "---|" * (len(SIZES) + 2)]
    for row in rows:
        cells = []
        for n in SIZES:
            v = results[n][row]
            if isinstance(v, tuple):
                cells.append(f"{v[0]:.2f} ms (p90 {v[1]:.2f})")
            else:
                cells.append(f"{v:.3f}" if v < 10 else f"{v:.1f}")
        a, b = results[SIZES[0]][row], results[SIZES[-1]][row]
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        growth = f"{b / a:.2f}x" if a > 0 else "-"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {growth} |")
    size_growth = SIZES[-1] / SIZES[0]
    table = "\n".join(lines)
    print(table)
    print(f"\n(sizes grow {size_growth:.0f}x; growth = figure at {SIZES[-1]} / figure at {SIZES[0]})")
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as f:
        f.write(f"\n## Control plane at scale (bench/control.sh), {stamp}\n\n")
        f.write(f"Machine: {platform.node()}, {os.cpu_count()} cores, {cpu}, Linux {platform.release()}. "
                f"rvs: {os.environ.get('RVS_BIN_NOTE', RVS)}. Daemon `--dataplane none`; every figure end to end "
                f"from the CLI (a process start each); single changes: median and p90 of {REPEAT} runs. "
                f"Sizes grow {size_growth:.0f}x; growth = largest / smallest. Load average at the end: {load}.\n\n")
        f.write(table + "\n")


main()
