"""Claims checked against a results bundle's CSVs: the congestion-control regression suite.

A results bundle holds one directory per sweep point with `queue.csv` (time, node, iface,
backlog_bytes, qlen_pkts, drops, sent_bytes), `throughput.csv` (time, flow, src, dst, bps),
and `meta.json`, the runner's record of the point (testbed/results/record.py: its CC, τ,
bottleneck rate, burst time…; claims take facts from it, never from the configuration).
Each claim reads the points it needs (by their `cc`) and returns a Verdict with the
numbers it measured.

A point whose flows.csv marks a flow as not run as asked (status late, short, no_data,
no_connection: e.g. a SYN lost and retransmitted 1 s later) is left out of every claim,
named in the verdict; a claim left with no point is N/A, never judged on such data.

With repetitions (several points per CC), a claim judges the typical run: the median
repetition (of an even count, the worse of the two middle ones; queue_peak_ratio compares
the plain medians of both sides' peaks), and reports the worst beside it — one run
disturbed by the shared machine does not decide a regression.

Claims (the PowerTCP paper's, figures P1/P2 of the specs):
- queue_peak_ratio: `cc`'s peak bottleneck queue after the burst ≤ max_ratio × baseline's.
- queue_drains: after its post-burst peak, `cc`'s queue falls to near zero within
  `within_rtts` base RTTs.
- utilization: the bottleneck sends ≥ `min` of its rate from the burst to the end of
  the traffic.
- fairness: between consecutive arrivals/departures, once `within_rtts` base RTTs (at
  least two throughput samples) have passed, Jain's index of the active flows' median
  rates is ≥ `min_jain`.
- drain_time_ratio: `cc`'s time from its post-burst queue peak to near zero ≤ max_ratio ×
  baseline's (the paper's ordering: PowerTCP drains no slower than HPCC and TIMELY).
- standing_queue: `cc`'s median queue in a window (default: 0.5 s into the run until the
  burst) is within `tolerance` of `near` (DCTCP's queue sits near its marking threshold K).

Classes:
- PointData: one point's series, CC, base RTT, bottleneck rate and burst time.
- a claim kind's parameters (the YAML of an experiment's `expect:` entry, `claim:`
  selects the kind) are a model in config.models (QueuePeakRatio, QueueDrains, …); its
  judge is a function here registered with @judges(kind): evaluate(claim, points).
- Verdict: pass/fail (or not applicable) with the measured values and a one-line reason.
Functions: load_bundle(dir), default_claims(points), check(dir, expect) → verdicts,
failed(verdicts, strict) → those that decide the exit code, write_verdicts(dir, verdicts).

Without an `expect:` block the default claims are judged and reported but are not
binding: they do not fail a run, nor `check` unless `--strict`.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import TypeAdapter, ValidationError

from . import claims_noob
from .config.models import (CLAIM_KINDS, CLAIMS, COMPARE_METRICS,
                            Claim as _Claim, ClaimSpec, DrainTimeRatio, EcmpPaths, Fairness,
                            MetricTolerance, NoobClaim as _NoobClaim, NoOverhead,
                            OneHopQueue, QueueDrains, QueuePeakRatio, RouteChange,
                            StandingQueue, Utilization)
from .errors import ConfigError
from .results.record import PointRecord, point_config, read_record, record_verdicts

DEFAULT_BASE_RTT_S = 1e-3  # when neither the claim nor the point's CC states τ


# ----------------------------------------------------------------------------- data
@dataclass
class Series:
    t: np.ndarray
    v: np.ndarray


@dataclass
class PointData:
    name: str
    dir: Path
    meta: PointRecord        # the runner's record of the point (meta.json)
    cc: str | None
    queues: dict[str, dict[str, Series]] = field(default_factory=dict)  # "node:iface" → col → s
    flows: dict[str, Series] = field(default_factory=dict)             # flow → bps
    rate_bps: float | None = None
    burst_at: float | None = None
    trace_base_rtt_us: float | None = None  # median τ in cc_trace.csv (eBPF CCs)
    # flows.csv rows whose status is not ok (late, short, never connected): the point's
    # series do not show the experiment asked for, so claims leave the point out
    flow_problems: list[str] = field(default_factory=list)

    def base_rtt_s(self, override_us: float | None = None) -> float:
        if override_us:
            return override_us / 1e6
        tau = self.meta.base_rtt_us(self.cc)   # τ the experiment set for the CC
        if tau:
            return float(tau) / 1e6
        if self.trace_base_rtt_us:  # τ = the sockets' min RTT: what the CC used
            return self.trace_base_rtt_us / 1e6
        return DEFAULT_BASE_RTT_S

    def bottleneck(self, iface: str | None = None) -> tuple[str, dict[str, Series]]:
        """The queue that carries the most bytes (the incast's converging port)."""
        if not self.queues:
            raise ValueError(f"{self.name}: queue.csv has no rows")
        if iface:
            if iface not in self.queues:
                raise ValueError(f"{self.name}: no queue {iface!r} (have "
                                 f"{', '.join(sorted(self.queues))})")
            return iface, self.queues[iface]

        def carried(item):
            s = item[1].get("sent_bytes")
            if s is None or not len(s.v):
                return float(np.max(item[1]["backlog_bytes"].v, initial=0))
            return float(s.v[-1] - s.v[0])
        return max(self.queues.items(), key=carried)

    def port_rate_bps(self, iface: str | None = None) -> float | None:
        """The bottleneck's rate: the runner's meta.json (bottleneck.ports), else the
        topology's slowest link."""
        name, _q = self.bottleneck(iface)
        port = self.meta.bottleneck.ports.get(name) if self.meta.bottleneck else None
        if port is not None and port.rate_mbps:
            return float(port.rate_mbps) * 1e6
        return self.rate_bps

    def traffic_start(self) -> float | None:
        """First time any flow moved data (None: no flow did)."""
        starts = [float(s.t[s.v > 0][0]) for s in self.flows.values() if np.any(s.v > 0)]
        return min(starts) if starts else None

    def traffic_end(self) -> float:
        """Last time any flow still moved data."""
        ends = [float(s.t[s.v > 0][-1]) for s in self.flows.values() if np.any(s.v > 0)]
        return max(ends) if ends else 0.0


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def load_point(d: Path) -> PointData:
    meta = read_record(d)
    p = PointData(d.name, d, meta, meta.cc)
    if (d / "queue.csv").exists():
        cols: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in _read_csv(d / "queue.csv"):
            key = f"{r.get('node')}:{r.get('iface')}"
            for c in ("time", "backlog_bytes", "qlen_pkts", "drops", "sent_bytes"):
                if c in r:
                    cols[key][c].append(_num(r[c]))
        for key, c in cols.items():
            t = np.array(c["time"])
            order = np.argsort(t, kind="stable")
            p.queues[key] = {k: Series(t[order], np.array(v)[order])
                             for k, v in c.items() if k != "time"}
    if (d / "throughput.csv").exists():
        fl: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for r in _read_csv(d / "throughput.csv"):
            name = r.get("flow") or f"{r.get('src')}->{r.get('dst')}"
            fl[name][0].append(_num(r["time"]))
            fl[name][1].append(_num(r["bps"]))
        for name, (t, v) in fl.items():
            t, v = np.array(t), np.nan_to_num(np.array(v))
            order = np.argsort(t, kind="stable")
            p.flows[name] = Series(t[order], v[order])
    if (d / "cc_trace.csv").exists():
        taus = [_num(r.get("base_rtt_us")) for r in _read_csv(d / "cc_trace.csv")]
        taus = [x for x in taus if x == x and x > 0]
        p.trace_base_rtt_us = float(np.median(taus)) if taus else None
    if (d / "flows.csv").exists():
        for r in _read_csv(d / "flows.csv"):
            st = r.get("status") or "ok"
            if st != "ok":
                syn = r.get("syn_retransmits") or "0"
                p.flow_problems.append(
                    f"{r['flow']} {st} (scheduled {r.get('scheduled') or '?'} s, first data "
                    f"{r.get('start') or 'never'} s, {syn} SYN retransmit(s))")
    p.rate_bps = meta.bottleneck_mbps * 1e6 if meta.bottleneck_mbps else None
    p.burst_at = meta.burst_at
    return p


def load_bundle(results: Path | str) -> list[PointData]:
    """Every point directory under `results` (a directory holding queue/throughput CSVs)."""
    root = Path(results)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory (give a results bundle)")
    dirs = sorted({p.parent for pat in ("queue.csv", "throughput.csv")
                   for p in root.rglob(pat)})
    if not dirs:
        raise ConfigError(f"{root}: no queue.csv or throughput.csv below it; is this a "
                          f"results bundle of `python -m testbed run`?")
    return [load_point(d) for d in dirs]


# ----------------------------------------------------------------------------- verdicts
@dataclass
class Verdict:
    claim: str
    cc: str | None
    passed: bool | None      # None: not applicable (the points it needs are absent)
    reason: str
    points: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)   # what a number cannot say
    # An `expect:` claim decides the exit code; a default claim (the experiment has no
    # `expect:`) is reported only, unless `check --strict`.
    binding: bool = True

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]


def jain(xs: list[float] | np.ndarray) -> float:
    x = np.asarray(xs, dtype=float)
    if len(x) == 0 or not np.any(x):
        return 0.0
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum()))


def _window(s: Series, t0: float, t1: float) -> Series:
    m = (s.t >= t0) & (s.t <= t1)
    return Series(s.t[m], s.v[m])


# ----------------------------------------------------------------------------- claims
# The judge of each claim kind (config.models): a function of the claim and the points.
JUDGES: dict[type[_Claim], Callable[[Any, list[PointData]], Verdict]] = {}


def judges(kind: type[_Claim]):
    def register(fn):
        JUDGES[kind] = fn
        return fn
    return register


def evaluate(claim: _Claim, pts: list[PointData]) -> Verdict:
    return JUDGES[type(claim)](claim, pts)


class _Excluded(Exception):
    """Every point a claim needs has a flow that did not run as asked."""

    def __init__(self, cc: str, pts: list[PointData]):
        self.cc, self.pts = cc, pts
        super().__init__(f"not judged: every cc={cc} point has a flow that did not run as "
                         f"asked: " + "; ".join(f"{p.name}: {', '.join(p.flow_problems)}"
                                                for p in pts))


def _points(self: _Claim, pts: list[PointData], cc: str) -> list[PointData]:
    """The points of `cc` a claim may judge: those whose flows ran as asked."""
    mine = [p for p in pts if p.cc == cc]
    good = [p for p in mine if not p.flow_problems]
    if mine and not good:
        raise _Excluded(cc, mine)
    return good


def _na(self: _Claim, why: str) -> Verdict:
    return Verdict(self.claim, self.cc, None, why)  # type: ignore[attr-defined]


def _after_burst(p: PointData, iface: str | None) -> tuple[str, dict[str, Series], float, float]:
    name, q = p.bottleneck(iface)
    # without a burst: from the first data, not the first queue sample (the queue is
    # sampled from before the traffic: 22 s before it in the stock-kernel VM)
    t0 = p.burst_at if p.burst_at is not None else p.traffic_start()
    if t0 is None:
        t0 = float(q["backlog_bytes"].t[0])
    t1 = p.traffic_end() or float(q["backlog_bytes"].t[-1])
    return name, q, t0, t1


def _typical(items: list, key, worse_high: bool) -> Any:
    """The median item by `key`; of an even count the worse of the two middle ones."""
    ranked = sorted(items, key=key)
    n = len(ranked)
    return ranked[n // 2] if worse_high else ranked[(n - 1) // 2]


def _of_reps(n: int, worst: str) -> str:
    return f" (median of {n} repetitions; worst {worst})" if n > 1 else ""


@judges(QueuePeakRatio)
def _queue_peak_ratio(self: QueuePeakRatio, pts: list[PointData]) -> Verdict:
    mine, base = _points(self, pts, self.cc), _points(self, pts, self.baseline)
    if not mine or not base:
        return _na(self, f"needs points with cc={self.cc} and cc={self.baseline}")
    peaks = {}
    for label, group in ((self.cc, mine), (self.baseline, base)):
        vals = []
        for p in group:
            _n, q, t0, t1 = _after_burst(p, self.iface)
            vals.append(float(np.max(_window(q["backlog_bytes"], t0, t1).v, initial=0)))
        peaks[label] = float(np.median(vals))
    ratio = peaks[self.cc] / peaks[self.baseline] if peaks[self.baseline] else math.inf
    ok = ratio <= self.max_ratio
    return Verdict(self.claim, self.cc, ok,
                   f"peak queue after the burst {peaks[self.cc]:.0f} B vs {self.baseline} "
                   f"{peaks[self.baseline]:.0f} B: ratio {ratio:.3f} "
                   f"({'≤' if ok else '>'} {self.max_ratio})",
                   [p.name for p in mine + base],
                   {"peak_bytes": peaks[self.cc], "baseline_peak_bytes":
                    peaks[self.baseline], "ratio": ratio})


def _drain(p: PointData, iface: str | None, near_zero: float) -> dict | None:
    """From the post-burst queue peak to ≤ near_zero: peak, drain time (inf: never), the
    sample index of both, and the widest sampling gap in between. None: no samples."""
    _n, q, t0, t1 = _after_burst(p, iface)
    s = _window(q["backlog_bytes"], t0, t1)
    if not len(s.t):
        return None
    i = int(np.argmax(s.v))
    after = np.nonzero(s.v[i:] <= near_zero)[0]
    drain = float(s.t[i + after[0]] - s.t[i]) if len(after) else math.inf
    j = i + after[0] if len(after) else len(s.t) - 1
    return {"series": s, "i": i, "j": j, "drained": bool(len(after)), "peak_bytes":
            float(s.v[i]), "drain_s": drain,
            "sample_gap_max_s": float(np.max(np.diff(s.t[i:j + 1]), initial=0))}


@judges(QueueDrains)
def _queue_drains(self: QueueDrains, pts: list[PointData]) -> Verdict:
    mine = _points(self, pts, self.cc)
    if not mine:
        return _na(self, f"needs a point with cc={self.cc}")
    runs: list[dict] = []
    for p in mine:
        d = _drain(p, self.iface, self.near_zero_bytes)
        if d is None:
            return Verdict(self.claim, self.cc, False, f"{p.name}: no queue samples after "
                           f"the burst", [p.name])
        s, i, j, drain = d["series"], d["i"], d["j"], d["drain_s"]
        rtt = p.base_rtt_s(self.base_rtt_us)
        if self.rtt == "measured":
            seen = _measured_rtt_s(p.dir, float(s.t[i]), float(s.t[j]))
            if seen is None:
                return _na(self, f"{p.name}: no cc_trace.csv RTT samples while draining")
            rtt = seen
        rtts = drain / rtt
        rest = s.v[j:] if d["drained"] else np.array([])
        # The widest gap between samples while draining: a sampler starved of CPU
        # cannot resolve a drain shorter than its gaps.
        gap = d["sample_gap_max_s"]
        m = {"peak_bytes": float(s.v[i]), "drain_s": drain, "drain_rtts": rtts,
             "base_rtt_s": rtt, "median_after_bytes": float(np.median(rest)) if len(rest)
             else math.nan, "sample_gap_max_s": gap}
        ok: bool | None = True
        if rtts > self.within_rtts:
            # a drain the sampler could not resolve is no verdict, not a failure
            ok = None if d["drained"] and gap > self.within_rtts * rtt else False
        runs.append({**m, "ok": ok})
    typ = _typical(runs, lambda m: m["drain_rtts"], worse_high=True)
    worst = max(runs, key=lambda m: m["drain_rtts"])
    ok_typ = typ["ok"]
    worst_s = f"{worst['drain_rtts']:.1f} RTTs"
    verdict = {True: "≤", False: ">", None: ">"}[ok_typ]
    note = (f"; unresolved: queue sampling gaps up to "
            f"{typ['sample_gap_max_s'] * 1e3:.1f} ms exceed {self.within_rtts:g} τ"
            if ok_typ is None else "")
    return Verdict(self.claim, self.cc, ok_typ,
                   f"queue from its peak {typ['peak_bytes']:.0f} B to ≤ "
                   f"{self.near_zero_bytes} B in {typ['drain_s'] * 1e3:.2f} ms = "
                   f"{typ['drain_rtts']:.1f} {'measured' if self.rtt == 'measured' else 'base'}"
                   f" RTTs ({verdict} {self.within_rtts:g}; "
                   f"{'RTT' if self.rtt == 'measured' else 'τ'} = "
                   f"{typ['base_rtt_s'] * 1e6:.0f} µs)"
                   f"{_of_reps(len(runs), worst_s)}{note}",
                   [p.name for p in mine],
                   {**{k: v for k, v in typ.items() if k != "ok"},
                    "worst_drain_rtts": worst["drain_rtts"], "repetitions": len(runs)})


def _measured_rtt_s(pdir: Path, t0: float, t1: float) -> float | None:
    """Median RTT (s) in the CC's trace between t0 and t1 (at least 1 ms of it)."""
    rows = _read_csv(pdir / "cc_trace.csv")
    t1 = max(t1, t0 + 0.001)
    v = [float(r["rtt_us"]) for r in rows
         if r.get("rtt_us") and t0 <= float(r["time"]) <= t1 and float(r["rtt_us"]) > 0]
    return float(np.median(v)) / 1e6 if v else None


@judges(Utilization)
def _utilization(self: Utilization, pts: list[PointData]) -> Verdict:
    mine = _points(self, pts, self.cc)
    if not mine:
        return _na(self, f"needs a point with cc={self.cc}")
    utils = []
    for p in mine:
        rate = self.rate_mbps * 1e6 if self.rate_mbps else p.port_rate_bps(self.iface)
        if not rate:
            return Verdict(self.claim, self.cc, False, f"{p.name}: bottleneck rate "
                           f"unknown (give rate_mbps)", [p.name])
        _n, q, t0, t1 = _after_burst(p, self.iface)
        t0 += self.skip_s
        sent = q.get("sent_bytes")
        if sent is not None and len(_window(sent, t0, t1).t) > 1:
            w = _window(sent, t0, t1)
            bps = (w.v[-1] - w.v[0]) * 8 / (w.t[-1] - w.t[0])
        else:  # from the flows' receiver reports
            tot = [_window(s, t0, t1) for s in p.flows.values()]
            grid = sorted({float(x) for s in tot for x in s.t})
            bps = float(np.mean([sum(float(np.interp(g, s.t, s.v)) if len(s.t) else 0
                                     for s in tot) for g in grid])) if grid else 0.0
        utils.append(bps / rate)
    u = float(_typical(utils, float, worse_high=False))
    ok: bool | None = u >= self.min
    why = ""
    cpu = [p for p in mine if p.meta.bottleneck and p.meta.bottleneck.verdict == "cpu"]
    if not ok and cpu:  # the runner found the CPU, not the link, limiting: no verdict
        ok = None
        why = (f"; inconclusive: the CPU was the bottleneck ("
               f"{cpu[0].meta.bottleneck.cpu_busy_pct} % busy) in "
               f"{', '.join(p.name for p in cpu)}")
    return Verdict(self.claim, self.cc, ok,
                   f"bottleneck utilization after the burst {u * 100:.1f} % "
                   f"({'≥' if ok else '<'} {self.min * 100:.0f} %)"
                   f"{_of_reps(len(utils), f'{min(utils) * 100:.1f} %')}{why}",
                   [p.name for p in mine],
                   {"utilization": u, "worst_utilization": float(min(utils)),
                    "repetitions": len(utils)})


@judges(Fairness)
def _fairness(self: Fairness, pts: list[PointData]) -> Verdict:
    mine = _points(self, pts, self.cc)
    if not mine:
        return _na(self, f"needs a point with cc={self.cc}")
    worst, detail = 1.0, []
    checked = 0
    for p in mine:
        flows = {n: s for n, s in p.flows.items() if np.any(s.v > 0)}
        if len(flows) < 2:
            return Verdict(self.claim, self.cc, False, f"{p.name}: fewer than 2 flows "
                           f"carried data", [p.name])
        span = {n: (float(s.t[s.v > 0][0]), float(s.t[s.v > 0][-1]))
                for n, s in flows.items()}
        dt = float(np.median(np.concatenate([np.diff(s.t) for s in flows.values()
                                             if len(s.t) > 1])))
        settle = max(self.within_rtts * p.base_rtt_s(self.base_rtt_us), 2 * dt)
        events = sorted({a for a, _b in span.values()} | {b for _a, b in span.values()})
        for a, b in zip(events, events[1:]):
            w0 = a + settle
            if b - w0 < max(self.min_window_s, dt):
                continue
            active = [n for n, (s0, s1) in span.items() if s0 <= a and s1 >= b]
            if len(active) < 2:
                continue
            # Median, not mean: iperf3's reports carry the odd truncated interval
            # (0 b/s, then 30× the link rate) that a mean would turn into unfairness.
            rates = [float(np.median(_window(flows[n], w0, b).v)) for n in active]
            j = jain(rates)
            checked += 1
            detail.append(f"{len(active)} flows [{w0:.2f},{b:.2f}] s: J={j:.4f}")
            worst = min(worst, j)
    if not checked:
        return Verdict(self.claim, self.cc, False, "no interval with ≥ 2 active flows long "
                       "enough to judge", [p.name for p in mine])
    ok = worst >= self.min_jain
    return Verdict(self.claim, self.cc, ok,
                   f"worst Jain's index {worst:.4f} ({'≥' if ok else '<'} "
                   f"{self.min_jain}) over {checked} intervals: " + "; ".join(detail),
                   [p.name for p in mine], {"jain_min": worst, "intervals": checked})


@judges(DrainTimeRatio)
def _drain_time_ratio(self: DrainTimeRatio, pts: list[PointData]) -> Verdict:
    mine, base = _points(self, pts, self.cc), _points(self, pts, self.baseline)
    if not mine or not base:
        return _na(self, f"needs points with cc={self.cc} and cc={self.baseline}")
    med, gaps = {}, []
    for label, group in ((self.cc, mine), (self.baseline, base)):
        vals = []
        for p in group:
            d = _drain(p, self.iface, self.near_zero_bytes)
            if d is None:
                return Verdict(self.claim, self.cc, False, f"{p.name}: no queue samples "
                               f"after the burst", [p.name])
            vals.append(0.0 if d["peak_bytes"] <= self.near_zero_bytes else d["drain_s"])
            gaps.append(d["sample_gap_max_s"])
        med[label] = float(np.median(vals))
    a, b = med[self.cc], med[self.baseline]
    ok: bool | None = a <= self.max_ratio * b or a == b == 0
    why = ""
    if not ok and math.isfinite(a) and max(gaps) >= a - self.max_ratio * b:
        ok, why = None, (f"; unresolved: queue sampling gaps up to "
                         f"{max(gaps) * 1e3:.1f} ms")
    ratio = a / b if b else (1.0 if a == 0 else math.inf)
    return Verdict(self.claim, self.cc, ok,
                   f"drain after the burst's peak {a * 1e3:.2f} ms vs {self.baseline} "
                   f"{b * 1e3:.2f} ms: ratio {ratio:.2f} ({'≤' if ok else '>'} "
                   f"{self.max_ratio:g}){why}", [p.name for p in mine + base],
                   {"drain_s": a, "baseline_drain_s": b, "ratio": ratio})


@judges(StandingQueue)
def _standing_queue(self: StandingQueue, pts: list[PointData]) -> Verdict:
    near = self.near
    col, target = (("qlen_pkts", near.packets) if near.packets is not None
                   else ("backlog_bytes", near.bytes))
    unit = "packets" if near.packets is not None else "B"
    mine = _points(self, pts, self.cc)
    if not mine:
        return _na(self, f"needs a point with cc={self.cc}")
    meds = []
    for p in mine:
        _n, q = p.bottleneck(self.iface)
        s = q[col]
        t1 = self.t_to or (p.burst_at if p.burst_at is not None else float(s.t[-1]))
        w = _window(s, self.t_from, t1)
        if len(w.t) < 10:
            return Verdict(self.claim, self.cc, False, f"{p.name}: fewer than 10 queue "
                           f"samples in [{self.t_from:g}, {t1:g}] s", [p.name])
        meds.append(float(np.median(w.v)))
    m = float(_typical(meds, lambda x: abs(x - target), worse_high=True))
    lo, hi = target * (1 - self.tolerance), target * (1 + self.tolerance)
    ok = lo <= m <= hi
    return Verdict(self.claim, self.cc, ok,
                   f"median standing queue {m:.1f} {unit} ({'within' if ok else 'outside'}"
                   f" {lo:.1f}–{hi:.1f} around {target} {unit})"
                   f"{_of_reps(len(meds), f'{max(meds, key=lambda x: abs(x - target)):.1f}')}",
                   [p.name for p in mine], {"median": m, "near": float(target)})


# ------------------------------------------------- the NOOBs paper's claims (noobprobe.csv)
def _probed(self: _NoobClaim, pts: list[PointData]) -> list[PointData]:
    mine = [p for p in pts if (p.dir / "noobprobe.csv").exists()]
    return [p for p in mine if p.name == self.point] if self.point else mine


def _judge_one(self: _NoobClaim, pts: list[PointData], measure) -> Verdict:
    """A claim on one point's data: the first that probed (or the named one)."""
    mine = _probed(self, pts)[:1]
    if not mine:
        return _na(self, "needs a point with noobprobe.csv")
    return _verdict(self, measure(mine[0].dir), mine)


def _verdict(self: _NoobClaim, m: dict, pts: list[PointData]) -> Verdict:
    """A claims_noob result as a Verdict: its checks as the reason, its numbers as
    measured, the rest (per-hop tables, paths) as detail."""
    checks = m.get("checks") or {}
    failed = [c for c, ok in checks.items() if not ok]
    reason = m.get("reason") or (f"failed: {', '.join(failed)}" if failed else
                                 f"{len(checks)} checks hold" if checks else "")
    measured = {k: v for k, v in m.items() if k not in ("claim", "pass", "reason")
                and isinstance(v, (int, float)) and not isinstance(v, bool)}
    detail = {k: v for k, v in m.items() if k not in ("claim", "pass", "reason")
              and k not in measured}
    return Verdict(self.claim, None, bool(m["pass"]), reason,  # type: ignore[attr-defined]
                   [p.name for p in pts], measured, detail)


@judges(OneHopQueue)
def _one_hop_queue(self: OneHopQueue, pts: list[PointData]) -> Verdict:
    mine = _probed(self, pts)
    return _verdict(self, claims_noob.one_hop_queue(
        [p.dir for p in mine], self.hop, self.min_rise_ms, self.flat_iqr_ms,
        self.osc_factor, self.after_ms, self.hop_prop_ms), mine)


@judges(RouteChange)
def _route_change(self: RouteChange, pts: list[PointData]) -> Verdict:
    return _judge_one(self, pts, lambda d: claims_noob.route_change(
        d, self.at, self.hop, settle=self.settle, min_rise_ms=self.min_rise_ms,
        prop_rise_ms=self.prop_rise_ms, silent_max=self.silent_max,
        answered_min=self.answered_min))


@judges(EcmpPaths)
def _ecmp_paths(self: EcmpPaths, pts: list[PointData]) -> Verdict:
    return _judge_one(self, pts, lambda d: claims_noob.ecmp_paths(
        d, self.hop, self.alpha, self.min_probes, self.slack))


@judges(NoOverhead)
def _no_overhead(self: NoOverhead, pts: list[PointData]) -> Verdict:
    def probing(p: PointData) -> bool:
        return "noobprobe" in (p.meta.instruments or [])
    on = [p for p in pts if probing(p)]
    off = [p for p in pts if not probing(p)]
    return _verdict(self, claims_noob.no_overhead(
        [p.dir for p in on], [p.dir for p in off], self.alpha, self.min_ratio), on + off)


_ADAPTER = TypeAdapter(list[ClaimSpec])
assert all(c in JUDGES for c in CLAIM_KINDS), "every claim kind of config.models needs a judge"


def tolerances(raw: list[dict[str, Any]] | None) -> list[MetricTolerance]:
    """The `expect:` entries that are compare tolerances (validated)."""
    return [MetricTolerance.model_validate(e) for e in raw or []
            if isinstance(e, dict) and "metric" in e]


def parse_expect(raw: list[dict[str, Any]], where: str = "expect") -> list[_Claim]:
    """An experiment's `expect:` list → claims (ConfigError naming the entry and key);
    compare's tolerance entries ({metric:, tolerance:}) are validated and left out."""
    try:
        tol = [i for i, e in enumerate(raw) if isinstance(e, dict) and "metric" in e]
        for i in tol:
            try:
                MetricTolerance.model_validate(raw[i])
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in (i, *err["loc"]))
                msg = err["msg"].removeprefix("Value error, ")
                if "compare metrics" not in msg:
                    msg += f" (compare metrics: {', '.join(COMPARE_METRICS)}, or *)"
                raise ConfigError(msg, key=f"{where}[{loc}]") from None
        raw = [e for i, e in enumerate(raw) if i not in tol]
        return list(_ADAPTER.validate_python(raw))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if "(claims:" not in msg:
            msg += f" (claims: {', '.join(CLAIMS)})"
        raise ConfigError(msg, key=f"{where}[{loc}]") from None


def default_claims(pts: list[PointData]) -> list[_Claim]:
    """The paper's claims that the bundle's points can answer."""
    ccs = {p.cc for p in pts}
    incast = any(p.burst_at is not None for p in pts)
    out: list[_Claim] = []
    for cc in ("powertcp", "theta_powertcp"):
        if cc not in ccs:
            continue
        if incast:
            if "cubic" in ccs:
                out.append(QueuePeakRatio(cc=cc, ci=True))
            out += [QueueDrains(cc=cc), Utilization(cc=cc, ci=True)]
        else:
            out.append(Fairness(cc=cc, ci=True))
    return out


def kernels(pts: list[PointData]) -> dict[str, list[str]]:
    """kernel release → the points that ran on it (from each point's meta.json)."""
    out: dict[str, list[str]] = defaultdict(list)
    for p in pts:
        out[p.meta.kernel or "unknown"].append(p.name)
    return dict(out)


def check(results: Path | str, expect: list[dict[str, Any]] | None = None,
          names: list[str] | None = None, ci: bool = False,
          mixed_kernels: bool = False) -> list[Verdict]:
    """Evaluate claims on a bundle: `expect` (else the config's `expect:`, else defaults).
    Points that ran on different kernels (e.g. Slurm nodes of a mixed cluster) are not
    compared: every claim fails saying so, unless `mixed_kernels`."""
    pts = load_bundle(results)
    if expect is None:
        expect = next((e for e in (point_config(p.dir).get("expect") for p in pts) if e), None)
    claims = parse_expect(expect) if expect else []
    binding = bool(claims)   # the experiment's own claims decide; defaults are reported
    if not expect or (not claims and len(tolerances(expect)) == len(expect)):
        claims = default_claims(pts)
    if names:
        unknown = [n for n in names if n not in CLAIMS]
        if unknown:
            raise ConfigError(f"unknown claim {unknown[0]!r} (claims: {', '.join(CLAIMS)})",
                              key="--claim")
        claims = [c for c in claims if c.claim in names]
    if ci:
        claims = [c for c in claims if c.ci]
    ks = kernels(pts)
    if len(ks) > 1 and not mixed_kernels:
        why = ("points ran on different kernels (" + "; ".join(
            f"{k}: {', '.join(v[:3])}{' …' if len(v) > 3 else ''}" for k, v in sorted(ks.items()))
            + "): not compared; pass --mixed-kernels to compare anyway")
        return [Verdict(c.claim, c.cc, False, why) for c in claims]
    out = []
    left_out = [p for p in pts if p.flow_problems]
    for c in claims:
        try:
            v = evaluate(c, pts)
        except _Excluded as e:
            v = Verdict(c.claim, c.cc, None, str(e), [p.name for p in e.pts])
        except ValueError as e:
            v = Verdict(c.claim, c.cc, False, str(e))
        skipped = [p for p in left_out if p.name not in v.points and
                   p.cc in (c.cc, getattr(c, "baseline", None))]
        if skipped and v.passed is not None:
            v.reason += ("; left out (a flow did not run as asked): " +
                         "; ".join(f"{p.name}: {', '.join(p.flow_problems)}" for p in skipped))
        v.binding = binding
        out.append(v)
    return out


def failed(verdicts: list[Verdict], strict: bool = False) -> list[Verdict]:
    """The verdicts that make a run or `check` fail: a binding claim that failed; with
    `strict`, also a default claim that failed and any claim that could not be judged."""
    return [v for v in verdicts if (v.passed is False and (v.binding or strict))
            or (strict and v.passed is None)]


def write_verdicts(results: Path | str, verdicts: list[Verdict]) -> Path:
    """claims.json, and each judged point's record its verdicts."""
    path = Path(results) / "claims.json"
    path.write_text(json.dumps([{**asdict(v), "status": v.status} for v in verdicts],
                               indent=2, default=float) + "\n")
    record_verdicts(results, verdicts)
    return path
