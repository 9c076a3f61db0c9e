#!/usr/bin/env python3
"""One-flow TCP throughput through a BMv2 switch vs a kernel switch, measured in the
same run (ratios, not absolute numbers: the machine is shared and noisy).

For each role (router: h1 - r1 - h2; switch: h1 - s1 - h2, unshaped links, offloads off
on the hosts as BMv2 needs) the same iperf3 flow runs through the kernel backend and the
bmv2 backend (p4/tcp_int.p4, logging off), alternating, `--reps` times each.

    python bench/bmv2_throughput.py                # 3 s flows, 2 repetitions
    python bench/bmv2_throughput.py --seconds 5 --reps 3 --roles router
    python bench/bmv2_throughput.py --csv          # one line per measurement

Sizing BMv2 experiments: keep link rates well under the bmv2/kernel figure printed here.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from testbed.network.backends.bmv2 import bmv2_available
from testbed.testing import running_network


def topology(role: str, backend: str) -> dict:
    fwd = "r1" if role == "router" else "s1"
    return {"ipv6": False, "hosts": {"h1": None, "h2": None},
            ("routers" if role == "router" else "switches"): {fwd: {"backend": backend}},
            "links": [{"ends": ["h1", fwd]}, {"ends": [fwd, "h2"]}]}


def one_flow(role: str, backend: str, seconds: float) -> float:
    """Mb/s received by h2 for one iperf3 flow h1 → h2."""
    with running_network(topology(role, backend)) as net:
        for h in ("h1", "h2"):
            net.run(h, f"ethtool -K {h}-eth0 tso off gso off gro off tx off")
        srv = net["h2"].popen(["iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while ":5201 " not in net["h2"].cmd("ss -ltnH"):
            if time.monotonic() > deadline:
                raise SystemExit("iperf3 server did not start")
            time.sleep(0.05)
        cl = net["h1"].popen(["iperf3", "-c", net.ip("h2"), "-p", "5201", "-t", str(seconds),
                              "-C", "cubic", "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out, _ = cl.communicate(timeout=seconds + 30)
        srv.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each flow")
    ap.add_argument("--reps", type=int, default=2, help="flows per backend and role")
    ap.add_argument("--roles", nargs="+", default=["router", "switch"],
                    choices=["router", "switch"])
    ap.add_argument("--csv", action="store_true", help="role,backend,rep,mbps lines")
    a = ap.parse_args()
    ok, why = bmv2_available()
    if not ok:
        print(f"bmv2_throughput: {why}", file=sys.stderr)
        return 2
    if a.csv:
        print("role,backend,rep,mbps")
    else:
        print(f"{'role':8} {'kernel Mb/s':>12} {'bmv2 Mb/s':>10} {'bmv2/kernel':>12}")
    for role in a.roles:
        got: dict[str, list[float]] = {"kernel": [], "bmv2": []}
        for rep in range(a.reps):
            for backend in ("kernel", "bmv2"):   # alternate: drift hits both alike
                mbps = one_flow(role, backend, a.seconds)
                got[backend].append(mbps)
                if a.csv:
                    print(f"{role},{backend},{rep},{mbps:.1f}", flush=True)
        if not a.csv:
            k, b = statistics.median(got["kernel"]), statistics.median(got["bmv2"])
            print(f"{role:8} {k:12.1f} {b:10.1f} {b / k:12.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
