"""Throughput and queue over time for one point (the PowerTCP incast figure's style)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..results import read_csv
from ..results.record import PointRecord, read_record


def bottleneck_series(pdir: Path, bin_s: float = 0.001):
    """(port, t, egress_mbps, queue_kb) of the port with the largest backlog; None if none."""
    rows = read_csv(pdir / "queue.csv")
    if not rows:
        return None
    by_port: dict[str, list] = defaultdict(list)
    for r in rows:
        by_port[f"{r['node']}:{r['iface']}"].append(
            (float(r["time"]), int(r["backlog_bytes"]), int(r["sent_bytes"])))
    port = max(by_port, key=lambda k: (max(x[1] for x in by_port[k]),
                                       by_port[k][-1][2] - by_port[k][0][2]))
    a = np.array(by_port[port], dtype=float)
    t, backlog, sent = a[:, 0], a[:, 1], a[:, 2]
    # egress rate over bins of bin_s: a single 500 µs sample is too noisy to read
    edges = np.arange(t[0], t[-1] + bin_s, bin_s)
    idx = np.searchsorted(t, edges)
    idx = np.clip(idx, 0, len(t) - 1)
    dt = np.diff(t[idx])
    db = np.diff(sent[idx])
    with np.errstate(divide="ignore", invalid="ignore"):
        mbps = np.where(dt > 0, db * 8 / dt / 1e6, np.nan)  # no sample in a bin: a gap
    return port, t, backlog / 1024.0, edges[1:], mbps


def draw_point(ax, pdir: Path, qmax_kb: float | None = None, legend: bool = True) -> bool:
    """One panel: throughput per flow and bottleneck egress (left), queue (right)."""
    meta = _meta(pdir)
    flows = read_csv(pdir / "throughput.csv")
    series = bottleneck_series(pdir, bin_s=0.01)
    if not flows and series is None:
        return False
    per_flow: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in flows:
        per_flow[r["flow"]].append((float(r["time"]), float(r["bps"]) / 1e6))
    for name, pts in _group_incast(per_flow).items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=name,
                drawstyle="steps-pre")
    for name, pts in _noobflow_series(pdir).items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.9, ls="--",
                label=f"{name} (noobflow)")
    if series is not None:
        port, t, qkb, te, mbps = series
        ax.plot(te, mbps, color="0.35", lw=0.6, alpha=0.7, label=f"egress {port} (10 ms bins)")
        ax2 = ax.twinx()
        ax2.fill_between(t, qkb, step="post", color="tab:red", alpha=0.25, lw=0)
        ax2.plot(t, qkb, color="tab:red", lw=0.8, drawstyle="steps-post")
        ax2.set_ylabel(f"queue at {port} (KB)", color="tab:red")
        ax2.set_ylim(0, qmax_kb if qmax_kb else None)
    dur = _duration(pdir)
    if dur:
        ax.set_xlim(-0.05 * dur, dur * 1.05)
    for ev in meta.schedule:
        if ev["at"] > 0:
            ax.axvline(ev["at"], color="k", ls=":", lw=0.8)
            # releases of several flows at one instant: how far apart they went, and
            # how far apart their first data reached the receivers
            spread = "".join(f", {label} {ev[k]:.1f} ms" for k, label in
                             (("spread_ms", "spread"), ("sent_spread_ms", "on wire"))
                             if ev.get(k) and "flow" in ev["what"] and not ev["what"].endswith(" 1 flow(s)"))
            ax.annotate(ev["what"] + spread, (ev["at"], 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, va="top", ha="right")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("throughput (Mb/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="lower left", fontsize=7, ncol=2)
    verdict = meta.bottleneck.verdict if meta.bottleneck else None
    ax.set_title(f"{meta.get('point', pdir.name)}" + (f"  [bottleneck: {verdict}]" if verdict else ""),
                 fontsize=9)
    return True


def throughput_queue(pdir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    if not draw_point(ax, pdir):
        plt.close(fig)
        return []
    meta = _meta(pdir)
    fig.suptitle(f"{meta.get('experiment', '')}" + (f" — {meta['scale']}" if meta.get("scale") else ""),
                 fontsize=8)
    fig.tight_layout()
    out = pdir / "plots"
    out.mkdir(exist_ok=True)
    path = out / "throughput_queue.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def panels(run_dir: Path) -> list[Path]:
    """Every point of a run side by side, one queue scale: the paper's per-CC panels."""
    import math

    import matplotlib.pyplot as plt

    try:  # the sweep's order, as the experiment lists it
        order = list(json.loads((run_dir / "run.json").read_text())["points"])
    except (OSError, ValueError, KeyError):
        order = sorted(p.name for p in run_dir.iterdir())
    points = [run_dir / n for n in order
              if (run_dir / n / "meta.json").exists() and _meta(run_dir / n).get("status") == "ok"]
    if len(points) < 2:
        return []
    qmax = 0.0
    for p in points:
        s = bottleneck_series(p)
        if s is not None:
            qmax = max(qmax, float(s[2].max()))
    cols = 2 if len(points) > 1 else 1
    rows = math.ceil(len(points) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows), squeeze=False)
    for i, (ax, p) in enumerate(zip(axs.flat, points)):
        draw_point(ax, p, qmax * 1.05 if qmax else None, legend=(i == 0))
    for ax in list(axs.flat)[len(points):]:
        ax.axis("off")
    meta = _meta(points[0])
    fig.suptitle(f"{meta.get('experiment', '')}" + (f"\n{meta['scale']}" if meta.get("scale") else ""),
                 fontsize=9)
    fig.tight_layout()
    path = run_dir / "panels.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _noobflow_series(pdir: Path) -> dict[str, list[tuple[float, float]]]:
    """noobflow's per-interval throughput (XDP at the receiver), named like the workload's
    flows by their (src, dst) hosts; an option next to iperf3's 100 ms reports."""
    rows = read_csv(pdir / "throughput_noobflow.csv")
    if not rows:
        return {}
    names = {}
    for f in read_csv(pdir / "flows.csv"):
        names.setdefault((f["src"], f["dst"]), f["flow"].split("-")[0] if "-" in f["flow"]
                         else f["flow"])
    acc: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        name = names.get((r["src"], r["dst"]))
        if name is not None:  # ACK directions and other traffic are not workload flows
            acc[name][round(float(r["time"]), 4)] += float(r["bps"]) / 1e6
    return {k: sorted(v.items()) for k, v in acc.items()}


def _group_incast(per_flow: dict[str, list]) -> dict[str, list]:
    """Incast senders (`<burst>-hN`) summed into one line: ten lines are unreadable."""
    out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for name, pts in per_flow.items():
        key = name.split("-")[0] + " (sum)" if "-" in name else name
        for t, v in pts:
            out[key][round(t, 1)] += v
    return {k: sorted(v.items()) for k, v in out.items()}


def _duration(pdir: Path) -> float:
    return _meta(pdir).duration or 0.0


def _meta(pdir: Path) -> PointRecord:
    return read_record(pdir)
