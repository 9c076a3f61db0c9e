#!/usr/bin/env python3
"""TCP-INT overhead: one-flow TCP throughput through one kernel switch, same run, as ratios.

h1 - s1 - h2, unshaped links (the CPU, not a link, limits the flow, so every cost shows).
Three modes of the hosts' offloads:
  tso-on         the hosts' default: TCP hands 64 KB GSO packets down, veth passes them
                 whole, so the host programs run and the switch stamps once per 64 KB
  tso-off/gro-on   the sender's TSO/GSO off: MTU-sized segments cross the switch, each
  tso-off/gro-off  one tagged and stamped, and the receiver's GRO (on or off) has something
                 to merge — the "tagging ratio × GRO" figure T1 of the Third Eye paper
Configurations, measured alternately `--reps` times each in every mode:
  plain    the bridge, no program at all                       (the baseline: ratio 1)
  int-off  switch program on every port, hosts send no option  (cost of the switch hook)
  int-1    hosts tag every segment, switches stamp each        (full TCP-INT)
  int-16   hosts tag 1 in 16 segments                          (sampled TCP-INT)
  int-1-nostamp  hosts tag every segment, switches stamp 1 in 255 (host-side cost alone)
  int-1-probe    int-1 with the switch reading the qdisc by bpf_probe_read_kernel, the way
                 it must before 6.2 (no kfunc bpf_cast_to_kern_ctx): its cost against int-1
Besides throughput, the switch program's mean run time (kernel BPF stats, enabled for
the run) per configuration: the per-packet price of each way of reading the qdisc.
Goal: int-* ≥ 0.9 × plain. Ratios are taken within each round (configurations run back
to back), then the median over rounds: the machine drifts.

Receive steering: by default every interface's RPS sends all packet processing to CPU 0
and both iperf3 ends run on CPU 1 (where the scheduler put them, throughput swung between
7.6 and 13.8 Gb/s from round to round with TSO on). Without it a flow's packets are processed
on whichever CPU sent them — TCP transmits from the app's CPU and from the CPU that
handled an ACK — so the emulated path reorders: the plain bridge then already shows
~1200 spurious fast retransmits in 3 s (DSACKs), and INT's extra per-packet work makes
the reordering, the retransmits and the idle time worse (0.64-0.70 instead of the CPU
cost alone). `--no-rps` measures that case.

    python bench/int_overhead.py                   # 2 s flows, 5 rounds, all modes
    python bench/int_overhead.py --seconds 2 --reps 2 --mode tso-off/gro-on
    python bench/int_overhead.py --csv rows.csv --plot t1.png
    python bench/int_overhead.py --from-csv rows.csv --plot t1.png   # redraw only
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.network.tcpint import IntOptions, TcpInt  # noqa: E402
from testbed.testing import running_network  # noqa: E402

# name → (options, how the switch reads the qdisc: None = the kernel's best)
CONFIGS = {
    "plain": (None, None),
    "int-off": (IntOptions(enabled=True, hosts=[]), None),
    "int-1": (IntOptions(enabled=True, host_tag_every=1), None),
    "int-16": (IntOptions(enabled=True, host_tag_every=16), None),
    # hosts tag every segment, switches stamp ~none: splits host cost from switch cost
    "int-1-nostamp": (IntOptions(enabled=True, host_tag_every=1, switch_tag_every=255), None),
    "int-1-probe": (IntOptions(enabled=True, host_tag_every=1), "probe-read"),
}
TOPO = {"ipv6": False, "hosts": {"h1": None, "h2": None}, "switches": {"s1": None},
        "links": [{"ends": ["h1", "s1"]}, {"ends": ["s1", "h2"]}]}


def flow(net, seconds: int, port: int, pin: str = "", cc: str = "cubic") -> tuple[float, int]:
    """(Mb/s received, segments retransmitted) of one iperf3 flow h1 → h2; both ends on
    CPU `pin` if given."""
    cpu = ["taskset", "-c", pin] if pin else []
    srv = net["h2"].popen([*cpu, "iperf3", "-s", "-1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while f":{port} " not in net["h2"].cmd("ss -ltnH"):
        if time.monotonic() > deadline:
            raise RuntimeError("iperf3 server did not listen")
        time.sleep(0.05)
    out = net["h1"].cmd(f"{' '.join(cpu)} iperf3 -c {net.ip('h2')} -p {port} -t {seconds} "
                     f"-C {cc} -J")
    srv.wait(timeout=10)
    end = json.loads(out)["end"]
    return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits", 0)


MODES = {"tso-on": ("on", "on"), "tso-off/gro-on": ("off", "on"),
         "tso-off/gro-off": ("off", "off")}     # mode → (sender TSO/GSO, receiver GRO)


def switch_ns_per_run(ti: TcpInt) -> float:
    """Mean run time of the switch program so far (BPF stats must be on)."""
    j = json.loads(subprocess.run(["bpftool", "prog", "show", "pinned",
                                   str(ti.tracker.pin_dir() / "tcp_int_switch"), "--json"],
                                  capture_output=True, text=True, check=True).stdout)
    return j.get("run_time_ns", 0) / max(j.get("run_cnt", 0), 1)


def measure(a, modes: list[str]) -> list[dict]:
    """Every (mode, round, configuration) flow, configurations back to back in a round."""
    import ctypes
    rows = []
    port = 5300
    # run-time statistics of BPF programs while this fd is open (BPF_STATS_RUN_TIME)
    stats_fd = ctypes.CDLL("libbpf.so.1").bpf_enable_stats(0)
    with running_network(TOPO) as net:
        if a.rps:
            for node in ("h1", "s1", "h2"):
                net.run(node, "for f in /sys/class/net/*/queues/rx-*/rps_cpus; "
                              "do echo 1 > $f; done")
        for mode in modes:
            tso, gro = MODES[mode]
            net.run("h1", f"ethtool -K h1-eth0 tso {tso} gso {tso}")
            net.run("h2", f"ethtool -K h2-eth0 gro {gro}")
            for rep in range(a.reps):
                for name, (opts, qdisc) in CONFIGS.items():
                    ti = TcpInt(opts, net, qdisc=qdisc).start() if opts else None
                    try:
                        port += 1
                        mbps, retr = flow(net, a.seconds, port, "1" if a.rps else "", a.cc)
                        tagged = stamped = 0
                        ns = 0.0
                        if ti:
                            ports = ti.port_states()
                            stamped = sum(p["n_stamped"] for p in ports)
                            tagged = sum(p["n_tagged"] for p in ports)
                            ns = switch_ns_per_run(ti) if stats_fd >= 0 else 0.0
                    finally:
                        if ti:
                            ti.stop()
                    rows.append({"mode": mode, "rep": rep, "config": name,
                                 "mbps": round(mbps, 1), "retransmits": retr,
                                 "tagged_skbs": tagged,
                                 "stamped_skbs": stamped, "switch_ns": round(ns)})
                    print(f"{mode:15} rep {rep} {name:13} {mbps:9.1f} Mb/s  {retr:5d} retransmits"
                          f"  tagged skbs at the switch {tagged}  {ns:4.0f} ns/run",
                          file=sys.stderr)
    if stats_fd >= 0:
        os.close(stats_fd)
    return rows


def summarize(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float, float, float]]:
    """(mode, config) → (median Mb/s, median per-round ratio to plain, its p25, its p75).
    The spread matters: a CPU-bound flow's rate swings with how the two cores share the
    work (TSO on: the plain bridge did 14-24 Gb/s from round to round)."""
    by = {(r["mode"], int(r["rep"]), r["config"]): float(r["mbps"]) for r in rows}
    out = {}
    for mode, rep, name in by:
        if (mode, name) in out:
            continue
        reps = sorted({k for (m, k, _) in by if m == mode})
        per_round = [by[(mode, k, name)] / by[(mode, k, "plain")] for k in reps]
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else [per_round[0]] * 3
        out[(mode, name)] = (statistics.median(by[(mode, k, name)] for k in reps),
                             statistics.median(per_round), q[0], q[2])
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(m for m, _ in summary))
    names = [n for n in CONFIGS if all((m, n) in summary for m in modes)]  # older CSVs
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs = [j + i * width for j in range(len(names))]
        med = [summary[(mode, n)][1] for n in names]
        err = [[m - summary[(mode, n)][2] for m, n in zip(med, names)],
               [summary[(mode, n)][3] - m for m, n in zip(med, names)]]
        ax.bar(xs, med, width, yerr=err, capsize=2, label=mode,
               error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names)
    ax.axhline(0.9, ls="--", color="grey", lw=1)
    ax.set_ylabel("throughput / plain bridge (same mode)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1.4)
    ax.legend(ncol=len(modes), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(l for l in __doc__.splitlines()
                                                   if "python bench/" in l))
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mode", choices=[*MODES, "all"], default="all")
    ap.add_argument("--cc", default="cubic",
                    help="the flows' CC (named: a namespace would inherit the machine's)")
    ap.add_argument("--no-rps", dest="rps", action="store_false",
                    help="leave packet processing on the sending CPU (reorders)")
    ap.add_argument("--csv", type=Path, help="write every measurement here")
    ap.add_argument("--from-csv", type=Path, metavar="CSV",
                    help="measure nothing: summarize (and --plot) an earlier --csv")
    ap.add_argument("--plot", type=Path, help="write the T1 bar chart (PNG) here")
    a = ap.parse_args()
    if a.from_csv:
        with open(a.from_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        reps = len({r["rep"] for r in rows})
        header = f"{a.from_csv}: {reps} rounds"
    else:
        TcpInt.check()
        rows = measure(a, list(MODES) if a.mode == "all" else [a.mode])
        reps = a.reps
        header = f"cc {a.cc}, {a.reps} rounds of {a.seconds} s, RPS {'on' if a.rps else 'off'}"
        if a.csv:
            with open(a.csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    summary = summarize(rows)
    print(f"\n{header}")
    print(f"{'mode':15} {'config':13} {'median Mb/s':>12} {'ratio to plain':>15} "
          f"{'rounds p25-p75':>15}")
    for (mode, name), (med, ratio, p25, p75) in summary.items():
        goal = "" if name == "plain" else ("  ok (≥ 0.9)" if ratio >= 0.9
                                           else "  below the 0.9 goal")
        ns = [float(r.get("switch_ns") or 0) for r in rows
              if r["mode"] == mode and r["config"] == name]
        ns_txt = f"  switch {statistics.median(ns):4.0f} ns/run" if any(ns) else ""
        print(f"{mode:15} {name:13} {med:12.1f} {ratio:15.3f} {p25:7.2f}-{p75:<7.2f}{goal}"
              f"{ns_txt}")
    by = {(r["mode"], r["rep"], r["config"]): float(r["mbps"]) for r in rows}
    for mode in dict.fromkeys(m for m, _ in summary):
        per_round = [by[(m, k, "int-1-probe")] / by[(m, k, "int-1")]
                     for (m, k, n) in by if m == mode and n == "int-1"
                     and (m, k, "int-1-probe") in by]
        if per_round:
            print(f"{mode:15} int-1-probe / int-1 (qdisc by bpf_probe_read_kernel, as before "
                  f"6.2): median {statistics.median(per_round):.3f} over {len(per_round)} rounds")
    if a.plot:
        plot(summary, a.plot, "TCP-INT tagging × offloads: 1 flow, 1 kernel switch\n"
             f"(unshaped veth, {reps} rounds, median and 25th-75th percentile of the "
             "per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
