#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/TARGET/ from the repository:
recorded ipvsadm command lines and restore inputs (../shared/oracle/cases, tests/oracle-extra),
the control protocol's test lines, keepalived.conf and Kubernetes fixtures, a state file and
journal, and packets built here (with right checksums) in the packet target's input shape.
Usage: make_seeds.py REPO_ROOT"""
import glob, hashlib, os, re, struct, sys, zlib

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..'))
out = os.path.join(root, 'fuzz', 'corpus')
oracle = [os.path.join(root, '..', 'shared', 'oracle', 'cases'), '/work/shared/oracle/cases',
          os.path.join(root, 'tests', 'oracle-extra')]


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + hashlib.sha1(data).hexdigest()[:16]), 'wb') as f:
        f.write(data)


def read(p):
    with open(p, encoding='utf-8', errors='replace') as f:
        return f.read()


# --- ipvsadm command lines and restore inputs ---
case_files = sorted({os.path.realpath(p) for d in oracle for p in glob.glob(os.path.join(d, '*.out'))})
restore_lines = []
for p in case_files:
    for line in read(p).splitlines():
        if line.startswith('$ ipvsadm '):
            words = line[len('$ ipvsadm '):].split()
            if '|' in words:
                words = words[:words.index('|')]
            put('ipvsadm_args', '\0'.join(words))
            if words and words[0] in ('-A', '-E', '-a', '-e', '-D', '-d', '-C', '--add-service',
                                       '--add-server', '--edit-service', '--edit-server'):
                restore_lines.append(' '.join(words))
for p in sorted({os.path.realpath(p) for d in oracle for p in glob.glob(os.path.join(d, '*.sh'))}):
    for m in re.finditer(r"<<'?(\w+)'?\n(.*?)\n\1\n", read(p), re.S):
        put('restore', m.group(2) + '\n')
for i in range(0, len(restore_lines), 40):
    put('restore', '\n'.join(restore_lines[i:i + 40]) + '\n')

# --- control protocol ---
for p in glob.glob(os.path.join(root, 'crates', 'rvs-ctl', '**', '*.rs'), recursive=True) + \
        glob.glob(os.path.join(root, 'crates', 'rvs', 'src', '**', '*.rs'), recursive=True):
    for m in re.finditer(r'r#"(\{.*?\})"#', read(p), re.S):
        put('control_request', m.group(1))

# --- keepalived.conf, KubeProxyConfiguration, Kubernetes objects ---
for p in glob.glob(os.path.join(root, 'crates', 'rvs-health', 'tests', 'fixtures', '**', '*'), recursive=True):
    if os.path.isfile(p):
        put('keepalived_conf', read(p))
for p in glob.glob(os.path.join(root, 'crates', 'rvs-k8s', 'tests', 'fixtures', '*')):
    put('kube_config' if p.endswith('.yaml') else 'kube_objects', read(p))
for p in glob.glob(os.path.join(root, 'crates', 'rvs-k8s', 'tests', 'fixtures', '*.json')):
    put('kube_config', read(p))
# The fixtures are indented lists of 10-20 KB, above the targets' -max_len (bench/fuzz.sh,
# which truncates longer seeds): each object alone and the list without indentation too.
import json
for p in glob.glob(os.path.join(root, 'crates', 'rvs-k8s', 'tests', 'fixtures', '*.json')):
    try:
        doc = json.loads(read(p))
    except ValueError:
        continue
    compact = lambda v: json.dumps(v, separators=(',', ':'))
    put('kube_objects', compact(doc))
    for item in doc.get('items', []) if isinstance(doc, dict) else []:
        put('kube_objects', compact(item))

# --- state file and journal: three pieces, 2-byte big-endian lengths ---
state = ('{"format":"rvs-state","version":1,"services":[{"config":{"key":{"Addr":{"protocol":"Tcp",'
         '"addr":"10.0.0.1","port":80}},"scheduler":"rr","flags":0,"timeout":0,"netmask":{"V4":'
         '"255.255.255.255"},"pe_name":null},"dests":[]}],"timeouts":{"tcp":900,"tcp_fin":120,"udp":300},'
         '"daemons":[],"sysctls":{"expire_quiescent_template":"1"}}')


def jline(seq, rec):
    body = '{"seq":%d,"rec":%s' % (seq, rec)
    return (body + ',"crc":"%08x"}\n' % zlib.crc32(body.encode())).encode()


recs = ['{"sysctl":{"name":"expire_nodest_conn","value":"1"}}', '{"ops":["Flush"]}',
        '{"sysctl":{"name":"conntrack","value":"1"}}']
journal = b''.join(jline(i + 1, r) for i, r in enumerate(recs))
old = jline(1, recs[0])


def pieces(*ps):
    return b''.join(struct.pack('>H', len(p)) + p for p in ps[:-1]) + ps[-1]


put('journal', pieces(state.encode(), journal, b''))
put('journal', pieces(b'', journal, b''))
put('journal', pieces(b'', journal[:-7], b''))
put('journal', pieces(state.encode(), b''.join(jline(i + 2, r) for i, r in enumerate(recs[1:])), old))


# --- packets ---
def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('>%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


CRC32C = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC32C.append(c)


def crc32c(b):
    c = 0xffffffff
    for x in b:
        c = CRC32C[(c ^ x) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff


A4 = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
A6 = bytes.fromhex('20010db8000000000000000000000002'), bytes.fromhex('20010db8000000000000000000000001')


def l4(proto, src, dst, sport, dport, payload, v6):
    if proto == 6:
        h = struct.pack('>HHIIBBHHH', sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
        at = 16
    elif proto == 17:
        h = struct.pack('>HHHH', sport, dport, 8 + len(payload), 0)
        at = 6
    elif proto == 132:
        seg = struct.pack('>HHII', sport, dport, 0x11223344, 0) + \
            struct.pack('>BBH', 1, 0, 20) + bytes(16)
        c = crc32c(seg)
        return seg[:8] + struct.pack('<I', c) + seg[12:]
    else:  # ICMP echo / ICMPv6 echo
        h = struct.pack('>BBHHH', 128 if v6 else 8, 0, 0, 1, 1)
        at = 2
    seg = h + payload
    if v6:
        ph = src + dst + struct.pack('>IxxxB', len(seg), 58 if proto == 1 else proto)
    else:
        ph = src + dst + struct.pack('>xBH', proto, len(seg))
    c = csum((b'' if (proto == 1 and not v6) else ph) + seg)
    if proto == 17 and c == 0:
        c = 0xffff
    return seg[:at] + struct.pack('>H', c) + seg[at + 2:]


def ip4(proto, payload, src=A4[0], dst=A4[1], ident=7, flags_off=0x4000):
    h = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, flags_off, 64, proto, 0, src, dst)
    return h[:10] + struct.pack('>H', csum(h)) + h[12:] + payload


def ip6(nh, payload, src=A6[0], dst=A6[1]):
    return struct.pack('>IHBB', 6 << 28, len(payload), nh, 64) + src + dst + payload


def pkt4(proto, n=16):
    return ip4(proto, l4(proto, *A4, 40000, 80, bytes(i & 0xff for i in range(n)), False))


def pkt6(proto, n=16):
    return ip6(58 if proto == 1 else proto, l4(proto, *A6, 40000, 80, bytes(i & 0xff for i in range(n)), True))


def icmp4_error(quoted):
    body = struct.pack('>BBHI', 3, 3, 0, 0) + quoted
    body = body[:2] + struct.pack('>H', csum(body)) + body[4:]
    return ip4(1, body, src=A4[1], dst=A4[0])


def frags4(packet, size):
    hdr, data = packet[:20], packet[20:]
    out = []
    for off in range(0, len(data), size):
        part = data[off:off + size]
        more = 0x2000 if off + size < len(data) else 0
        out.append(ip4(hdr[9], part, ident=99, flags_off=more | (off // 8)))
    return out


def frags6(packet, size):
    nh, data = packet[6], packet[40:]
    out = []
    for off in range(0, len(data), size):
        part = data[off:off + size]
        more = 1 if off + size < len(data) else 0
        fh = struct.pack('>BBHI', nh, 0, off | more, 0x1234)
        out.append(ip6(44, fh + part))
    return out


def seed(sel, addr, port, *ps):
    return bytes([sel]) + addr + struct.pack('>H', port) + b''.join(struct.pack('>H', len(p)) + p for p in ps)


V4 = bytes([192, 168, 1, 10])
V6 = bytes.fromhex('20010db8000000000000000000000099')
singles = [pkt4(6), pkt4(17), pkt4(1), pkt4(132), pkt4(17, 0), icmp4_error(pkt4(6)[:28]),
           icmp4_error(pkt4(17)), pkt6(6), pkt6(17), pkt6(1), pkt6(132)]
for p in singles:
    put('packet', seed(0, V4, 8080, p))
    put('packet', seed(1, V6, 8080, p))
big4, big6 = pkt4(17, 300), pkt6(6, 300)
for sel, addr, big, fr in ((0, V4, big4, frags4(big4, 96)), (1, V6, big6, frags6(big6, 96)),
                           (4, V4, big4, frags4(big4, 64)[::-1])):
    put('packet', seed(sel, addr, 8080, *fr))
