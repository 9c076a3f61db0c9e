"""Across a run's points: what the flows delivered and the bottleneck queue's spread.

summary.csv, one row per point: total_mbps (the long flows' — `flows:`, not incast —
bytes at the receiver over their common span: goodput, never more than the link carries),
queue percentiles, the bottleneck verdict, goodput_mbps (every flow's bytes, the same
way), flows_not_ok (flows.csv rows whose status is not ok: late, short, never connected)
and syn_retransmits (summed over the point's flows).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..results import read_csv
from ..results.record import read_record


def goodput_mbps(flows: list[dict]) -> float:
    """What the flows delivered together: their bytes at the receivers over the span from
    the first one's first data to the last one's last (flows.csv). A sum of per-flow
    mean rates is not a total: flows over different spans would add up to more than the
    link carries."""
    spans = [(float(f["start"]), float(f["end"]), int(f["bytes"] or 0)) for f in flows
             if f.get("start") and f.get("end")]
    if not spans:
        return 0.0
    t0, t1 = min(s[0] for s in spans), max(s[1] for s in spans)
    return round(sum(s[2] for s in spans) * 8 / (t1 - t0) / 1e6, 2) if t1 > t0 else 0.0


def sweep_summary(run_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    points = sorted(p for p in run_dir.iterdir() if (p / "meta.json").exists())
    rows = []
    for p in points:
        meta = read_record(p)
        flows = read_csv(p / "flows.csv")
        q = [int(r["backlog_bytes"]) for r in read_csv(p / "queue.csv")]
        bn = meta.bottleneck
        longs = [f for f in flows if not f.get("group", f["flow"].split("-")[0] == "incast")]
        rows.append({
            "point": p.name, "status": meta.status,
            "flows": len(flows),
            "total_mbps": goodput_mbps(longs),
            "queue_p50_kb": round(float(np.percentile(q, 50)) / 1024, 1) if q else "",
            "queue_p99_kb": round(float(np.percentile(q, 99)) / 1024, 1) if q else "",
            "queue_max_kb": round(max(q) / 1024, 1) if q else "",
            "bottleneck": (bn.verdict if bn else None) or "",
            "cpu_busy_pct": bn.cpu_busy_pct if bn and bn.cpu_busy_pct is not None else "",
            "goodput_mbps": goodput_mbps(flows),
            "flows_not_ok": sum(f.get("status", "ok") != "ok" for f in flows),
            "syn_retransmits": sum(int(f.get("syn_retransmits") or 0) for f in flows)})
    if not rows:
        return []
    out = run_dir / "summary.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ok = [r for r in rows if r["status"] == "ok" and r["queue_p50_kb"] != ""]
    paths = [out]
    if ok:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        names = [r["point"] for r in ok]
        a1.bar(names, [r["total_mbps"] for r in ok], color="tab:blue")
        a1.set_ylabel("goodput of long flows (Mb/s)")
        x = np.arange(len(ok))
        a2.bar(x - 0.25, [r["queue_p50_kb"] for r in ok], 0.25, label="p50")
        a2.bar(x, [r["queue_p99_kb"] for r in ok], 0.25, label="p99")
        a2.bar(x + 0.25, [r["queue_max_kb"] for r in ok], 0.25, label="max")
        a2.set_xticks(x, names)
        a2.set_ylabel("bottleneck queue (KB)")
        a2.legend()
        for a in (a1, a2):
            a.tick_params(axis="x", rotation=30, labelsize=8)
            a.grid(alpha=0.3, axis="y")
        fig.suptitle(run_dir.parent.name, fontsize=10)
        fig.tight_layout()
        png = run_dir / "summary.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        paths.append(png)
    return paths
