"""Host commands started at a time, and network events (link down/up, route change).

Classes:
- Commands: pre-spawns each command waiting for its start time (workload.at), arms them
  when the clock is set; output to <outdir>/logs/<host>-cmd<i>.log; still running at the
  end = stopped (not an error).
- Events: the scheduled network events of the experiment, applied to a running Network.
"""
from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..config.models import CommandSpec, EventSpec


class Commands:
    def __init__(self, net, specs: list[CommandSpec], outdir: Path):
        self.net, self.specs, self.logdir = net, specs, outdir / "logs"
        self.procs: list[subprocess.Popen] = []

    def prepare(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(self.specs):
            log = open(self.logdir / f"{c.host}-cmd{i + 1}.log", "wb")
            p = self.net[c.host].popen(
                [sys.executable, "-m", "testbed.workload.at", "--stamp",
                 str(self.logdir / f"{c.host}-cmd{i + 1}.start"), "--", "sh", "-c", c.cmd],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.procs.append(p)

    def arm(self, t0_ns: int) -> None:
        for c, p in zip(self.specs, self.procs):
            p.stdin.write(f"{t0_ns + int(c.at * 1e9)}\n".encode())
            p.stdin.close()

    def finish(self) -> None:
        for p in self.procs:
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Events:
    def __init__(self, net, specs: list[EventSpec]):
        self.net, self.specs = net, specs

    def events(self) -> list[tuple[float, str, Callable[[], None]]]:
        return [(e.at, _label(e), lambda e=e: self.apply(e)) for e in self.specs]

    def apply(self, e: EventSpec) -> None:
        if e.action in ("link_down", "link_up"):
            self.net.set_link(e.link[0], e.link[1], e.action == "link_up")
            return
        g = self.net.graph
        dst = e.dst
        if dst in g.nodes:  # a host name: its subnet
            dst = str(ipaddress.ip_interface(g.nodes[dst].intfs[0].ip4).network)
        v6 = ipaddress.ip_network(dst, strict=False).version == 6
        hops = []
        for via in e.via:
            if via in g.nodes:
                addr, dev = g.neighbor_addr(e.node, via, v6)
                hops.append(f"nexthop via {addr} dev {dev}")
            else:
                hops.append(f"nexthop via {via}")
        self.net.run(e.node, f"ip route replace {dst} {' '.join(hops)}")


def _label(e: EventSpec) -> str:
    if e.link:
        return f"{e.action} {e.link[0]}-{e.link[1]}"
    return f"route {e.node}: {e.dst} via {','.join(e.via)}"
