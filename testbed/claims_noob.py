"""The NOOBs paper's claims, measured on the per-hop RTT samples of noobprobe.csv.

Pure measurements over point directories, each returning a dict with `pass` and what it
measured; testbed/claims.py declares them as claim kinds (`expect:` entries) and turns
the dicts into Verdicts.

- one_hop_queue (N1): the first hop behind the congested queue rises over the hop before
  it and oscillates, the hops before it stay flat, the hops after it add little.
- route_change (N2): at the change the responder of the first differing hop changes, the
  RTT of the last answering hop rises (the new path's queue), every hop answered before
  and one hop of the new path stops answering; the probe rate around it is reported.
- ecmp_paths (N3): each flow's path is the hop-2 responder of its own probes (one per
  flow), several paths are seen, and per-path throughput samples differ (KS 2-sample
  test between the slowest and fastest path).
- no_overhead (N4): app throughput with and without probing (points of a sweep over
  `instruments.noobprobe.enabled`, repeated) shows no significant difference (Welch's
  t-test and Mann-Whitney U, p > alpha), and the mean ratio is reported.
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path


def read_samples(pdir: Path) -> list[dict]:
    path = Path(pdir) / "noobprobe.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _iqr(v: list[float]) -> float:
    q = statistics.quantiles(v, n=4)
    return q[2] - q[0]


def _paired_median(ref: list[tuple[float, float]], other: list[tuple[float, float]],
                   within_s: float = 0.1) -> float:
    """Median of (RTT − RTT of the `ref` sample nearest in time) over `other`'s samples
    with a `ref` sample within `within_s`; inf when none has one."""
    import bisect
    ref = sorted(ref)
    ts = [t for t, _ in ref]
    diffs = []
    for t, x in other:
        i = bisect.bisect_left(ts, t)
        near = min((j for j in (i - 1, i) if 0 <= j < len(ts)), key=lambda j: abs(ts[j] - t))
        if abs(ts[near] - t) <= within_s:
            diffs.append(x - ref[near][1])
    return statistics.median(diffs) if diffs else float("inf")


def one_hop_queue(pdirs: list[Path], hop: int, min_rise_ms: float = 1.0,
                  flat_iqr_ms: float = 0.5, osc_factor: float = 5.0,
                  after_ms: float = 0.5, hop_prop_ms: float = 0.0) -> dict:
    """N1: hop `hop` is the first behind the congested queue, in every point given."""
    out = {"claim": "one_hop_queue", "hop": hop, "points": {}}
    ok_all = bool(pdirs)
    for p in pdirs:
        rows = read_samples(p)
        lat: dict[int, list[float]] = {}
        timed: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            if float(r["latency"]) >= 0:
                lat.setdefault(int(r["outttl"]), []).append(float(r["latency"]))
                timed.setdefault(int(r["outttl"]), []).append((float(r["time"]),
                                                               float(r["latency"])))
        hops = sorted(h for h, v in lat.items() if len(v) >= 10)
        if hop not in hops or hop - 1 not in hops:
            counts = {h: len(v) for h, v in sorted(lat.items())}
            out["points"][p.name] = {"pass": False, "reason": f"too few samples at hops "
                                     f"{hop - 1}/{hop} (answered per hop: {counts})"}
            ok_all = False
            continue
        med = {h: statistics.median(lat[h]) for h in hops}
        iqr = {h: _iqr(lat[h]) for h in hops}
        # hop_prop_ms: the RTT each hop adds by propagation alone (WAN variants)
        rise = med[hop] - med[hop - 1] - hop_prop_ms
        # what each later hop adds: its probes against the hop-`hop` probe nearest in time
        # (~15 ms apart at 20 probes/s per hop), so the queue's own swing between the two
        # hops' samples (IQR 7-10 ms at 5 ms per link) is not taken for a difference
        after = {h: _paired_median(timed[hop], timed[h]) - (h - hop) * hop_prop_ms
                 for h in hops if h > hop}
        checks = {
            f"rise hop {hop} over hop {hop - 1} > {min_rise_ms} ms": rise > min_rise_ms,
            f"hop {hop} oscillates: IQR > {osc_factor}x hop {hop - 1}'s and > {flat_iqr_ms} ms":
                iqr[hop] > osc_factor * iqr[hop - 1] and iqr[hop] > flat_iqr_ms,
            f"hops 1..{hop - 1} flat: IQR < {flat_iqr_ms} ms":
                all(iqr[h] < flat_iqr_ms for h in hops if h < hop),
            f"hops after {hop} add < {after_ms} ms" + (f" beyond {hop_prop_ms:g} ms each"
                                                        if hop_prop_ms else ""):
                all(abs(v) < after_ms for v in after.values()),
        }
        ok = all(checks.values())
        ok_all &= ok
        out["points"][p.name] = {
            "pass": ok, "checks": checks,
            "median_ms": {h: round(v, 3) for h, v in med.items()},
            "iqr_ms": {h: round(v, 3) for h, v in iqr.items()},
            "after_ms": {h: round(v, 3) for h, v in after.items()},
            "samples": {h: len(v) for h, v in lat.items()},
            "unanswered": sum(1 for r in rows if float(r["latency"]) < 0)}
    out["pass"] = ok_all
    return out


def _mean_bps(pdir: Path) -> float:
    """The app's mean received rate over the point (throughput.csv, all flows summed per
    sample time)."""
    per_t: dict[str, float] = {}
    with (pdir / "throughput.csv").open() as f:
        for r in csv.DictReader(f):
            per_t[r["time"]] = per_t.get(r["time"], 0.0) + float(r["bps"])
    v = list(per_t.values())
    return statistics.mean(v[1:-1] if len(v) > 3 else v)   # without start/end partials


def no_overhead(with_probes: list[Path], without: list[Path], alpha: float = 0.05,
                min_ratio: float = 0.97) -> dict:
    """N4: throughput of the points with noobprobe enabled vs disabled."""
    from scipy import stats
    on = [_mean_bps(p) / 1e6 for p in with_probes if (p / "throughput.csv").exists()]
    off = [_mean_bps(p) / 1e6 for p in without if (p / "throughput.csv").exists()]
    if len(on) < 2 or len(off) < 2:
        return {"claim": "no_overhead", "pass": False,
                "reason": f"need >= 2 points each, have {len(on)} with / {len(off)} without"}
    t = stats.ttest_ind(on, off, equal_var=False)
    u = stats.mannwhitneyu(on, off, alternative="two-sided")
    ratio = statistics.mean(on) / statistics.mean(off)
    checks = {f"Welch p > {alpha}": bool(t.pvalue > alpha),
              f"Mann-Whitney p > {alpha}": bool(u.pvalue > alpha),
              f"ratio {ratio:.3f} >= {min_ratio}": bool(ratio >= min_ratio)}
    return {"claim": "no_overhead", "pass": all(checks.values()), "checks": checks,
            "with_mbps": [round(x, 2) for x in on], "without_mbps": [round(x, 2) for x in off],
            "ratio": round(ratio, 4), "welch_p": round(float(t.pvalue), 4),
            "mannwhitney_p": round(float(u.pvalue), 4), "alpha": alpha,
            "min_ratio": min_ratio}


def route_change(pdir: Path, at: float, hop: int, settle: float = 0.5,
                 min_rise_ms: float = 1.0, prop_rise_ms: float = 0.0, silent_max: float = 0.2,
                 answered_min: float = 0.8) -> dict:
    """N2: the path changes at `at` s; hop `hop` is the first router that differs."""
    rows = read_samples(pdir)
    end = max(float(r["time"]) for r in rows)

    def window(a: float, b: float) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for r in rows:
            if a <= float(r["time"]) < b:
                out.setdefault(int(r["outttl"]), []).append(r)
        return out

    def answered(rs: list[dict]) -> list[dict]:
        return [r for r in rs if float(r["latency"]) >= 0]

    before, after = window(settle, at), window(at + settle, end + 1)
    frac_b = {h: len(answered(v)) / len(v) for h, v in before.items() if len(v) >= 10}
    # a silent hop is soon probed only in retry rounds: a few probes are enough there
    frac_a = {h: len(answered(v)) / len(v) for h, v in after.items() if len(v) >= 3}
    resp = {w: sorted({r["responder"] for r in answered(d.get(hop, []))})
            for w, d in (("before", before), ("after", after))}

    def last_med(d, frac) -> tuple[int, float]:
        h = max(k for k, f in frac.items() if f >= 0.5)
        return h, statistics.median(float(r["latency"]) for r in answered(d[h]))
    (hb, mb) = last_med(before, frac_b)
    (ha, ma) = last_med(after, {h: f for h, f in frac_a.items() if len(after[h]) >= 10})
    per_s_before = sum(len(v) for v in before.values()) / max(at - settle, 1e-9)
    during = sum(len(v) for v in window(at, at + 1.0).values())
    checks = {
        f"hop {hop}'s responder changes": len(resp["before"]) == 1 and len(resp["after"]) == 1
        and resp["before"] != resp["after"],
        f"last answering hop's RTT rises > {min_rise_ms} ms" +
        (f" beyond {prop_rise_ms:g} ms of propagation" if prop_rise_ms else ""):
            ma > mb + prop_rise_ms + min_rise_ms,
        f"before: every hop answers >= {answered_min:.0%}":
            bool(frac_b) and min(frac_b.values()) >= answered_min,
        f"after: a hop answers < {silent_max:.0%}":
            bool(frac_a) and min(frac_a.values()) < silent_max,
    }
    return {"claim": "route_change", "pass": all(checks.values()), "checks": checks,
            "responders_at_hop": resp, "answered_before": {h: round(f, 2) for h, f in frac_b.items()},
            "answered_after": {h: round(f, 2) for h, f in frac_a.items()},
            "probes_after": {h: len(v) for h, v in after.items()},
            "last_hop_median_ms": {"before": [hb, round(mb, 3)], "after": [ha, round(ma, 3)]},
            "probes_per_s_before": round(per_s_before, 1),
            "probes_in_1s_after_change": during}


def flow_ports(pdir: Path) -> dict[str, list[int]]:
    """Each iperf flow's client-side (ephemeral) ports, from its JSON report."""
    out = {}
    for f in sorted((Path(pdir) / "iperf").glob("*.client.json")):
        try:
            j = json.loads(f.read_text())
            out[f.name[:-len(".client.json")]] = [c["local_port"] for c in j["start"]["connected"]]
        except (ValueError, KeyError):
            pass
    return out


def flow_windows(pdir: Path) -> dict[str, tuple[float, float]]:
    """Each flow's (start, end) in seconds of the run's time base, from flows.csv."""
    path = Path(pdir) / "flows.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {r["flow"]: (float(r["start"]), float(r["end"])) for r in csv.DictReader(f)
                if r.get("start") and r.get("end")}


def path_samples(pdir: Path, hop: int = 2, min_probes: int = 3, slack: float = 0.2
                 ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[float]]]:
    """Each flow's path (its hop-`hop` responder: the spine), the flows whose probes
    named several, and the throughput samples (Mb/s) of each path's flows."""
    pdir = Path(pdir)
    rows = read_samples(pdir)
    path_of: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    windows = flow_windows(pdir)
    for flow, ports in flow_ports(pdir).items():
        # A later flow may reuse an ephemeral port: a probe is the flow's if its port
        # matches and it was sent while the flow ran.
        t0, t1 = windows.get(flow, (float("-inf"), float("inf")))
        resp = [r["responder"] for r in rows if int(r["sport"]) in ports
                and int(r["outttl"]) == hop and float(r["latency"]) >= 0
                and t0 - slack <= float(r["time"]) <= t1 + slack]
        if len(resp) < min_probes:
            continue
        if len(set(resp)) == 1:
            path_of[flow] = resp[0]
        else:
            multi[flow] = sorted(set(resp))
    samples: dict[str, list[float]] = {}
    with (pdir / "throughput.csv").open() as f:
        per_flow: dict[str, list[float]] = {}
        for r in csv.DictReader(f):
            per_flow.setdefault(r["flow"], []).append(float(r["bps"]) / 1e6)
    for flow, v in per_flow.items():
        if flow in path_of and len(v) > 2:
            samples.setdefault(path_of[flow], []).extend(v[1:-1])   # no partial samples
    return path_of, multi, samples


def ecmp_paths(pdir: Path, hop: int = 2, alpha: float = 0.01, min_probes: int = 3,
               slack: float = 0.2) -> dict:
    """N3: each flow's path is its hop-`hop` responder (the spine); per-path throughput
    distributions differ (KS 2-sample between the fastest and slowest path)."""
    from scipy import stats
    path_of, multi, samples = path_samples(pdir, hop, min_probes, slack)
    paths = sorted(samples, key=lambda p: statistics.median(samples[p]))
    verdict = {"claim": "ecmp_paths", "flows_per_path":
               {p: sorted(f for f, q in path_of.items() if q == p) for p in paths},
               "flows_with_several_paths": multi,
               "median_mbps": {p: round(statistics.median(samples[p]), 2) for p in paths}}
    if len(paths) < 2:
        return {**verdict, "pass": False, "reason": f"{len(paths)} path(s) seen"}
    ks = stats.ks_2samp(samples[paths[0]], samples[paths[-1]])
    checks = {"one path per flow": not multi, ">= 2 paths seen": len(paths) >= 2,
              f"KS slowest vs fastest path p < {alpha}": bool(ks.pvalue < alpha)}
    return {**verdict, "pass": all(checks.values()), "checks": checks,
            "ks": {"paths": [paths[0], paths[-1]], "statistic": round(float(ks.statistic), 4),
                   "p": float(ks.pvalue)}}


