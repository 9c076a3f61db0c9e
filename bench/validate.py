"""`python -m testbed validate` on every shipped experiment and topology, and on a
256-host leaf-spine swept over 10 points: what the check costs beside what parsing costs.

Baseline, same run: the file only read and parsed (`config.yamlsrc.load_source`, the
bounded reader), in-process; and the interpreter's start-up with the loader imported
(`python -c "import testbed.config.load"`). Measured: the whole check in-process
(validate_file, after one warm-up call) and the CLI's wall time. Medians of --rounds.
Goal: the CLI well under a second per file on a quiet machine (it is mostly start-up).

usage: python bench/validate.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.preflight import validate_file
from testbed.config.yamlsrc import load_source

REPO = Path(__file__).resolve().parents[1]
BIG = """name: big
duration: 2
topology: {builtin: leafspine, leaves: 8, spines: 2, hosts_per_leaf: 32}
workload:
  flows:
    - {src: h1, dst: h256}
sweep:
  cc: [cubic, reno, bbr, cubic, reno, bbr, cubic, reno, bbr, cubic]
"""


def _median(fn, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "leafspine256x10.yaml"
        big.write_text(BIG)
        files = sorted(glob.glob(str(REPO / "experiments/*.yaml"))) + \
            sorted(glob.glob(str(REPO / "topologies/*.yaml"))) + [str(big)]
        start = _median(lambda: subprocess.run(
            [sys.executable, "-c", "import testbed.config.load"], check=True), a.rounds)
        print(f"start-up with the loader imported: {start * 1e3:.0f} ms (baseline of the CLI)")
        print(f"{'file':40} {'parse ms':>9} {'check ms':>9} {'×parse':>7} {'CLI ms':>8} "
              f"{'×start-up':>9}")
        for f in files:
            validate_file(f)   # warm-up: imports, plug-in registry
            parse = _median(lambda: load_source(f), a.rounds)
            check = _median(lambda: validate_file(f), a.rounds)
            cli = _median(lambda: subprocess.run(
                [sys.executable, "-m", "testbed", "validate", f], capture_output=True,
                check=True), a.rounds)
            name = Path(f).relative_to(REPO) if f.startswith(str(REPO)) else Path(f).name
            print(f"{str(name):40} {parse * 1e3:9.1f} {check * 1e3:9.1f} "
                  f"{check / parse:7.0f} {cli * 1e3:8.0f} {cli / start:9.2f}")


if __name__ == "__main__":
    main()
