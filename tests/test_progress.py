"""Progress as a user sees it: phase timings and ETAs in the logs (-v), and a live bar
that keeps out of Mininet's CLI (--cli, on a terminal)."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from testbed.progress import FIRST_OVERHEAD_S, Eta

pytestmark = pytest.mark.needs_root
REPO = Path(__file__).resolve().parents[1]

EXP = """\
name: progress
topology: {builtin: dumbbell, pairs: 1, bw: 1000, bottleneck_bw: 50, ipv6: false}
duration: 1
workload:
  flows:
    - {name: a, src: h1, dst: h2, start: 0, duration: 1}
"""


def test_eta_counts_the_points_to_come():
    eta = Eta([1.5, 1.5, 3.0])
    eta.start_point(0)
    point, sweep = eta.left()
    assert point == pytest.approx(1.5 + FIRST_OVERHEAD_S, abs=0.1)
    assert sweep == pytest.approx(6.0 + 3 * FIRST_OVERHEAD_S, abs=0.1)


def test_verbose_lines_give_phase_timings_and_eta(write, tmp_path):
    r = run_cli("run", str(write("p.yaml", EXP)), "--out", str(tmp_path / "res"), "-v",
                "--set", "sweep.duration=[1,1.5]", timeout=180)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    for i, point in ((1, "duration=1"), (2, "duration=1.5")):
        for ph in ("bring-up", "instruments", "workload: preparing", "workload", "collect"):
            assert re.search(rf"^\[{i}/2\] {re.escape(point)}: {ph} took [\d.]+ s$", err, re.M), \
                (ph, err)
        assert re.search(rf"^\[{i}/2\] {re.escape(point)}: ok in [\d.]+ s$", err, re.M), err
    took = float(re.search(r"duration=1.5: workload took ([\d.]+) s", err).group(1))
    assert 1.5 <= took < 4, err       # the workload's clock, not the preparation
    # the sweep's ETA: the first line counts both points, the second point only itself
    etas = [(int(i), int(m) * 60 + int(s)) for i, m, s in
            re.findall(r"^\[(\d)/2\] .*sweep ~(\d+):(\d\d) left\)$", err, re.M)]
    first = next(s for i, s in etas if i == 1)
    second = next(s for i, s in etas if i == 2)
    assert first >= 1 + 1.5 + 2 * FIRST_OVERHEAD_S - 1 and second < first, etas


def _read(fd: int, seconds: float, until: bytes | None = None) -> bytes:
    buf, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            buf += chunk
            if until and until in buf:
                break
    return buf


def test_cli_holds_the_terminal_without_the_bar(write, tmp_path):
    """On a terminal the bar is live; at Mininet's prompt nothing else may draw (the bar
    used to redraw itself every 0.1 s into the prompt and the commands' output)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(write("p.yaml", EXP)),
                          "--out", str(tmp_path / "res"), "--cli"],
                         stdin=slave, stdout=slave, stderr=slave, cwd=REPO, close_fds=True,
                         env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
    os.close(slave)
    try:
        before = _read(master, 90, b"mininet> ")
        assert before.endswith(b"mininet> "), before[-500:]
        assert b"\x1b[2K" in before and b"left" in before   # the live bar ran before
        assert _read(master, 2.0) == b""                     # … and is silent at the prompt
        os.write(master, b"h1 ping -c1 h2\n")
        out = _read(master, 10, b"mininet> ")
        assert b"1 received" in out and b"\x1b[" not in out, out
        os.write(master, b"exit\n")
        rest = _read(master, 90, b"results: ")
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=30)
        os.close(master)
    assert p.returncode == 0, rest[-500:]
    assert b"1/1" in rest    # the bar came back for the workload and the end
