"""Instrument `int_trace`: the per-flow TCP-INT trace as the senders see it.

Each time a sender parses an echo carrying telemetry, the host program (bpf/tcp_int_host.bpf.c)
sends a `struct tcp_int_event` through the ring buffer pinned at <pin_dir>/tcp_int_events
(testbed.network.tcpint). This instrument reads it from a thread and writes:
- int_trace.csv: time, flow, queue_bytes, util, hop_id, hop_latency_ns, srtt_us, cwnd
  (+ intval, link_mbps, mss, retrans, bytes_acked): one row per echo;
- int_trace.meta.json: events written and events the ring buffer had no room for.

Classes:
- IntTraceOptions: `instruments: {int_trace: {plot: true, max_events: …}}`.
- IntTrace: the instrument.
Functions:
- plot_int_vs_queue(outdir): INT-reported queue depth per flow against the switch's sampled
  ground truth (queue.csv of the queue sampler, when present) → int_trace.png.
"""
from __future__ import annotations

import csv
import ipaddress
import json
import os
import threading
from pathlib import Path

from ..config.models import IntTraceOptions
from .base import Instrument, register

COLUMNS = ["time", "flow", "queue_bytes", "util", "hop_id", "hop_latency_ns", "srtt_us",
           "cwnd", "intval", "link_mbps", "mss", "retrans", "bytes_acked"]


def _addr(raw: bytes, family: int) -> str:
    if family == 10:  # AF_INET6; a dual-stack socket's IPv4 peers are v4-mapped
        a6 = ipaddress.IPv6Address(raw)
        return str(a6.ipv4_mapped) if a6.ipv4_mapped else f"[{a6}]"
    return str(ipaddress.IPv4Address(raw[:4]))


@register
class IntTrace(Instrument):
    name = "int_trace"
    Options = IntTraceOptions

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.rows: list[list] = []
        self.dropped = 0
        self.lost = 0
        self._rb = None
        self._maps: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def validate(cls, options, point) -> None:
        if not getattr(point.exp.tcp_int, "enabled", False):
            raise point.fail((), "needs TCP-INT on: set `int: {enabled: true}`")

    @classmethod
    def check(cls, options) -> None:
        from ..network.tcpint import TcpInt
        TcpInt.check()

    def _on_event(self, raw: bytes) -> None:
        from ..network.tcpint import layout

        if len(self.rows) >= self.options.max_events:
            self.dropped += 1
            return
        e = layout("tcp_int_event").decode(raw)
        flow = (f"{_addr(e['saddr'], e['family'])}:{e['sport']}-"
                f"{_addr(e['daddr'], e['family'])}:{e['dport']}")
        self.rows.append([(e["ts_ns"] - self.ctx.t0_ns) / 1e9, flow, e["qdepth_bytes"],
                          round(e["util"] / 1024, 4), e["hop_id"], e["hoplat_ns"],
                          e["srtt_us"], e["snd_cwnd"], e["intval"], e["link_mbps"], e["mss"],
                          e["total_retrans"], e["bytes_acked"]])

    def start(self) -> None:
        from ..bpf.libbpf import RingBuffer
        from ..errors import RunError
        from ..network.tcpint import layout

        if self.ctx.tcp_int is None:
            raise RunError("int_trace: TCP-INT is not running in this point")
        m, self._lost = self.ctx.tcp_int.trace_maps()
        self._maps += [m.fd, self._lost.fd]
        self._lost0 = self._lost_total()
        self._rb = RingBuffer(m, self._on_event)
        self.ctx.tracker.defer("int_trace", self.stop)
        layout("tcp_int_event")  # parse the header before traffic, not in the callback
        self._thread = threading.Thread(target=self._poll, name="int_trace", daemon=True)
        self._thread.start()

    def _lost_total(self) -> int:
        raw = self._lost.lookup(b"\0\0\0\0") or b""
        return sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._rb.poll(50)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._rb.poll(0)  # what arrived after the last poll
        self.lost = self._lost_total() - self._lost0
        self._rb.free()
        for fd in self._maps:
            os.close(fd)
        self._maps.clear()

    def write(self) -> list[Path]:
        out = self.ctx.outdir / "int_trace.csv"
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows(self.rows)
        meta = self.ctx.outdir / "int_trace.meta.json"
        meta.write_text(json.dumps({"events": len(self.rows), "lost_in_ring": self.lost,
                                    "dropped_over_max_events": self.dropped}) + "\n")
        paths = [out, meta]
        if self.options.plot and self.rows:
            paths.append(plot_int_vs_queue(self.ctx.outdir))
        return paths


def plot_int_vs_queue(outdir: Path, title: str = "") -> Path:
    """INT queue depth per flow vs the sampled backlog of the busiest port (queue.csv)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    flows: dict[str, tuple[list, list]] = {}
    with open(outdir / "int_trace.csv") as f:
        for r in csv.DictReader(f):
            t, q = flows.setdefault(r["flow"], ([], []))
            t.append(float(r["time"]))
            q.append(int(r["queue_bytes"]) / 1000)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    qfile = outdir / "queue.csv"
    if qfile.exists():
        ports: dict[tuple[str, str], tuple[list, list]] = {}
        with open(qfile) as f:
            for r in csv.DictReader(f):
                t, b = ports.setdefault((r["node"], r["iface"]), ([], []))
                t.append(float(r["time"]))
                b.append(int(float(r["backlog_bytes"])) / 1000)
        busy = sorted(ports.items(), key=lambda kv: -max(kv[1][1], default=0))[:2]
        for (node, iface), (t, b) in busy:
            if max(b, default=0) > 0:
                ax.plot(t, b, color="black" if node == busy[0][0][0] else "grey", lw=1.2,
                        drawstyle="steps-post", label=f"{node}:{iface} backlog (sampled)")
    for i, (flow, (t, q)) in enumerate(sorted(flows.items())):
        ax.plot(t, q, ".", ms=2.5, alpha=0.7, label=f"INT {flow}" if i < 8 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("queue depth (KB)")
    ax.set_title(title or "TCP-INT queue depth (echoed to senders) vs switch backlog")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", markerscale=3)
    fig.tight_layout()
    out = outdir / "int_trace.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
