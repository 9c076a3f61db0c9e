"""Instrument `queue`: ground truth of the switches' egress queues.

One sampler process per forwarding node, inside its namespace: qsample reads the root
qdisc (HTB over the FIFO) of every shaped port; on a BMv2 node bmv2_qsample reads the P4
program's queue registers instead (queues in packets; bytes = packets × 1514; every
10 ms at the shortest: faster polling takes the switch's CPU). Output `queue.csv`:
time,node,iface,backlog_bytes,qlen_pkts,drops,sent_bytes (time: s since the point's t0).
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from ..config.models import QueueOptions
from .base import Instrument, register


@register
class QueueSampler(Instrument):
    name = "queue"
    Options = QueueOptions
    options: QueueOptions

    def start(self) -> None:
        net, o = self.ctx.net, self.options
        by_node: dict[str, list[str]] = {}
        for node, iface in net.queue_ports():
            if (o.nodes and node not in o.nodes) or (o.ports and iface not in o.ports):
                continue
            by_node.setdefault(node, []).append(iface)
        self.raw: dict[str, Path] = {}
        self.procs: list[subprocess.Popen] = []
        for node, ifaces in by_node.items():
            out = self.ctx.tracker.workdir / f"qsample-{node}.raw"
            self.raw[node] = out
            cmd, env = self._sampler(net.queue_source(node), ifaces, out)
            self.procs.append(net[node].popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE))
        self.ctx.tracker.defer("queue samplers", self.stop)

    def _period(self, src) -> float:
        """The sampling period for a queue source: the asked one, raised to the source's
        floor (with a note in the point's meta.json saying so)."""
        if self.options.interval >= src.min_interval:
            return self.options.interval
        note = (f"queue: {src.kind} queues sampled every {src.min_interval * 1e3:g} ms, not "
                f"{self.options.interval * 1e6:g} µs: faster reads take the switch's CPU")
        if note not in self.ctx.notes:
            self.ctx.notes.append(note)
        return src.min_interval

    def _sampler(self, src, ifaces: list[str], out: Path) -> tuple[list[str], dict | None]:
        """The sampler's command line and environment for one node's queues."""
        interval = str(int(self._period(src) * 1e6))
        if src.kind == "bmv2":
            return [src.python, str(Path(__file__).with_name("bmv2_qsample.py")),
                    "--thrift-port", str(src.thrift_port), "--bm-path", src.bm_path,
                    "-p", ",".join(f"{i}:{src.ports[i]}" for i in ifaces),
                    "--pkt-bytes", str(src.pkt_bytes), "--interval-us", interval,
                    "-o", str(out)], src.env
        return [sys.executable, "-m", "testbed.instruments.qsample", "-i", ",".join(ifaces),
                "--interval-us", interval, "-o", str(out)], None

    def stop(self) -> None:
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.terminate()
        for p in getattr(self, "procs", []):
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()
        self.procs = []

    def write(self) -> list[Path]:
        out = self.ctx.outdir / "queue.csv"
        t0 = self.ctx.t0_ns
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "node", "iface", "backlog_bytes", "qlen_pkts", "drops",
                        "sent_bytes"])
            for node, raw in sorted(self.raw.items()):
                if not raw.exists():
                    continue
                with open(raw) as r:
                    for line in r:
                        ns, iface, backlog, qlen, drops, sent = line.rstrip().split(",")
                        w.writerow([f"{(int(ns) - t0) / 1e9:.6f}", node, iface, backlog,
                                    qlen, drops, sent])
        return [out]
