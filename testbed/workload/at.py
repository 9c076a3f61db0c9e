"""at: start a command at an absolute CLOCK_MONOTONIC time, in its own process.

Pre-spawned before the point's clock starts, it reads its deadline (ns) from stdin,
sleeps until then (real-time for the wake-up: realtime()), writes the moment it woke to
--stamp, and execs the command (same PID) with normal scheduling. Starting on time thus depends on no other process: a runner busy reading BPF ring
buffers cannot delay a flow's start.

usage: python -m testbed.workload.at --stamp FILE -- iperf3 -c …   (deadline on stdin)
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time
from typing import Iterator

PR_SET_TIMERSLACK = 29


def _timer_slack_ns(ns: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def realtime() -> Iterator[bool]:
    """SCHED_FIFO (priority 1) for the block: the wake-up at a release and the first
    send. N processes released at one instant on a busy 2-core machine otherwise wait
    for the CPU behind each other and everything else (16 warm incast senders: 1.7-5.2
    ms apart with a spin-wait, 3-12 ms with a plain sleep, 1.4-1.5 ms like this). Bounded:
    a sleep and one syscall, never a whole transfer or an exec'd tool. Yields False (and
    changes nothing) where real-time scheduling is refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def sleep_until(deadline_ns: int) -> int:
    """Sleep, then spin the last half millisecond; returns the wake time (ns).
    Real-time (see realtime()), the timer fires with 1 ns of slack and no spin is needed:
    a spinning process would hold its CPU from the others released at the same instant."""
    if os.sched_getscheduler(0) == os.SCHED_FIFO:
        _timer_slack_ns(1)
        while (left := deadline_ns - time.monotonic_ns()) > 0:
            time.sleep(left / 1e9)   # clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)
        return time.monotonic_ns()
    while True:
        left = deadline_ns - time.monotonic_ns()
        if left <= 500_000:
            break
        time.sleep((left - 500_000) / 1e9)
    while (now := time.monotonic_ns()) < deadline_ns:
        pass
    return now


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stamp", required=True, help="file that receives the start time (ns)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    line = sys.stdin.readline().strip()
    if not line:
        return 0  # cancelled before its time: nothing to run
    with realtime():   # back to normal scheduling before the command runs
        now = sleep_until(int(line))
    with open(a.stamp, "w") as f:
        f.write(f"{now}\n")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
