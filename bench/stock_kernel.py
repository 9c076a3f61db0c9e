"""netem / AQM / fq accuracy on a stock kernel, measured in the stock-kernel VM.

Boots `python -m testbed vm` once per kernel, runs the in-guest checks of
tests/guest/test_stock_kernel_guest.py (real namespaces, netem, iperf3, ping, tcpdump) and
prints what they measured next to what was configured: RTT against 2 × delay, echo loss
against 1 − (1 − p)², throughput against the shaped rate, CE marks on the wire against the
qdisc's own count. Ratios are measured / configured in the same boot.

usage: python bench/stock_kernel.py [--kernel stable|backports|both] [-k PYTEST_EXPR]
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.vm import qemu  # noqa: E402

GUEST = "tests/guest/test_stock_kernel_guest.py"


def expected(name: str, kv: dict[str, float]) -> list[tuple[str, float, float]]:
    """(what, measured, configured) rows for one MEASURED line."""
    if m := re.match(r"delay_(\d+)ms", name):
        d = 2 * float(m.group(1))
        return [("RTT median / 2d", kv["rtt_median"], d), ("RTT p95 / 2d", kv["rtt_p95"], d),
                ("RTT min / 2d", kv["rtt_min"], d)]
    if name.startswith("jitter"):
        return [("RTT stdev / √2·j/√3", kv["stdev"], 2 ** 0.5 * 4 / 3 ** 0.5),
                ("RTT median / 2d", kv["rtt_median"], 40.0)]
    if name.startswith("loss"):
        return [("echo loss / 1−(1−p)²", kv["echo_loss"], kv["expected"])]
    if name.startswith("rate"):
        return [("iperf3 Mb/s / HTB rate", kv["mbps"], 10.0)]
    if name.startswith("fq_maxrate"):
        return [("iperf3 Mb/s / fq maxrate", kv["mbps"], 5.0)]
    if name.startswith("aqm_") and "ce_packets" in kv and kv.get("qdisc_marks"):
        return [("CE on wire / qdisc marks", kv["ce_packets"], kv["qdisc_marks"]),
                ("iperf3 Mb/s / HTB rate", kv["mbps"], 10.0)]
    if name.startswith("dctcp_vs_cubic"):
        return [("dctcp backlog / cubic's FIFO", kv["dctcp_backlog"], kv["cubic_backlog"] or 1)]
    return []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="stable", choices=["stable", "backports", "both"])
    ap.add_argument("-k", default="", help="pytest -k expression (default: all checks)")
    a = ap.parse_args()
    kernels = ["stable", "backports"] if a.kernel == "both" else [a.kernel]
    for k in kernels:
        buf = io.StringIO()
        t0 = time.monotonic()
        sel = f" -k {a.k!r}" if a.k else ""
        rc = qemu.run(f"python -m pytest -q -s -p no:cacheprovider {GUEST}{sel}",
                      qemu.VmOptions(kernel=k, quiet=True), stream=buf)
        secs = time.monotonic() - t0
        print(f"\n{k}: guest checks exit {rc}, boot + checks {secs:.0f} s")
        print(f"{'check':22} {'measure':28} {'measured':>10} {'configured':>10} {'ratio':>7}")
        for line in buf.getvalue().splitlines():
            m = re.match(r".*MEASURED (\S+) (.*)", line)
            if not m:
                continue
            kv = {}
            for part in m.group(2).split():
                key, _, val = part.partition("=")
                try:
                    kv[key] = float(val)
                except ValueError:
                    pass
            for what, got, want in expected(m.group(1), kv):
                print(f"{m.group(1):22} {what:28} {got:10.3f} {want:10.3f} "
                      f"{got / want if want else float('nan'):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
