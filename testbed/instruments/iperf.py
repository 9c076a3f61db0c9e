"""Instrument `iperf`: per-flow throughput over time and a per-flow summary, from the
iperf3 JSON reports the workload leaves in <outdir>/iperf/.

`throughput.csv`: time,flow,src,dst,bps — receiver-side 100 ms intervals from the
server's stamped text report (time = when the interval was printed, i.e. its end, on the
testbed's clock); the sender's JSON intervals, shifted to the release time, only where
no server report exists.
`flows.csv`: flow,src,dst,cc,start,end,bytes,mean_bps,retransmits,error,kernel_cc — for
bursts (sized incast transfers) from the burst sink: end = last byte received, so
end − start is the flow completion time. kernel_cc is what the sender's kernel says the
socket ran (iperf3's sender_tcp_congestion, TCP_CONGESTION read back by a burst; the
workload fails the point where it is not the CC asked for).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from .base import Instrument, InstrumentOptions, register


@register
class IperfReports(Instrument):
    name = "iperf"
    Options = InstrumentOptions

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def _burst_row(self, f, sink: dict[int, dict]) -> list:
        """A burst's row: bytes the sink got, end = its last byte (FCT = end − start)."""
        rep = _load(self.ctx.outdir / "iperf" / f"{f.name}.burst.json") or {}
        t0 = self.ctx.t0_ns
        start = (rep.get("start_ns", f.released_ns or t0) - t0) / 1e9
        conn = sink.get(rep.get("sport", -1), {})
        got = conn.get("bytes", 0)
        end = ((conn.get("last_ns") or 0) - t0) / 1e9 if conn.get("last_ns") else None
        err = rep.get("error", "") or ("" if got == f.bytes else f"sink got {got} of {f.bytes} B")
        mean = got * 8 / (end - start) if end and end > start else 0
        ran = rep.get("kernel_cc", "")
        return [f.name, f.src, f.dst, f.cc, f"{start:.6f}",
                f"{end:.6f}" if end is not None else "", got, f"{mean:.0f}", "",
                err, ran]

    def write(self) -> list[Path]:
        flows = self.ctx.flows
        rows, summary = [], []
        sinks: dict[str, dict[int, dict]] = {}
        for f in flows:
            if f.tool == "burst":
                if f.dst not in sinks:
                    rep = _load(self.ctx.outdir / "iperf" / f"{f.dst}.sink.json") or {}
                    sinks[f.dst] = {int(c["peer"].rsplit(":", 1)[1]): c
                                    for c in rep.get("connections", [])}
                summary.append(self._burst_row(f, sinks[f.dst]))
                continue
            client = _load(self.ctx.outdir / "iperf" / f"{f.name}.client.json")
            base = (f.released_ns - self.ctx.t0_ns) / 1e9 if f.released_ns else f.start
            server = server_intervals(self.ctx.outdir / "iperf" / f"{f.name}.server.txt",
                                      f.parallel)
            if server:
                rows += [[f"{(ns - self.ctx.t0_ns) / 1e9:.4f}", f.name, f.src, f.dst,
                          f"{bps:.0f}"] for ns, bps in server]
            else:
                for iv in (client or {}).get("intervals", []):
                    s = iv["sum"]
                    rows.append([f"{base + s['end']:.3f}", f.name, f.src, f.dst,
                                 f"{s['bits_per_second']:.0f}"])
            end = (client or {}).get("end", {})
            recv = end.get("sum_received") or end.get("sum") or {}
            sent = end.get("sum_sent") or {}
            ran = end.get("sender_tcp_congestion", "") if f.protocol == "tcp" else ""
            summary.append([f.name, f.src, f.dst, f.cc, f"{base:.3f}",
                            f"{base + recv.get('end', 0):.3f}", recv.get("bytes", 0),
                            f"{recv.get('bits_per_second', 0):.0f}",
                            sent.get("retransmits", ""),
                            (client or {}).get("error", "") if client else "no report",
                            ran])
        rows.sort(key=lambda r: (float(r[0]), r[1]))
        out1 = self.ctx.outdir / "throughput.csv"
        with open(out1, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", "flow", "src", "dst", "bps"])
            w.writerows(rows)
        rows.sort(key=lambda r: (float(r[0]), r[1]))
        out2 = self.ctx.outdir / "flows.csv"
        with open(out2, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["flow", "src", "dst", "cc", "start", "end", "bytes", "mean_bps",
                        "retransmits", "error", "kernel_cc"])
            w.writerows(summary)
        return [out1, out2]


_IV = re.compile(r"^\[\s*(SUM|\d+)\]\s+([\d.]+)-\s*([\d.]+)\s+sec\s+[\d.]+\s+\w?Bytes"
                 r"\s+([\d.]+)\s+(\w?)bits/sec")
_SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
REPORT_MIN = 0.05  # s: shorter intervals (the test's tail) are dropped


def server_intervals(path: Path, parallel: int = 1) -> list[tuple[int, float]]:
    """(monotonic ns at the interval's end, bits/s) from a stamped iperf3 server report."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    want = "SUM" if parallel > 1 else None
    found = []
    for line in lines:
        ns, _, text = line.partition(" ")
        if text.rstrip().endswith(("sender", "receiver")):
            continue  # the test's summary, not an interval
        m = _IV.match(text)
        if not m or (want and m.group(1) != want) or (not want and m.group(1) == "SUM"):
            continue
        start, end = float(m.group(2)), float(m.group(3))
        if end - start < REPORT_MIN:
            continue  # the last, partial interval: its rate is noise
        found.append((int(ns), end, float(m.group(4)) * _SCALE[m.group(5)]))
    if not found:
        return out
    # A starved server prints late, never early: the test started at the earliest
    # (stamp − interval end); each interval is placed at start + its own end.
    start = min(ns - int(end * 1e9) for ns, end, _ in found)
    return [(start + int(end * 1e9), bps) for _ns, end, bps in found]


def _load(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
