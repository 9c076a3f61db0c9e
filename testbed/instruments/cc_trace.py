"""cc_trace: the eBPF congestion controllers' per-update trace, as cc_trace.csv.

Classes:
- CCTraceOptions: `instruments: {cc_trace: {}}` (no options yet; extra keys forbidden).
- CCTrace: records, for one sweep point, every trace event of the run's eBPF CCs
  (testbed.bpf.cc.CongestionControls, found through the run's tracker) and writes
  cc_trace.csv with columns

    time        s since the point's t0 (CLOCK_MONOTONIC, as every CSV)
    flow        the socket's hash (one value per flow)
    cc          the experiment's CC name (powertcp, theta_powertcp)
    sport,dport ports of the flow (host order)
    cwnd        window, segments (fractional: the law keeps 2^-10 steps)
    rate        pacing rate, bits/s
    p_norm      Γ_norm (1.0 = the hop exactly full, no queue)
    p_smooth    Γ_smooth
    qlen        bytes queued at the most congested hop (INT; 0 for θ)
    delta_t     s since the flow's previous update
    tx_bytes    bytes that hop sent during delta_t (INT; 0 for θ)
    rtt_grad    dRTT/dt (θ; 0 for INT)
    rtt_us      RTT sample used; base_rtt_us: τ in use
    snd_cwnd    the kernel's window (segments) when the update began: after an RTO, what
                loss recovery left before the law set it again

The ring buffer's lost events (no room) are counted into cc_trace.lost.txt, never
silently dropped. Sampling is set per CC (congestion_control.<cc>.trace_interval_us).
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..bpf.cc import CWND_SHIFT, POWER_SHIFT, TraceEvent, TraceRecorder
from ..errors import RunError
from ..config.models import CCTraceOptions
from .base import Instrument, register

COLUMNS = ("time", "flow", "cc", "sport", "dport", "cwnd", "rate", "p_norm", "p_smooth",
           "qlen", "delta_t", "tx_bytes", "rtt_grad", "rtt_us", "base_rtt_us", "snd_cwnd")


def event_row(ev: TraceEvent, t0_ns: int) -> list:
    return [f"{(ev.time_ns - t0_ns) / 1e9:.6f}", ev.hash, ev.cc, ev.sport, ev.dport,
            f"{ev.cwnd / (1 << CWND_SHIFT):.3f}", ev.rate * 8,
            f"{ev.p_norm / (1 << POWER_SHIFT):.4f}", f"{ev.p_smooth / (1 << POWER_SHIFT):.4f}",
            ev.qlen, f"{ev.delta_t / 1e9:.6f}", ev.tx_bytes,
            f"{ev.rtt_grad / (1 << POWER_SHIFT):.4f}", ev.rtt_us, ev.base_rtt_us, ev.snd_cwnd]


def write_trace_csv(path: Path, events: list[TraceEvent], t0_ns: int) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for ev in sorted(events, key=lambda e: e.time_ns):
            w.writerow(event_row(ev, t0_ns))
    return path


@register
class CCTrace(Instrument):
    name = "cc_trace"
    Options = CCTraceOptions

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self._rec: TraceRecorder | None = None
        self._events: list[TraceEvent] = []
        self._lost = 0

    def start(self) -> None:
        ccs = self.ctx.ccs
        if ccs is None:
            raise RunError("cc_trace: the run has no congestion controls registry "
                           "(testbed.bpf.cc.CongestionControls) to trace")
        self._rec = ccs.record()
        self.ctx.tracker.defer("cc_trace recorder", self.stop)

    def stop(self) -> None:
        if self._rec is not None:
            self._events = self._rec.stop()
            self._lost = self._rec.lost
            self._rec = None

    def write(self) -> list[Path]:
        out = [write_trace_csv(self.ctx.outdir / "cc_trace.csv", self._events, self.ctx.t0_ns)]
        if self._lost:
            p = self.ctx.outdir / "cc_trace.lost.txt"
            p.write_text(f"{self._lost} trace events lost (ring buffer full); raise "
                         f"congestion_control.<cc>.trace_interval_us\n")
            out.append(p)
        return out
