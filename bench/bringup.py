"""Bring-up and teardown of an N-host incast at 16, 64 and 256 hosts: testbed vs bare
Mininet, same run, and how each grows with N.

Baseline: Mininet's own Mininet() with a LinuxBridge and N hosts (no shaping), as a
researcher would write it by hand. Testbed: the incast built-in (N hosts, every port
shaped with HTB+FIFO, addresses v4+v6, offloads set), each node in its own namespace and
cgroup, returning once every link carries traffic; the graph's construction counted in.
Alternating rounds; medians; ratios; the growth exponent is the least-squares slope of
log(time) over log(N). Goals: up ≤ 1.5× bare at every N, exponent ≤ 1.2, teardown
≤ 1 s per 64 nodes. Where the time goes: docs/scale.md.

usage: python bench/bringup.py [--rounds 3] [--sizes 16,64,256]
"""
from __future__ import annotations

import argparse
import math
import os
import secrets
import statistics
import time

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import SingleSwitchTopo

from testbed.config.models import HostDefaults
from testbed.network.net import Network
from testbed.network.tracker import RunTracker
from testbed.topology import builtins
from testbed.topology.graph import Graph


class _Topo(SingleSwitchTopo):
    """Mininet's single-switch topology, with a run-unique switch name (the bridge and
    its ports live in the root namespace)."""

    def build(self, k=2, **_opts):
        sw = self.addSwitch(f"b{secrets.token_hex(2)}", dpid="0000000000000001")
        for i in range(1, k + 1):
            self.addLink(self.addHost(f"h{i}"), sw)


def bare(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    net = Mininet(topo=_Topo(n), switch=LinuxBridge, controller=None, waitConnected=False)
    net.start()
    t1 = time.perf_counter()
    net.stop()
    return t1 - t0, time.perf_counter() - t1


def ours(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    g = Graph(builtins.build("incast", {"senders": n - 1}))
    with RunTracker() as tr:
        Network(g, tr, HostDefaults(offloads={"tso": False, "gso": False, "gro": False})).start()
        t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t1


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="16,64,256")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    setLogLevel("error")
    load = os.getloadavg()[0]
    med: dict[int, dict[str, tuple[float, float]]] = {}
    for n in sizes:
        res: dict[str, list[tuple[float, float]]] = {"bare": [], "testbed": []}
        for _ in range(a.rounds):
            res["bare"].append(bare(n))
            res["testbed"].append(ours(n))
        med[n] = {k: (statistics.median(u for u, _ in v), statistics.median(d for _, d in v))
                  for k, v in res.items()}
    print(f"N-host incast, {a.rounds} rounds per size, medians; {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"{'hosts':>5} {'bare up':>8} {'testbed up':>10} {'ratio':>6} {'bare down':>9} "
          f"{'testbed down':>12} {'down/64 nodes':>13}")
    ok = True
    for n in sizes:
        (bu, bd), (tu, td) = med[n]["bare"], med[n]["testbed"]
        per64 = td / (n + 1) * 64
        ok &= tu / bu <= 1.5 and per64 <= 1.0
        print(f"{n:5d} {bu:8.3f} {tu:10.3f} {tu / bu:5.2f}x {bd:9.3f} {td:12.3f} {per64:12.3f}s")
    if len(sizes) > 1:
        eb = slope(sizes, [med[n]["bare"][0] for n in sizes])
        et = slope(sizes, [med[n]["testbed"][0] for n in sizes])
        ok &= et <= 1.2
        print(f"growth exponent of bring-up (time ~ N^k): testbed k={et:.2f} (goal <= 1.2), "
              f"bare Mininet k={eb:.2f}")
    print(f"goals (up <= 1.5x bare at every N, teardown <= 1 s per 64 nodes, k <= 1.2): "
          f"{'OK' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
