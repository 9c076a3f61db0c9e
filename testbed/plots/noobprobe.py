"""noobprobe figures (registered with @plotter, drawn for every point with a noobprobe.csv).

- per_hop_latency: per-hop RTT over time, one panel per destination, one colour per hop
  (unanswered probes as ticks at the bottom) — the paper's hop-by-hop latency figure.
- path_throughput_cdf: per-path throughput CDFs where flows took several ECMP paths
  (a flow's path: the hop-2 responder of its own probes) — N3's figure.

The NOOBs claims are claim kinds of testbed/claims.py (measured in testbed/claims_noob.py).
"""
from __future__ import annotations

from pathlib import Path

from ..claims_noob import path_samples, read_samples
from . import plotter, save


@plotter
def per_hop_latency(pdir: Path) -> list[Path]:
    rows = read_samples(pdir)
    if not rows:
        return []
    import matplotlib.pyplot as plt
    dests = sorted({r["dest"] for r in rows})
    fig, axes = plt.subplots(len(dests), 1, figsize=(9, 3.2 * len(dests)), squeeze=False)
    for ax, d in zip(axes[:, 0], dests):
        mine = [r for r in rows if r["dest"] == d]
        hops = sorted({int(r["outttl"]) for r in mine})
        for h in hops:
            ok = [r for r in mine if int(r["outttl"]) == h and float(r["latency"]) >= 0]
            ax.plot([float(r["time"]) for r in ok], [float(r["latency"]) for r in ok],
                    ".-", ms=3, lw=0.6, label=f"hop {h}")
            lost = [float(r["time"]) for r in mine
                    if int(r["outttl"]) == h and float(r["latency"]) < 0]
            if lost:
                ax.plot(lost, [0] * len(lost), "|", ms=8, color=ax.lines[-1].get_color())
        ax.set_title(f"per-hop RTT to {d} (ticks at 0: unanswered)", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("RTT (ms)")
        ax.legend(fontsize=8, ncol=min(len(hops), 8))
        ax.grid(alpha=0.3)
    return [save(fig, pdir, "noobprobe_latency.png")]



@plotter
def path_throughput_cdf(pdir: Path) -> list[Path]:
    """Per-path throughput CDFs of a point whose flows took several ECMP paths (N3)."""
    if not (Path(pdir) / "noobprobe.csv").exists() or not (Path(pdir) / "iperf").is_dir():
        return []
    _paths, _multi, samples = path_samples(pdir)
    if len(samples) < 2:
        return []
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for p, v in sorted(samples.items()):
        v = sorted(v)
        ax.step(v, [(i + 1) / len(v) for i in range(len(v))], where="post",
                label=f"via {p} (n={len(v)})")
    ax.set_xlabel("throughput (Mb/s, 0.1 s samples)")
    ax.set_ylabel("CDF")
    ax.set_title("per-path throughput (path = hop-2 responder of the flow's probes)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return [save(fig, pdir, "noobprobe_paths_cdf.png")]
