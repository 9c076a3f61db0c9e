"""at: start a command at an absolute CLOCK_MONOTONIC time, in its own process.

Pre-spawned before the point's clock starts, it reads its deadline (ns) from stdin,
sleeps until then, writes the moment it woke to --stamp, and execs the command (same
PID). Starting on time thus depends on no other process: a runner busy reading BPF ring
buffers cannot delay a flow's start.

usage: python -m testbed.workload.at --stamp FILE -- iperf3 -c …   (deadline on stdin)
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def sleep_until(deadline_ns: int) -> int:
    """Sleep, then spin the last half millisecond; returns the wake time (ns)."""
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
    now = sleep_until(int(line))
    with open(a.stamp, "w") as f:
        f.write(f"{now}\n")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
