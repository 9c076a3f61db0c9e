#!/usr/bin/env python3
"""Our PowerTCP / θ-PowerTCP beside the authors' public eBPF PowerTCP, same harness, as ratios.

The reference is inet-tub/powertcp-linux (`bpf_rttpowertcp`, `bpf_powertcp`), built outside
this repository (docs/powertcp.md, "Side by side with the public reference", says where
and with which edits). Found at $POWERTCP_LINUX or /opt/powertcp-linux (its loader
`bpf/powertcp`); where absent the bench says why and exits 0 having started nothing.

Per cell of the grid senders × bottleneck Mb/s × τ µs: N long flows h1…hN → h0 through one
switch s1 whose port s1→h0 is the bottleneck (100-packet FIFO, offloads off, quick ACKs,
TCP-INT on for every CC so the CPU load is the same), all starting at 0 for `--seconds`.
Both implementations get the same parameters: τ = base_rtt, host_bw = hop_bw = the
bottleneck rate, their default γ and expected_flows (10). Each round runs every CC once,
back to back, in an order that alternates from round to round (the machine drifts);
a cell's figure is the median over rounds.

Per run, over the common window [--warmup, end − 0.2 s]: goodput (receiver side, % of the
link), bottleneck queue p50/p99 (packets of 1514 B), drops at the bottleneck, retransmits
(sum over flows), Jain's index of the flows' mean rates, convergence time (the first
instant from which Jain's index over every later 0.5 s window stays ≥ 0.95).
Printed per cell: each CC's figures and ours/ref ratios (queue and retransmits: lower is
better; goodput: higher). The reference's INT variant reads TCP-INT's state in the public
tool's map layout (pinned at /sys/fs/bpf/tcp-int), which our TCP-INT does not produce, so
`bpf_powertcp` runs blind here (a fixed window host_bw·τ): our INT PowerTCP is compared
against the reference's θ-PowerTCP, the reference's only law that runs on this testbed.

    python bench/cc_reference.py                         # the whole grid, 2 rounds
    python bench/cc_reference.py --cells 10x300x200 10x300x1000 --rounds 3
    python bench/cc_reference.py --csv rows.csv --plot docs/img/cc_reference.png
    python bench/cc_reference.py --from-csv rows.csv --plot fig.png   # redraw/reprint only
Run it under `flock /tmp/testbed-quiet.lock` (shared machine), in chunks of a few cells.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.claims import jain  # noqa: E402

REF_ENV = "POWERTCP_LINUX"
REF_DEFAULT = Path("/opt/powertcp-linux")
REF_CCS = ("bpf_rttpowertcp", "bpf_powertcp")
PAIRS = (("theta_powertcp", "bpf_rttpowertcp"), ("powertcp", "bpf_rttpowertcp"))
GRID = [(n, bw, tau) for n in (10, 2, 32) for bw in (300, 100) for tau in (200, 1000)]
PKT = 1514
FIELDS = ("cell", "senders", "bw", "tau", "round", "cc", "goodput", "q50", "q99", "drops",
          "retrans", "jain", "conv_s", "cpu_busy", "status")


def ref_loader() -> tuple[Path | None, str]:
    base = Path(os.environ.get(REF_ENV) or REF_DEFAULT)
    exe = base / "bpf" / "powertcp"
    if not exe.is_file() or not os.access(exe, os.X_OK):
        return None, (f"the reference's loader {exe} is not built (set {REF_ENV} or build "
                      f"inet-tub/powertcp-linux at {REF_DEFAULT}: docs/powertcp.md)")
    return exe, ""


def register_ref(exe: Path, bw: int, tau: int) -> None:
    """Register the reference with this cell's parameters (-f: unregister first). Its
    names may not be free at once after an unregister: retried for up to 3 s."""
    for _ in range(10):
        p = subprocess.run([str(exe), "-f", "register", f"base_rtt={tau}", f"host_bw={bw}",
                            f"hop_bw={bw}"], capture_output=True, text=True)
        if p.returncode == 0:
            return
        time.sleep(0.3)
    raise SystemExit(f"registering the reference failed: {p.stderr.strip()[-300:]}")


def unregister_ref(exe: Path) -> None:
    subprocess.run([str(exe), "unregister"], capture_output=True)


def experiment(n: int, bw: int, tau: int, seconds: float, ccs: list[str]) -> dict:
    params = {"base_rtt_us": tau, "host_bw_mbps": bw}
    return {
        "name": "cc_reference",
        "scale": f"emulated: {bw} Mb/s bottleneck, {n} senders, 100-packet FIFO, "
                 f"τ = {tau} µs, no propagation delay",
        "topology": {"builtin": "incast", "senders": n, "bw": 1000, "bottleneck_bw": bw,
                     "bottleneck_queue": 100, "ipv6": False},
        "hosts": {"offloads": False, "quickack": True},
        "duration": seconds,
        "cc": ccs[0],
        "congestion_control": {"powertcp": {**params, "hop_bw_mbps": bw},
                               "theta_powertcp": params},
        "int": {"enabled": True, "scale": "fine"},
        "workload": {"incast": [{"name": "f", "senders": f"h1..h{n}", "dst": "h0",
                                 "start": 0, "duration": seconds}]},
        "instruments": {"queue": {"interval": "500us", "ports": ["s1-eth0"]}, "flows": {}},
        "sweep": {"cc": ccs},
    }


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def measure(pdir: Path, bw: int, seconds: float, warmup: float) -> dict:
    """A point's figures over the common window [warmup, seconds − 0.2]."""
    import json

    t0, t1 = warmup, seconds - 0.2
    meta = json.loads((pdir / "meta.json").read_text()) if (pdir / "meta.json").exists() else {}
    out = {"status": meta.get("status", "?"),
           "cpu_busy": float(meta.get("cpu_busy_pct") or 0)}
    per: dict[str, list[tuple[float, float]]] = {}
    for r in _rows(pdir / "throughput.csv"):
        per.setdefault(r["flow"], []).append((float(r["time"]), float(r["bps"])))
    means = {}
    for f, s in per.items():
        v = [b for t, b in s if t0 <= t <= t1]
        means[f] = sum(v) / len(v) if v else 0.0
    out["goodput"] = 100 * sum(means.values()) / (bw * 1e6) if means else 0.0
    out["jain"] = jain(list(means.values())) if means else 0.0
    # convergence: first t from which every later 0.5 s window has Jain ≥ 0.95
    starts = np.arange(0.0, t1 - 0.5 + 1e-9, 0.1)
    ok = []
    for s0 in starts:
        m = []
        for s in per.values():
            v = [b for t, b in s if s0 < t <= s0 + 0.5]
            m.append(sum(v) / len(v) if v else 0.0)
        ok.append(bool(m) and jain(m) >= 0.95)
    conv = None
    for i in range(len(ok) - 1, -1, -1):
        if not ok[i]:
            conv = starts[i + 1] if i + 1 < len(starts) else None
            break
    else:
        conv = 0.0 if ok else None
    out["conv_s"] = conv if conv is not None else float("nan")
    q = [r for r in _rows(pdir / "queue.csv") if r["iface"] == "s1-eth0"]
    back = [float(r["backlog_bytes"]) / PKT for r in q if t0 <= float(r["time"]) <= t1]
    out["q50"] = float(np.percentile(back, 50)) if back else float("nan")
    out["q99"] = float(np.percentile(back, 99)) if back else float("nan")
    drops = [float(r["drops"]) for r in q]
    out["drops"] = drops[-1] - drops[0] if drops else float("nan")
    out["retrans"] = sum(float(r.get("retransmits") or 0) for r in _rows(pdir / "flows.csv"))
    return out


def run_cell(n: int, bw: int, tau: int, rnd: int, ccs: list[str], seconds: float,
             warmup: float, exe: Path, keep: Path | None) -> list[dict]:
    order = ccs if rnd % 2 == 0 else ccs[::-1]
    register_ref(exe, bw, tau)
    work = Path(tempfile.mkdtemp(prefix="tb-ccref-", dir=keep))
    exp = work / "exp.yaml"
    exp.write_text(yaml.safe_dump(experiment(n, bw, tau, seconds, order), sort_keys=False))
    res = work / "res"
    global _child
    _child = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(exp), "--out",
                               str(res), "-q"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _, err = _child.communicate()
    p = subprocess.CompletedProcess(_child.args, _child.returncode, "", err)
    _child = None
    rows = []
    cell = f"{n}x{bw}x{tau}"
    for cc in ccs:
        pdir = res / f"cc={cc}"
        m = measure(pdir, bw, seconds, warmup) if pdir.exists() else {"status": "missing"}
        rows.append({"cell": cell, "senders": n, "bw": bw, "tau": tau, "round": rnd, "cc": cc,
                     **{k: m.get(k, float("nan")) for k in FIELDS[6:]}})
    if p.returncode not in (0, 1):  # 1: a claim failed (default claims), data is there
        print(f"  run failed ({p.returncode}): {p.stderr.strip()[-400:]}", file=sys.stderr)
    if keep is None:
        subprocess.run(["rm", "-rf", str(work)])
    return rows


_child: subprocess.Popen | None = None


def _on_term(signum, _frame):
    """SIGTERM/SIGINT: the running point is stopped by its own runner (SIGTERM: it removes
    what it made), then the reference is unregistered (main's finally)."""
    if _child is not None and _child.poll() is None:
        _child.terminate()
        _child.wait(timeout=60)
    raise SystemExit(128 + signum)


def med(rows: list[dict], cc: str, key: str) -> float:
    """Median over the rounds whose run completed (a failed point is reported, not
    averaged in)."""
    v = [float(r[key]) for r in rows if r["cc"] == cc and r.get("status") == "ok"
         and not np.isnan(float(r[key]))]
    return statistics.median(v) if v else float("nan")


def ratio(a: float, b: float) -> str:
    if np.isnan(a) or np.isnan(b):
        return "  n/a"
    if b == 0:
        return "  =0 " if a == 0 else "  inf"
    return f"{a / b:5.2f}"


def report(rows: list[dict]) -> None:
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    ccs = list(dict.fromkeys(r["cc"] for r in rows))
    print(f"{'cell (N×Mb/s×τµs)':18} {'cc':16} {'goodput%':>8} {'q50':>6} {'q99':>6} "
          f"{'drops':>6} {'retx':>6} {'jain':>6} {'conv s':>6}  (median of rounds)")
    for c in cells:
        rs = [r for r in rows if r["cell"] == c]
        for cc in ccs:
            bad = sum(1 for r in rs if r["cc"] == cc and r.get("status") != "ok")
            if bad:
                print(f"{c:18} {cc:16} {bad} round(s) failed: not counted")
            print(f"{c:18} {cc:16} {med(rs, cc, 'goodput'):8.1f} {med(rs, cc, 'q50'):6.1f} "
                  f"{med(rs, cc, 'q99'):6.1f} {med(rs, cc, 'drops'):6.0f} "
                  f"{med(rs, cc, 'retrans'):6.0f} {med(rs, cc, 'jain'):6.3f} "
                  f"{med(rs, cc, 'conv_s'):6.1f}")
    print("\nratios ours/ref (goodput ≥ 1, queue ≤ 1, retransmits ≤ 1 meet the goal)")
    print(f"{'cell':18} {'pair':30} {'goodput':>7} {'q50':>5} {'q99':>5} {'drops':>5} "
          f"{'retx':>5} {'jain':>5} {'conv':>5}  goal")
    for c in cells:
        rs = [r for r in rows if r["cell"] == c]
        for ours, ref in PAIRS:
            if ours not in ccs or ref not in ccs:
                continue
            g = med(rs, ours, "goodput") / med(rs, ref, "goodput")
            q = [med(rs, ours, k) <= max(med(rs, ref, k), 1.0) for k in ("q50", "q99")]
            rt = med(rs, ours, "retrans") <= med(rs, ref, "retrans")
            goal = "met" if g >= 0.99 and all(q) and rt else "MISSED"
            print(f"{c:18} {ours + '/' + ref:30} {g:7.3f} "
                  + " ".join(ratio(med(rs, ours, k), med(rs, ref, k))
                             for k in ("q50", "q99", "drops", "retrans", "jain", "conv_s"))
                  + f"  {goal}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(r["cell"] for r in rows))
    ccs = list(dict.fromkeys(r["cc"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    x = np.arange(len(cells))
    w = 0.8 / max(1, len(ccs))
    for i, cc in enumerate(ccs):
        for ax, key, lab in ((axes[0], "goodput", "goodput, % of link"),
                             (axes[1], "q99", "queue p99, packets"),
                             (axes[2], "retrans", "retransmits")):
            vals, lo, hi = [], [], []
            for c in cells:
                v = [float(r[key]) for r in rows if r["cell"] == c and r["cc"] == cc
                     and r.get("status") == "ok"]
                v = [a for a in v if not np.isnan(a)] or [float("nan")]
                m = statistics.median(v)
                vals.append(m)
                lo.append(m - min(v))
                hi.append(max(v) - m)
            ax.bar(x + (i - (len(ccs) - 1) / 2) * w, vals, w, yerr=[lo, hi], label=cc,
                   capsize=2)
            ax.set_ylabel(lab)
    for ax in axes:
        ax.set_xticks(x, cells, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("senders × bottleneck Mb/s × τ µs")
    axes[0].set_ylim(70, 100)  # the differences are a few %
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("PowerTCP: ours vs inet-tub/powertcp-linux in one harness (median of rounds, "
                 "bars: range)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", nargs="*", help="N×Mb/s×τ, e.g. 10x300x200 (default: the grid)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="start of the common window, s")
    ap.add_argument("--ccs", nargs="*", default=["theta_powertcp", "bpf_rttpowertcp",
                                                 "powertcp"])
    ap.add_argument("--csv", type=Path, help="append rows here")
    ap.add_argument("--from-csv", type=Path, nargs="*", help="report/plot these rows only")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--keep", type=Path, help="keep each run's results under this directory")
    a = ap.parse_args()

    if a.from_csv:
        rows = [r for p in a.from_csv for r in _rows(p)]
        report(rows)
        if a.plot:
            plot(rows, a.plot)
        return 0
    exe, why = ref_loader()
    if exe is None:
        print(f"skipped: {why}")
        return 0
    grid = [tuple(int(v) for v in c.split("x")) for c in a.cells] if a.cells else GRID
    import signal
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    rows: list[dict] = []
    t_start = time.monotonic()
    try:
        for n, bw, tau in grid:
            for rnd in range(a.rounds):
                t = time.monotonic()
                new = run_cell(n, bw, tau, rnd, a.ccs, a.seconds, a.warmup, exe, a.keep)
                rows += new
                print(f"  {n}x{bw}x{tau} round {rnd}: {time.monotonic() - t:.0f} s  " +
                      "  ".join(f"{r['cc']}: {r['goodput']:.1f}% q99 {r['q99']:.1f} "
                                f"retx {r['retrans']:.0f}" for r in new), flush=True)
                if a.csv:
                    new_file = not a.csv.exists()
                    with a.csv.open("a", newline="") as f:
                        w = csv.DictWriter(f, FIELDS)
                        if new_file:
                            w.writeheader()
                        w.writerows(new)
    finally:
        unregister_ref(exe)
    print(f"\n{len(grid)} cells × {a.rounds} rounds in {time.monotonic() - t_start:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f}: the machine is shared)\n")
    report(rows)
    if a.plot:
        plot(rows, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
