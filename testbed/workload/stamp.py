"""stamp: prefix every line of stdin with CLOCK_MONOTONIC ns, into a file.

iperf3 (3.12) reports interval times relative to its own test start, which comes a
variable time after the process starts (up to a second on a loaded machine), and its
JSON arrives only at the end. Its text output, flushed per interval, stamped here as it
arrives, puts every receiver-side interval on the testbed's clock.

usage: iperf3 -s --forceflush … | python -m testbed.workload.stamp -o FILE
"""
from __future__ import annotations

import argparse
import signal
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(a.out, "w", buffering=1) as f:
        for line in sys.stdin:
            f.write(f"{time.monotonic_ns()} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
