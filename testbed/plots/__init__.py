"""Plots from a results bundle (matplotlib, PNG), one function per figure type.

- timeseries.throughput_queue: per point, throughput per flow and the bottleneck's egress
  rate (left axis) with its queue length (right axis) over time: the PowerTCP incast
  figure's style.
- timeseries.panels: every point of a run side by side on one queue scale (the paper's
  per-CC panels).
- summary.sweep_summary: across the points of a run.
Other figure types (INT trace, per-hop latency, …) register with @plotter and are drawn
for every point whose CSVs they find.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")

PLOTTERS: list[Callable[[Path], list[Path]]] = []


def plotter(fn: Callable[[Path], list[Path]]) -> Callable[[Path], list[Path]]:
    """Register fn(point_dir) → written PNGs (it returns [] when its CSV is absent)."""
    PLOTTERS.append(fn)
    return fn


def save(fig, pdir: Path, name: str, dpi: int = 120) -> Path:
    """Write a point's figure to <point>/plots/<name> and free it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    out = Path(pdir) / "plots" / name
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def point_plots(pdir: Path) -> list[Path]:
    import importlib
    import pkgutil

    from .. import instruments
    from . import timeseries
    for m in pkgutil.iter_modules(__path__):  # figure modules register themselves
        importlib.import_module(f"{__name__}.{m.name}")
    for m in pkgutil.iter_modules(instruments.__path__):  # instruments may add figures
        importlib.import_module(f"{instruments.__name__}.{m.name}")
    out = timeseries.throughput_queue(pdir)
    for fn in PLOTTERS:
        out += fn(pdir)
    return out


def run_summary(run_dir: Path) -> list[Path]:
    from .summary import sweep_summary
    from .timeseries import panels
    return sweep_summary(run_dir) + panels(run_dir)
