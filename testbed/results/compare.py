"""Two runs side by side: did NEW regress against BASE?

Points are matched by their sweep values (repetitions of a point form its sample). For each
matched point and each key metric, and for each claim of the runs, a Row holds both values,
the change and a verdict:

- REGRESSED: the metric moved the wrong way by more than its tolerance (relative change,
  default 10 %, from `expect: [{metric: NAME, tolerance: REL}]` or `--tolerance`; order:
  --tolerance METRIC=REL, expect's metric, --tolerance REL, expect's "*") and by
  more than its noise floor (absolute, FLOORS) — and, with repetitions on both sides,
  a one-sided Mann-Whitney U test says NEW is worse at α (default 0.05). Where the
  repetitions are too few for the test ever to reach α (2 vs 2: the smallest p is 1/6),
  the medians decide and the row says so. A claim regresses when it passed in BASE and
  fails in NEW.
- better / ok / worse (not significant) / n/a (absent in one run).

Metrics, per point (its repetitions' medians are shown):
  goodput_mbps           Σ over flows of the mean receiver-side rate (throughput.csv)
  queue_p50_bytes, queue_p99_bytes   the bottleneck port's backlog over the workload (the
                         port busiest against its rate, meta.json's bottleneck.ports)
  drain_ms               after an incast, from the queue's peak to ≤ 2 MTU (inf: never)
  jain                   Jain's index of the flows' mean rates while all are active
  retransmits            Σ of flows.csv retransmits
  hop_latency_p50_us[H]  noobprobe's median latency to responder H
  int_hop_latency_p50_us[N]  TCP-INT's median hop latency of hop N

Classes: Row, Comparison. Functions: compare(base, new, ...), point_metrics(run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as claims_mod
from ..config.units import FRAME_BYTES
from .frames import Run, load
from .record import point_config

DEFAULT_TOLERANCE = 0.10
ALPHA = 0.05
# name → (better when "higher"/"lower", absolute change below which it is noise)
METRICS: dict[str, tuple[str, float]] = {
    "goodput_mbps": ("higher", 1.0),
    "queue_p50_bytes": ("lower", 2 * FRAME_BYTES),
    "queue_p99_bytes": ("lower", 2 * FRAME_BYTES),
    "drain_ms": ("lower", 1.0),
    "jain": ("higher", 0.02),
    "retransmits": ("lower", 10),
    "hop_latency_p50_us": ("lower", 20.0),
    "int_hop_latency_p50_us": ("lower", 20.0),
}
assert set(METRICS) == set(claims_mod.COMPARE_METRICS)


# --------------------------------------------------------------------------- metrics
def _group(point: str) -> str:
    """A point's name without its repetition: what matches across runs."""
    parts = [p for p in point.split(",") if not p.startswith("rep=")]
    return ",".join(parts) or "default"


def _bottleneck(q: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Rows of the bottleneck port: the busiest relative to its rate (the runner's
    meta.json bottleneck.ports), else the one that carried the most bytes — on a chain
    every port carries the flows' bytes, only one is full."""
    if q.empty:
        return q
    port = q.node.astype(str) + ":" + q.iface.astype(str)
    util = {k: v.get("util_pct") for k, v in
            ((meta.get("bottleneck") or {}).get("ports") or {}).items()
            if v.get("util_pct") is not None and k in set(port)}
    if util:
        return q[port == max(sorted(util), key=lambda k: util[k])]
    sent = q.groupby(port).sent_bytes.agg(lambda s: s.max() - s.min())
    if not sent.any():
        sent = q.groupby(port).backlog_bytes.max()
    return q[port == sent.idxmax()]


def _drain_ms(q: pd.DataFrame, burst_at: float, end: float) -> float:
    s = q[(q.time >= burst_at) & (q.time <= end)].sort_values("time")
    if s.empty:
        return math.nan
    v, t = s.backlog_bytes.to_numpy(), s.time.to_numpy()
    i = int(np.argmax(v))
    after = np.nonzero(v[i:] <= 2 * FRAME_BYTES)[0]
    return float(t[i + after[0]] - t[i]) * 1e3 if len(after) else math.inf


def _jain(tp: pd.DataFrame) -> float:
    live = tp[tp.bps > 0]
    if live.flow.nunique() < 2:
        return math.nan
    span = live.groupby("flow").time.agg(["min", "max"])
    t0, t1 = span["min"].max(), span["max"].min()
    w = tp[(tp.time >= t0) & (tp.time <= t1)]
    if t1 <= t0 or w.empty:
        return math.nan
    x = w.groupby("flow").bps.mean().to_numpy(dtype=float)
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum())) if (x ** 2).sum() else math.nan


def point_metrics(run: Run) -> dict[str, dict[str, float]]:
    """point name → metric → value (metrics a point has no data for are absent)."""
    out: dict[str, dict[str, float]] = {}
    q_all, tp_all, fl_all = run.queue, run.throughput, run.flows
    probe, itr = run.noobprobe, run.int_trace
    for point, m in run.meta.items():
        if m.get("status") != "ok":
            continue
        end = m.duration or math.inf
        res: dict[str, float] = {}
        tp = tp_all[(tp_all.point == point)] if not tp_all.empty else tp_all
        if not tp.empty:
            tp = tp[(tp.time >= 0) & (tp.time <= end)]
            res["goodput_mbps"] = float(tp.groupby("flow").bps.mean().sum()) / 1e6
            j = _jain(tp)
            if not math.isnan(j):
                res["jain"] = j
        q = _bottleneck(q_all[q_all.point == point], m) if not q_all.empty else q_all
        if not q.empty:
            w = q[(q.time >= 0) & (q.time <= end)].backlog_bytes
            if not w.empty:
                res["queue_p50_bytes"] = float(w.quantile(0.5))
                res["queue_p99_bytes"] = float(w.quantile(0.99))
            if m.burst_at is not None:
                d = _drain_ms(q, m.burst_at, end)
                if not math.isnan(d):
                    res["drain_ms"] = d
        fl = fl_all[fl_all.point == point] if not fl_all.empty else fl_all
        if not fl.empty and "retransmits" in fl and fl.retransmits.notna().any():
            res["retransmits"] = float(pd.to_numeric(fl.retransmits, errors="coerce").sum())
        pr = probe[(probe.point == point) & (probe.latency >= 0)] if not probe.empty else probe
        for hop, lat in (pr.groupby("responder").latency.median().items() if not pr.empty
                         else []):
            res[f"hop_latency_p50_us[{hop}]"] = float(lat) * 1e3   # latency is in ms
        it = itr[itr.point == point] if not itr.empty else itr
        for hop, lat in (it.groupby("hop_id").hop_latency_ns.median().items() if not it.empty
                         else []):
            res[f"int_hop_latency_p50_us[{hop}]"] = float(lat) / 1e3
        out[point] = res
    return out


# --------------------------------------------------------------------------- verdicts
@dataclass
class Row:
    kind: str                  # "metric" or "claim"
    group: str                 # the matched point (metrics) or the claim's CC (claims)
    name: str                  # metric name, or the claim
    base: Any                  # a metric's median; a claim's "STATUS value"
    new: Any
    change: float | None       # relative change (new − base) / |base|
    verdict: str               # REGRESSED, better, ok, worse (not significant), n/a, FAIL …
    detail: str = ""
    base_values: list[float] = field(default_factory=list)
    new_values: list[float] = field(default_factory=list)
    p_value: float | None = None

    @property
    def regressed(self) -> bool:
        return self.verdict == "REGRESSED"


@dataclass
class Comparison:
    base: Path
    new: Path
    rows: list[Row]
    tolerance: dict[str, float]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regressed]


def _min_p(n1: int, n2: int) -> float:
    """The smallest one-sided p an exact Mann-Whitney test can give for n1 vs n2."""
    return 1.0 / math.comb(n1 + n2, n1)


def judge(name: str, base: list[float], new: list[float], tol: float,
          alpha: float = ALPHA) -> tuple[str, float | None, float | None, str]:
    """(verdict, relative change, p, detail) of one metric's samples."""
    kind = name.split("[")[0]
    direction, floor = METRICS[kind]
    b = [x for x in base if not (isinstance(x, float) and math.isnan(x))]
    n = [x for x in new if not (isinstance(x, float) and math.isnan(x))]
    if not b or not n:
        return "n/a", None, None, "absent in " + ("base" if not b else "new")
    bm, nm = float(np.median(b)), float(np.median(n))
    if math.isinf(bm) or math.isinf(nm):
        delta = math.inf if nm > bm else -math.inf if nm < bm else 0.0
        rel = delta
    else:
        delta = nm - bm
        rel = delta / abs(bm) if bm else (math.inf if delta else 0.0)
        if math.isnan(rel):
            rel = 0.0
    worse = delta > 0 if direction == "lower" else delta < 0
    beyond = abs(rel) > tol and abs(delta) > floor
    p = None
    detail = f"tolerance {tol:.0%}, noise floor {floor:g}"
    if len(b) >= 2 and len(n) >= 2:
        from scipy.stats import mannwhitneyu
        alt = "greater" if (direction == "lower") == worse else "less"
        p = float(mannwhitneyu(n, b, alternative=alt).pvalue)
        if _min_p(len(b), len(n)) > alpha:
            detail += (f"; Mann-Whitney p={p:.3f}, but {len(b)} vs {len(n)} repetitions "
                       f"cannot reach α={alpha:g}: medians decide")
            p_ok = True
        else:
            p_ok = p <= alpha
            detail += f"; Mann-Whitney one-sided p={p:.3f} (α={alpha:g})"
    else:
        p_ok = True
    if not beyond:
        return "ok", rel, p, detail
    if worse:
        return ("REGRESSED" if p_ok else "worse (not significant)"), rel, p, detail
    return ("better" if p_ok else "ok"), rel, p, detail


def _tolerance(metric: str, cli: dict[str, float], expect: dict[str, float],
               default: float | None) -> float:
    kind = metric.split("[")[0]
    for table in (cli, expect):
        if kind in table:
            return table[kind]
    if default is not None:
        return default
    return expect.get("*", DEFAULT_TOLERANCE)


# the number each claim is judged on (else its first measured value)
PRIMARY = {"queue_peak_ratio": "ratio", "queue_drains": "drain_rtts",
           "utilization": "utilization", "fairness": "jain_min"}


def _claims(run: Run) -> list[dict]:
    """The run's verdicts (claim, cc, status, reason, measured): claims.json and the NOOBs
    figures' claims, else judged now (nothing written)."""
    df = run.claims
    if df.empty and not (run.dir / "claims.json").exists():
        try:
            verdicts = claims_mod.check(run.dir)
        except Exception:
            return []
        return [{"claim": v.claim, "cc": v.cc, "status": v.status, "reason": v.reason,
                 "measured": v.measured} for v in verdicts]
    return [{**{k: r[k] for k in ("claim", "cc", "status", "reason")},
             "cc": r["cc"] if isinstance(r["cc"], str) else None,
             "measured": {k[len("measured_"):]: x for k, x in r.items()
                          if k.startswith("measured_") and isinstance(x, (int, float))
                          and x == x}} for r in df.to_dict("records")]


def _claim_value(c: dict) -> tuple[str, float] | None:
    m = c.get("measured") or {}
    key = PRIMARY.get(c.get("claim", ""))
    if key in m:
        return key, float(m[key])
    return next(((k, float(v)) for k, v in m.items()), None)


def compare(base: str | Path | Run, new: str | Path | Run, tolerance: float | None = None,
            per_metric: dict[str, float] | None = None, alpha: float = ALPHA) -> Comparison:
    b = base if isinstance(base, Run) else load(base)
    n = new if isinstance(new, Run) else load(new)
    expect_raw: list = []
    for point in n.meta:
        expect_raw = point_config(n.point_dir(point)).get("expect") or []
        if expect_raw:
            break
    expect = {t.metric: t.tolerance for t in claims_mod.tolerances(expect_raw)}
    cli = dict(per_metric or {})
    rows: list[Row] = []
    bm, nm = point_metrics(b), point_metrics(n)
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for pts, side in ((b.meta, 0), (n.meta, 1)):
        for p in pts:
            groups.setdefault(_group(p), ([], []))[side].append(p)
    used: dict[str, float] = {}
    for g, (bp, np_) in sorted(groups.items()):
        names = sorted({k for p in bp for k in bm.get(p, {})} |
                       {k for p in np_ for k in nm.get(p, {})},
                       key=lambda k: (list(METRICS).index(k.split("[")[0]), k))
        for name in names:
            bv = [bm[p][name] for p in bp if name in bm.get(p, {})]
            nv = [nm[p][name] for p in np_ if name in nm.get(p, {})]
            tol = _tolerance(name, cli, expect, tolerance)
            used[name.split("[")[0]] = tol
            verdict, rel, pv, detail = judge(name, bv, nv, tol, alpha)
            rows.append(Row("metric", g, name, float(np.median(bv)) if bv else None,
                            float(np.median(nv)) if nv else None, rel, verdict,
                            detail, bv, nv, pv))
    bc = {(c["claim"], c.get("cc")): c for c in _claims(b)}
    nc = {(c["claim"], c.get("cc")): c for c in _claims(n)}
    for key in sorted(set(bc) | set(nc), key=lambda k: (k[0], str(k[1]))):
        cb, cn = bc.get(key), nc.get(key)
        sb, sn = (cb or {}).get("status", "absent"), (cn or {}).get("status", "absent")
        pb, pn = _claim_value(cb or {}), _claim_value(cn or {})
        vb = pb[1] if pb else None
        vn = pn[1] if pn and (not pb or pn[0] == pb[0]) else None
        rel = (vn - vb) / abs(vb) if vb and vn is not None else None
        if sb == "PASS" and sn == "FAIL":
            verdict = "REGRESSED"
        elif sn == "FAIL":
            verdict = "FAIL (in base too)" if sb == "FAIL" else "FAIL"
        elif sn == "PASS":
            verdict = "ok"
        else:
            verdict = "n/a"
        what = f" {pb[0]}" if pb else ""
        rows.append(Row("claim", str(key[1] or "-"), key[0],
                        sb + (f" {vb:.3g}" if vb is not None else ""),
                        sn + (f" {vn:.3g}" if vn is not None else ""), rel, verdict,
                        f"change of{what}; base: {(cb or {}).get('reason', '')} | new: "
                        f"{(cn or {}).get('reason', '')}"))
    return Comparison(b.dir, n.dir, rows, used)


def format_rows(c: Comparison) -> list[str]:
    def num(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x) if x is not None else "-"
    out = [f"{'VERDICT':<24} {'POINT/CC':<22} {'METRIC/CLAIM':<30} {'BASE':>10} {'NEW':>10} "
           f"{'CHANGE':>8}"]
    for r in c.rows:
        ch = "-" if r.change is None else ("inf" if math.isinf(r.change)
                                           else f"{r.change:+.1%}")
        out.append(f"{r.verdict:<24} {r.group:<22} {r.name:<30} {num(r.base):>10} "
                   f"{num(r.new):>10} {ch:>8}")
    return out
