"""Instrument `flows` (formerly `iperf`, still read as an alias): per-flow throughput over
time and a per-flow summary, from the wire (testbed.bpf.flowacct) and from the workload's
reports (<outdir>/iperf/).

`throughput.csv`: time,flow,src,dst,bps — receiver-side 100 ms intervals from the
server's stamped text report (time = when the interval was printed, i.e. its end, on the
testbed's clock); the sender's JSON intervals, shifted to the release time, only where
no server report exists.

`flows.csv`, one row per flow. Columns (the first eleven as they always were):
- flow, src, dst, cc
- start, end: the flow's first and last data at the receiver, seen by its kernel (the
  segment that took a connection past 64 payload bytes — iperf3 opens a data connection
  with a 37-byte cookie before its test — and the last segment that brought new data),
  seconds since t0. For a sized incast burst, end − released is the flow completion time.
- bytes: unique payload bytes the receiver got (sequence space: a retransmitted segment
  counts once); mean_bps = bytes over [start, end].
- retransmits: the sender's retransmitted segments (iperf3's report; empty for bursts)
- error: what the client reported; kernel_cc: the CC the sender's kernel ran
- scheduled: the start the experiment asked for; released: when the sender was let go
- connect_ms: the longest SYN → SYN-ACK of the flow's connections, at the sender
- syn_retransmits: SYNs the sender sent beyond one per connection
- warm: 1 when every data connection was established before t0 (workload `warm: true`)
- status: `ok`, or what is wrong, comma-separated: `late` (a SYN retransmitted after t0,
  or data arrived more than `late_after` s after the scheduled start), `short` (fewer
  bytes than asked, or a timed flow's data spanned less than 90 % of its duration),
  `no_data`, `no_connection`. Claims exclude points with such flows.
- group: the incast a flow belongs to (empty for `flows:`)
- source: `wire` (the kernel's records) or `app` (the tools' own reports: UDP flows, or
  where the wire records are missing)
"""
from __future__ import annotations

import csv
import ipaddress
import json
import re
from pathlib import Path

from ..config.models import FlowsOptions
from .base import Instrument, register

COLUMNS = ["flow", "src", "dst", "cc", "start", "end", "bytes", "mean_bps", "retransmits",
           "error", "kernel_cc", "scheduled", "released", "connect_ms", "syn_retransmits",
           "warm", "status", "group", "source"]


@register
class FlowRecords(Instrument):
    name = "flows"
    Options = FlowsOptions

    def start(self) -> None:
        self.acct = None
        self.conns = []
        if not self.options.wire:
            return
        from ..bpf.flowacct import FlowAcct
        self.acct = FlowAcct()
        self.ctx.tracker.defer("flow accounting", self._close)
        for g in self.ctx.net.graph.hosts:
            self.acct.attach(self.ctx.tracker.node_cgroup(g.name))

    def _close(self) -> None:
        if self.acct is not None:
            self.acct.close()
            self.acct = None

    def stop(self) -> None:
        if self.acct is None:
            return
        self.conns = self.acct.conns()
        if self.acct.full():
            self.ctx.notes.append(f"flows: {self.acct.full()} connection records refused "
                                  "(flow accounting table full): their flows read from "
                                  "the tools' reports")
        self._close()

    # -- per flow ----------------------------------------------------------------------
    def _wire(self, f, sports: list[int] | None) -> dict | None:
        """The flow's numbers from the kernel's records; None where it has none.
        `sports`: the data connections' source ports (None: every connection but the
        first, iperf3's control connection)."""
        if not self.conns:
            return None
        net, t0 = self.ctx.net, self.ctx.t0_ns
        src = str(ipaddress.ip_address(net.ip(f.src, f.ipv6)))
        dst = str(ipaddress.ip_address(net.ip(f.dst, f.ipv6)))
        from ..bpf.flowacct import defines
        d_in, d_out = defines()["FA_DIR_IN"], defines()["FA_DIR_OUT"]
        out = {(c.saddr, c.daddr, c.sport, c.dport): c for c in self.conns if c.dir == d_out}
        inn = {(c.saddr, c.daddr, c.sport, c.dport): c for c in self.conns if c.dir == d_in}
        mine = [k[2] for k in {*out, *inn} if k[0] == src and k[1] == dst and k[3] == f.port]
        if not mine:
            return None
        first_syn = {p: (out.get((src, dst, p, f.port)) or inn.get((src, dst, p, f.port)))
                     .syn_first_ns or 0 for p in mine}
        mine.sort(key=first_syn.get)
        if f.tool == "burst":   # its own connection (several bursts may share the sink)
            mine = data = [p for p in mine if p in sports] if sports else mine
        else:                   # iperf3: its data connections, not the control one
            data = [p for p in mine if p in sports] if sports else (mine[1:] or mine)
        syn_rtx, connect, synacks = 0, 0.0, {}
        for p in mine:
            sent = out.get((src, dst, p, f.port)) or inn.get((src, dst, p, f.port))
            syn_rtx += max(0, sent.syns - 1)
            back = inn.get((dst, src, f.port, p))   # the SYN-ACK, where the sender got it
            if back and back.syn_first_ns:
                synacks[p] = back.syn_first_ns
                if sent.syn_first_ns:
                    connect = max(connect, (back.syn_first_ns - sent.syn_first_ns) / 1e6)
        rx = [inn[(src, dst, p, f.port)] for p in data if (src, dst, p, f.port) in inn]
        got = sum(c.bytes for c in rx)
        sent = [out[(src, dst, p, f.port)].data_first_ns for p in data
                if (src, dst, p, f.port) in out and out[(src, dst, p, f.port)].data_first_ns]
        f.wire_sent_ns = min(sent) if sent else 0
        starts = [c.start_ns or c.data_first_ns for c in rx if c.data_first_ns]
        ends = [c.data_last_ns for c in rx if c.data_last_ns]
        return {"connected": any(p in synacks for p in data), "bytes": got,
                "start": (min(starts) - t0) / 1e9 if starts else None,
                "end": (max(ends) - t0) / 1e9 if ends else None,
                "connect_ms": connect, "syn_retransmits": syn_rtx,
                # a SYN lost before the clock started delays nothing measured
                "late_syns": sum(1 for p in mine if p in synacks and synacks[p] > t0
                                 and (out.get((src, dst, p, f.port)) or
                                      inn.get((src, dst, p, f.port))).syns > 1),
                "warm": bool(data) and all(synacks.get(p, t0 + 1) < t0 for p in data)}

    def _row(self, f, app: dict, sports: list[int] | None) -> list:
        """One flows.csv row: the wire's numbers where it has them, else the app's."""
        w = self._wire(f, sports) if f.protocol == "tcp" else None
        t0 = self.ctx.t0_ns
        released = (f.released_ns - t0) / 1e9 if f.released_ns else None
        src = "app"
        start, end, got = app["start"], app["end"], app["bytes"]
        if w is not None and (w["bytes"] or not got):
            src, start, end, got = "wire", w["start"], w["end"], w["bytes"]
        mean = got * 8 / (end - start) if got and start is not None and end and end > start \
            else (app["mean_bps"] if src == "app" else 0)
        status = []
        if w is not None and not w["connected"] and not got:
            status.append("no_connection")
        elif not got:
            status.append("no_data")
        else:
            late = w is not None and w["late_syns"] > 0
            if start is not None and start - f.start > self.options.late_after:
                late = True
            if late:
                status.append("late")
            if f.bytes is not None and got < f.bytes:
                status.append("short")
            elif f.bytes is None and f.duration and start is not None and end is not None \
                    and end - start < 0.9 * f.duration:
                status.append("short")
        f.wire_start_ns = int(start * 1e9) + t0 if start is not None and src == "wire" else 0
        fmt = lambda x, n=6: f"{x:.{n}f}" if x is not None else ""  # noqa: E731
        return [f.name, f.src, f.dst, f.cc, fmt(start), fmt(end), got, f"{mean:.0f}",
                app.get("retransmits", ""), app.get("error", ""), app.get("kernel_cc", ""),
                fmt(f.start, 3), fmt(released), fmt(w["connect_ms"], 3) if w else "",
                w["syn_retransmits"] if w else "", int(w["warm"]) if w else "",
                ",".join(status) or "ok", f.group, src]

    def _burst_app(self, f, sink: dict[int, dict]) -> tuple[dict, list[int] | None]:
        """A burst's own reports: bytes the sink got, its first and last byte."""
        rep = _load(self.ctx.outdir / "iperf" / f"{f.name}.burst.json") or {}
        t0 = self.ctx.t0_ns
        conn = sink.get(rep.get("sport", -1), {})
        got = conn.get("bytes", 0)
        start = (conn["first_ns"] - t0) / 1e9 if conn.get("first_ns") else None
        end = (conn["last_ns"] - t0) / 1e9 if conn.get("last_ns") else None
        err = rep.get("error", "") or ("" if got == f.bytes else f"sink got {got} of {f.bytes} B")
        mean = got * 8 / (end - start) if end and start is not None and end > start else 0
        return ({"start": start, "end": end, "bytes": got, "mean_bps": mean, "error": err,
                 "kernel_cc": rep.get("kernel_cc", ""), "retransmits": ""},
                [rep["sport"]] if rep.get("sport") else None)

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
                summary.append(self._row(f, *self._burst_app(f, sinks[f.dst])))
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
            app = {"start": base, "end": base + recv.get("end", 0) if recv else None,
                   "bytes": recv.get("bytes", 0), "mean_bps": recv.get("bits_per_second", 0),
                   "retransmits": sent.get("retransmits", ""),
                   "error": (client or {}).get("error", "") if client else "no report",
                   "kernel_cc": end.get("sender_tcp_congestion", "") if f.protocol == "tcp"
                   else ""}
            sports = [c["local_port"] for c in (client or {}).get("start", {})
                      .get("connected", []) if c.get("local_port")] or None
            summary.append(self._row(f, app, sports))
        rows.sort(key=lambda r: (float(r[0]), r[1]))
        out1 = self.ctx.outdir / "throughput.csv"
        with open(out1, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", "flow", "src", "dst", "bps"])
            w.writerows(rows)
        out2 = self.ctx.outdir / "flows.csv"
        with open(out2, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
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
