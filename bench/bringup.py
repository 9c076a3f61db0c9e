"""Bring-up and teardown of a 16-host incast: testbed vs bare Mininet, same run.

Baseline: Mininet's own Mininet() with a LinuxBridge and 16 hosts (no shaping), as a
researcher would write it by hand. Testbed: the incast built-in (16 hosts, every port
shaped with HTB+FIFO, addresses v4+v6, offloads set), each node in its own namespace and
cgroup. Alternating rounds; medians; ratios. Goals: up ≤ 1.5× bare, teardown ≤ 1 s.

usage: python bench/bringup.py [--rounds 5] [--hosts 16]
"""
from __future__ import annotations

import argparse
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
    g = Graph(builtins.build("incast", {"senders": n - 1}))
    t0 = time.perf_counter()
    with RunTracker() as tr:
        Network(g, tr, HostDefaults(offloads={"tso": False, "gso": False, "gro": False})).start()
        t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=16)
    a = ap.parse_args()
    setLogLevel("error")
    res = {"bare": [], "testbed": []}
    for _ in range(a.rounds):
        res["bare"].append(bare(a.hosts))
        res["testbed"].append(ours(a.hosts))
    med = {k: (statistics.median(u for u, _ in v), statistics.median(d for _, d in v))
           for k, v in res.items()}
    print(f"{a.hosts}-host incast, {a.rounds} rounds, medians")
    print(f"{'':10} {'up (s)':>8} {'down (s)':>9}")
    for k, (u, d) in med.items():
        print(f"{k:10} {u:8.3f} {d:9.3f}")
    up = med["testbed"][0] / med["bare"][0]
    down = med["testbed"][1]
    print(f"up ratio testbed/bare: {up:.2f}x (goal <= 1.5x) {'OK' if up <= 1.5 else 'MISSED'}")
    print(f"teardown testbed: {down:.3f} s = {down / med['bare'][1]:.2f}x bare "
          f"(goal <= 1 s) {'OK' if down <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
