"""Release spread of an incast: N senders let go at one instant, cold vs warm, same run.

Runs a real experiment (`python -m testbed run`): N burst senders → h0 through a
100 Mb/s, 100-packet bottleneck, 64 KB each at t = 0.5 s, swept over `warm: [false,
true]`, alternating repetitions. Per point, meta.json's schedule gives how far apart the
N releases fired (spread_ms), how far apart their first data segments left the senders
(sent_spread_ms: cold includes each handshake) and reached h0 (data_spread_ms: includes
the bottleneck's queue). Prints medians (and worst) per mode and the ratios warm / cold.
Goal: warm releases and first segments within a few ms of each other.

usage: python bench/release_spread.py [--senders 16] [--reps 4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EXP = """
name: bench_release_spread
scale: "100 Mb/s bottleneck, 100-packet FIFO, offloads off"
topology: {{builtin: incast, senders: {n}, bw: 1000, bottleneck_bw: 100,
           bottleneck_queue: 100, ipv6: false}}
hosts: {{offloads: off, quickack: true}}
duration: 1.5
cc: cubic
workload:
  incast:
    - {{name: incast, senders: h1..h{n}, dst: h0, start: 0.5, bytes: 64KB, warm: true}}
instruments: {{flows: {{}}}}
repetitions: {reps}
sweep: {{workload.incast.0.warm: [false, true]}}
"""
KEYS = ("spread_ms", "sent_spread_ms", "data_spread_ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--reps", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "exp.yaml"
        exp.write_text(EXP.format(n=a.senders, reps=a.reps))
        out = Path(tmp) / "res"
        r = subprocess.run([sys.executable, "-m", "testbed", "run", str(exp), "--out",
                            str(out), "-q"], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        got: dict[str, dict[str, list[float]]] = {}
        syns: dict[str, int] = {}
        for p in sorted(out.glob("*rep=*")):
            mode = "warm" if "warm=True" in p.name else "cold"
            meta = json.loads((p / "meta.json").read_text())
            ev = next(e for e in meta["schedule"] if e["at"] == 0.5)
            for k in KEYS:
                if k in ev:
                    got.setdefault(mode, {}).setdefault(k, []).append(ev[k])
            syns[mode] = syns.get(mode, 0) + sum(c["TCPSynRetrans"] for c in
                                                 meta["tcp_counters"].values())
    print(f"{a.senders} senders, {a.reps} repetitions per mode (ms: median, worst)")
    print(f"{'':6}" + "".join(f"{k:>22}" for k in KEYS) + f"{'SYN retransmits':>18}")
    for mode in ("cold", "warm"):
        cells = "".join(f"{statistics.median(v):>14.2f} {max(v):>7.2f}"
                        for v in (got[mode].get(k, [float('nan')]) for k in KEYS))
        print(f"{mode:6}{cells}{syns.get(mode, 0):>18}")
    print("ratio warm/cold (medians): " + ", ".join(
        f"{k} {statistics.median(got['warm'][k]) / statistics.median(got['cold'][k]):.2f}"
        for k in KEYS if got["warm"].get(k) and got["cold"].get(k)
        and statistics.median(got["cold"][k])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
