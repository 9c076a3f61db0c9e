"""Results bundles: where a run's data goes and what describes it.

Layout:
    results/<experiment>/<run-id>/
        experiment.yaml        the file as given (plus the --set overrides in run.json)
        run.json               run id, command line, points and their status
        summary.csv, summary.png
        <point>/               one per sweep point (and repetition)
            config.yaml  topology.yaml  meta.json
            queue.csv  throughput.csv  flows.csv  … one CSV per instrument
            iperf/  logs/  plots/

This module writes bundles (new_run_dir, latest_run_dir, point_done, write_json,
versions, read_csv, cpu_times). Reading them: `load(run_dir)` → a `Run` of pandas tables
(frames.py); one HTML page per run (report.py); two runs side by side (compare.py);
JUnit XML for CI (junit.py). pandas is imported only when a bundle is loaded.
node_facts() is the machine a point ran on.
"""
from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import os
import platform
import secrets
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("TESTBED_RESULTS", "results"))


def new_run_dir(experiment: str, out: Path | None = None) -> Path:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = RESULTS / experiment / f"{stamp}-{secrets.token_hex(2)}"
    d.mkdir(parents=True)
    return d


def latest_run_dir(experiment: str) -> Path | None:
    base = RESULTS / experiment
    runs = sorted((p for p in base.iterdir() if (p / "run.json").exists()),
                  key=lambda p: p.name) if base.exists() else []
    return runs[-1] if runs else None


def point_done(point_dir: Path) -> bool:
    try:
        return json.loads((point_dir / "meta.json").read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """What produced the data: code, kernel, tools (once per process)."""
    git = _first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    try:   # no git (the stock-kernel VM's copy of the checkout): commit "unavailable"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip() != ""
    except OSError:
        dirty = False
    try:
        import mininet.net
        mn = mininet.net.VERSION
    except Exception:
        mn = "unavailable"
    try:
        import bcc
        bccv = getattr(bcc, "__version__", "present")
    except Exception:
        bccv = "unavailable"
    return {"git_commit": git + ("-dirty" if dirty else ""), "kernel": platform.release(),
            "python": platform.python_version(), "mininet": mn, "bcc": bccv,
            "iperf3": _first_line(["iperf3", "--version"]),
            "iproute2": _first_line(["ip", "-V"]), "clang": _first_line(["clang", "--version"]),
            "host": platform.node(), "cpus": str(os.cpu_count()), "default_cc": default_cc()}


def node_facts() -> dict[str, Any]:
    """The machine a point ran on (claims refuse to compare points of different kernels):
    kernel, CPUs, memory, host name, and the Slurm job and task when run by one."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(int(l.split()[1]) // 1024 for l in Path("/proc/meminfo").read_text().splitlines()
                   if l.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        mem = None
    facts: dict[str, Any] = {"host": platform.node(), "kernel": platform.release(),
                             "kernel_version": platform.version(), "arch": platform.machine(),
                             "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                             "cpu_model": cpu, "mem_mb": mem}
    slurm = {k.lower().removeprefix("slurm_"): v for k, v in os.environ.items()
             if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                      "SLURMD_NODENAME", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME")}
    if slurm:
        facts["slurm"] = slurm
    return facts


def default_cc() -> str:
    """The machine's default TCP CC: what a flow started without -C gets, as new
    namespaces inherit it (and may not pick another unless root's
    net.ipv4.tcp_allowed_congestion_control lists it)."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        return "unavailable"


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, for the CPU-vs-link bottleneck check."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def load(run_dir: str | Path):
    """A run's bundle as tidy pandas tables (testbed.results.frames.Run)."""
    from .frames import load as _load
    return _load(run_dir)


def __getattr__(name: str):
    if name == "Run":
        from .frames import Run
        return Run
    raise AttributeError(name)
