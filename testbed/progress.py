"""What a run shows while it runs: which point, which phase, how long until the point and
the sweep end.

Modes: "bar" (rich, on a terminal), "lines" (one line per phase, the workload's clock every
5 s: logs and CI), "off" (-q). With verbose (`run -v`) every phase's duration is printed
as it ends, and each point's total.

ETA: a point is expected to take its workload (duration + settle) plus the overhead
(bring-up, instruments, collect, plots) measured on the points finished so far (3 s
before the first one ends); the sweep's ETA adds the points still to come.

`paused()` stops the display while something else owns the terminal (Mininet's CLI):
a live bar keeps redrawing, into the CLI's prompt and output.

Classes: Display.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, Literal

FIRST_OVERHEAD_S = 3.0


def _fmt(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class Eta:
    def __init__(self, workloads: list[float]):
        self.workloads = workloads            # per point: duration + settle (s)
        self.overheads: list[float] = []
        self.i = 0
        self.point_t0 = time.monotonic()

    def start_point(self, i: int) -> None:
        self.i, self.point_t0 = i, time.monotonic()

    def end_point(self, skipped: bool = False) -> float:
        took = time.monotonic() - self.point_t0
        if not skipped:
            self.overheads.append(max(0.0, took - self.workloads[self.i]))
        return took

    def expected(self, i: int) -> float:
        oh = sum(self.overheads) / len(self.overheads) if self.overheads else FIRST_OVERHEAD_S
        return self.workloads[i] + oh

    def left(self) -> tuple[float, float]:
        """(s left in the current point, s left in the sweep)"""
        point = max(0.0, self.expected(self.i) - (time.monotonic() - self.point_t0))
        return point, point + sum(self.expected(j) for j in range(self.i + 1,
                                                                     len(self.workloads)))

    def text(self) -> str:
        p, s = self.left()
        return f"point ~{_fmt(p)} left · sweep ~{_fmt(s)} left"


class Display:
    """Context manager; call phase(i, name, phase) as a point moves on, point_done(...) when
    it ends."""

    def __init__(self, title: str, workloads: list[float],
                 mode: Literal["bar", "lines", "off"] = "bar", verbose: bool = False):
        self.title, self.mode, self.verbose = title, mode, verbose
        self.n = len(workloads)
        self.eta = Eta(workloads)
        self._phase: tuple[str, float] | None = None
        self._point = -1
        self._last_line = 0.0
        self.prog = None

    # -- output -------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.prog is not None:
            self.prog.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def __enter__(self) -> "Display":
        if self.mode == "bar":
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                                       TextColumn, TimeElapsedColumn)
            from rich.text import Text
            eta = self.eta

            class EtaColumn(ProgressColumn):
                def render(self, task) -> Text:   # evaluated at every refresh: a countdown
                    return Text(eta.text() if not task.finished else "", style="cyan")
            self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[phase]}"),
                                 TimeElapsedColumn(), EtaColumn(), transient=False)
            self.prog.start()
            self.task = self.prog.add_task(self.title, total=self.n, phase="")
        return self

    def __exit__(self, *exc) -> None:
        if self.prog is not None:
            if exc[0] is None:
                self.prog.update(self.task, completed=self.n, phase="done")
            self.prog.stop()
            self.prog = None

    # -- events -------------------------------------------------------------------
    def phase(self, i: int, point: str, phase: str) -> None:
        if i != self._point:
            self._point = i
            self._phase = None
            self.eta.start_point(i)
        tick = phase.startswith("t=")
        if not tick or (self._phase and self._phase[0] != "workload"):
            # the workload's clock ticks are one phase: "workload"
            self._end_phase(i, point)
            self._phase = ("workload" if tick else phase, time.monotonic())
        if self.mode == "bar":
            self.prog.update(self.task, completed=i, phase=f"{point}: {phase}")
        elif self.mode == "lines":
            # logs get each phase, and the workload's clock every 5 s (not 10 lines/s)
            if tick and time.monotonic() - self._last_line < 5:
                return
            self._last_line = time.monotonic()
            self._print(f"[{i + 1}/{self.n}] {point}: {phase} ({self.eta.text()})")

    def _end_phase(self, i: int, point: str) -> None:
        if self._phase and self.verbose and self.mode != "off":
            name, t0 = self._phase
            self._print(f"[{i + 1}/{self.n}] {point}: {name} took {time.monotonic() - t0:.2f} s")
        self._phase = None

    def point_done(self, i: int, point: str, status: str, skipped: bool = False) -> None:
        if i != self._point:   # a point that never reported a phase (resumed)
            self._point = i
            self.eta.start_point(i)
        self._end_phase(i, point)
        took = self.eta.end_point(skipped)
        if self.verbose and self.mode != "off":
            self._print(f"[{i + 1}/{self.n}] {point}: {status} in {took:.2f} s")
        if self.mode == "bar":
            self.prog.update(self.task, completed=i + 1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No drawing while the block runs (a live bar would draw into its terminal)."""
        if self.prog is None:
            yield
            return
        self.prog.stop()
        try:
            yield
        finally:
            self.prog.start()
