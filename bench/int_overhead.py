#!/usr/bin/env python3
"""TCP-INT overhead: one-flow TCP throughput through one kernel switch, same run, as ratios.

h1 - s1 - h2, unshaped links (the CPU, not a link, limits the flow, so every cost shows).
The sender's TSO/GSO are off, so MTU-sized packets cross the switch and the receiver's GRO
has something to merge (veth passes GSO packets whole otherwise). Configurations, measured
alternately `--reps` times each, for GRO on and off at the receiver (the "tagging ratio ×
GRO" figure T1 of the Third Eye paper):
  plain    the bridge, no program at all                       (the baseline: ratio 1)
  int-off  switch program on every port, hosts send no option  (cost of the switch hook)
  int-1    hosts tag every segment, switches stamp each        (full TCP-INT)
  int-16   hosts tag 1 in 16 segments                          (sampled TCP-INT)
  int-1-nostamp  hosts tag every segment, switches stamp 1 in 255 (host-side cost alone)
Goal: int-* ≥ 0.9 × plain. Ratios are taken within each round (configurations run back
to back), then the median over rounds: the machine is shared and drifts.

    python bench/int_overhead.py                   # 2 s flows, 5 rounds
    python bench/int_overhead.py --seconds 2 --reps 2 --gro on
    python bench/int_overhead.py --csv rows.csv --plot t1.png
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.network.tcpint import IntOptions, TcpInt  # noqa: E402
from testbed.testing import running_network  # noqa: E402

CONFIGS = {
    "plain": None,
    "int-off": IntOptions(enabled=True, hosts=[]),
    "int-1": IntOptions(enabled=True, tag_every=1),
    "int-16": IntOptions(enabled=True, tag_every=16),
    # hosts tag every segment, switches stamp ~none: splits host cost from switch cost
    "int-1-nostamp": IntOptions(enabled=True, tag_every=1, switch_tag_every=255),
}
TOPO = {"ipv6": False, "hosts": {"h1": None, "h2": None}, "switches": {"s1": None},
        "links": [{"ends": ["h1", "s1"]}, {"ends": ["s1", "h2"]}]}


def flow(net, seconds: int, port: int) -> float:
    """Mb/s received by one iperf3 flow h1 → h2."""
    srv = net["h2"].popen(["iperf3", "-s", "-1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while f":{port} " not in net["h2"].cmd("ss -ltnH"):
        if time.monotonic() > deadline:
            raise RuntimeError("iperf3 server did not listen")
        time.sleep(0.05)
    out = net["h1"].cmd(f"iperf3 -c {net.ip('h2')} -p {port} -t {seconds} -J")
    srv.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[15:]))
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gro", choices=["on", "off", "both"], default="both")
    ap.add_argument("--csv", type=Path, help="write every measurement here")
    ap.add_argument("--plot", type=Path, help="write the T1 bar chart (PNG) here")
    a = ap.parse_args()
    TcpInt.check()
    gros = ["on", "off"] if a.gro == "both" else [a.gro]
    rows = []
    port = 5300
    with running_network(TOPO) as net:
        net.run("h1", "ethtool -K h1-eth0 tso off gso off")
        for gro in gros:
            net.run("h2", f"ethtool -K h2-eth0 gro {gro}")
            for rep in range(a.reps):
                for name, opts in CONFIGS.items():
                    ti = TcpInt(opts, net).start() if opts else None
                    try:
                        port += 1
                        mbps = flow(net, a.seconds, port)
                        tagged = stamped = 0
                        if ti:
                            ports = ti.port_states()
                            stamped = sum(p["n_stamped"] for p in ports)
                            tagged = sum(p["n_tagged"] for p in ports)
                    finally:
                        if ti:
                            ti.stop()
                    rows.append({"gro": gro, "rep": rep, "config": name, "mbps": round(mbps, 1),
                                 "tagged_skbs": tagged, "stamped_skbs": stamped})
                    print(f"gro {gro:3} rep {rep} {name:13} {mbps:9.1f} Mb/s  "
                          f"tagged skbs at the switch {tagged}", file=sys.stderr)
    print(f"\n{'gro':4} {'config':13} {'median Mb/s':>12} {'ratio to plain':>15}")
    summary = {}
    by = {(r["gro"], r["rep"], r["config"]): r["mbps"] for r in rows}
    for gro in gros:
        for name in CONFIGS:
            med = statistics.median(by[(gro, k, name)] for k in range(a.reps))
            ratio = statistics.median(by[(gro, k, name)] / by[(gro, k, "plain")]
                                      for k in range(a.reps))
            summary[(gro, name)] = ratio
            goal = "" if name == "plain" else ("  ok (≥ 0.9)" if ratio >= 0.9
                                               else "  below the 0.9 goal")
            print(f"{gro:4} {name:13} {med:12.1f} {ratio:15.3f}{goal}")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.2))
        width = 0.8 / len(gros)
        for i, gro in enumerate(gros):
            xs = [j + i * width for j in range(len(CONFIGS))]
            ax.bar(xs, [summary[(gro, n)] for n in CONFIGS], width, label=f"GRO {gro}")
        ax.set_xticks([j + width * (len(gros) - 1) / 2 for j in range(len(CONFIGS))])
        ax.set_xticklabels(list(CONFIGS))
        ax.axhline(0.9, ls="--", color="grey", lw=1)
        ax.set_ylabel("throughput / plain bridge (same GRO)")
        ax.set_title(f"TCP-INT tagging × GRO: 1 flow, 1 kernel switch\n"
                     f"(unshaped veth, sender TSO/GSO off, {a.seconds} s × {a.reps} rounds)",
                     fontsize=10)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
