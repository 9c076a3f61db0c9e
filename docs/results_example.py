"""Two runs, one figure: the bottleneck queue's distribution (CDF), one line per run and
sweep point, from the tidy tables of testbed.results (no notebook needed).

    python docs/results_example.py results/tiny/RUN_A results/tiny/RUN_B -o queue_cdf.png

Each run's `queue` table holds every point's queue.csv with the sweep values and the
repetition as columns; the bottleneck is the port that sent the most bytes.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from testbed.results import load  # noqa: E402


def bottleneck(q):
    port = q.node + ":" + q.iface
    sent = q.groupby(port).sent_bytes.agg(lambda s: s.max() - s.min())
    return q[port == sent.idxmax()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs=2, metavar="RUN")
    ap.add_argument("-o", "--output", default="queue_cdf.png")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4))
    for path in a.runs:
        run = load(path)
        q = bottleneck(run.queue)
        q = q[q.time >= 0]                        # the workload's clock starts at 0
        by = [c for c in run.params] or ["rep"]    # one line per sweep point
        for key, g in q.groupby(by):
            v = np.sort(g.backlog_bytes.to_numpy() / 1e3)
            label = f"{run.dir.name} {', '.join(map(str, np.atleast_1d(key)))}"
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label)
        print(f"{path}: {len(run.points)} points, {len(q)} queue samples, "
              f"p99 {q.backlog_bytes.quantile(0.99) / 1e3:.1f} KB")
    ax.set_xlabel("bottleneck queue (KB)")
    ax.set_ylabel("fraction of samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    print(a.output)


if __name__ == "__main__":
    main()
