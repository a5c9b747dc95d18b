#!/usr/bin/env python3
"""The rule churn of the packet benches (bench/packet.sh, bench/tools/churn-cost.sh).

  churn.py rules N NFT_FILE   N changes as `ipvsadm -R` lines on stdout (add a server, change
                              its weight, delete it, over and over, over the 10 services
                              10.111.200.1-10:80), and the same changes to nftables' peer
                              (each service's server map, address : weight) in NFT_FILE
  churn.py pace FILE PROBES PROBE_US
                              FILE's lines on stdout, evenly over the probe window
                              (PROBES x PROBE_US microseconds), each flushed when due
"""
import sys
import time


def rules(n, nft_path):
    with open(nft_path, "w") as nft:
        for i in range(n):
            t = i // 3
            svc = f"10.111.200.{t % 10 + 1}:80"
            rs = f"10.113.{t // 250}.{t % 250 + 1}:80"
            print([f"-a -t {svc} -r {rs} -m -w 1", f"-e -t {svc} -r {rs} -m -w 2",
                   f"-d -t {svc} -r {rs}"][i % 3])
            m, a = f"ip rvsbench churn{t % 10 + 1}", rs.split(":")[0]
            print([f"add element {m} {{ {a} : 1 }}",
                   f"delete element {m} {{ {a} }}; add element {m} {{ {a} : 2 }}",
                   f"delete element {m} {{ {a} }}"][i % 3], file=nft)


def pace(path, probes, probe_us):
    lines = open(path).read().splitlines()
    window = probes * probe_us / 1e6
    start = time.monotonic()
    for i, line in enumerate(lines):
        delay = start + window * i / len(lines) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "rules":
        rules(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "pace":
        pace(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
