"""Sweeps on a Slurm cluster: a run's points as one array job, one task per point.

Submitting: the bundle (run.json, experiment.yaml) is written first, here, on a
filesystem the nodes share; one `sbatch` then submits an array of the points still to
run (not ok: new, failed, or never reached), each task on an exclusive node
(`--exclusive`: one point never shares a kernel's CPUs with another), as the submitting
user (root: namespaces and eBPF need it). A task runs `python -m testbed run-point
BUNDLE POINT` — features checked on its node, the point's directory and meta.json
written as a local run writes them (with the node's facts), plots drawn — then records
its exit code beside its Slurm log (BUNDLE/slurm/<job>_<task>.{out,rc}).

Following: this process polls the points' meta.json, the tasks' exit codes and `squeue`
(no accounting database needed) and shows a progress bar. A task that leaves the queue
without a result (cancelled, node failure, time limit) is recorded as failed with its
log's path; `--resume` submits only the points not ok. Ctrl-C cancels the job.

Classes:
- SlurmOptions: partition, time limit, array throttle, extra sbatch options.
- SlurmExecutor: submit, follow, gather (the statuses the Runner records in run.json).
Functions:
- preflight(opts): sbatch/squeue/scancel present and the controller answering.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import results
from .errors import MissingFeature, RunError

if TYPE_CHECKING:
    from .runner import Runner

TOOLS = ("sbatch", "squeue", "scancel", "sinfo")
CONF_PATHS = ("/etc/slurm/slurm.conf", "/run/slurm/conf/slurm.conf")  # the latter: configless
LOST_AFTER_S = 30  # a task out of the queue this long without its exit code is lost
FIX = "apt-get install slurm-client, and SLURM_CONF (or /etc/slurm/slurm.conf) naming the cluster"


@dataclass
class SlurmOptions:
    partition: str | None = None
    time: str | None = None        # sbatch --time; default: from the experiment's duration
    parallel: int | None = None    # at most this many tasks at once (%N)
    extra: list[str] = field(default_factory=list)
    poll_s: float = 1.0


def _slurm(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def preflight(opts: SlurmOptions | None) -> None:
    """What submitting needs, found before anything exists (the points' own features
    are checked on their nodes)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise MissingFeature(f"--executor slurm: {', '.join(missing)} not found", FIX)
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).exists():
        raise MissingFeature(f"--executor slurm: SLURM_CONF={conf} does not exist", FIX)
    if not conf and not any(Path(p).exists() for p in CONF_PATHS):
        raise MissingFeature("--executor slurm: no slurm.conf here "
                             f"({', '.join(CONF_PATHS)})", FIX)
    cmd = ["sinfo", "-h", "-o", "%P %a %D"]
    if opts and opts.partition:
        cmd += ["-p", opts.partition]
    try:
        r = _slurm(cmd, timeout=20)
    except subprocess.TimeoutExpired:
        raise MissingFeature("--executor slurm: the Slurm controller did not answer in 20 s",
                             FIX) from None
    if r.returncode != 0:
        raise MissingFeature(f"--executor slurm: sinfo failed: {(r.stderr or r.stdout).strip()}",
                             FIX)
    if opts and opts.partition and not r.stdout.strip():
        raise MissingFeature(f"--slurm-partition {opts.partition}: no such partition",
                             "sinfo lists the cluster's partitions")


def _time_limit(runner: "Runner") -> str:
    """A task's default limit: the point's workload, settle and a generous allowance for
    bring-up, compiles and plots (minutes)."""
    e = runner.plan.experiment
    return str(max(10, math.ceil((e.duration + e.settle) / 60 * 3) + 10))


class SlurmExecutor:
    def __init__(self, runner: "Runner", opts: SlurmOptions | None):
        self.runner, self.opts = runner, opts or SlurmOptions()
        self.dir = runner.run_dir.resolve() / "slurm"

    # -- submit ------------------------------------------------------------------------
    def _options(self, names: list[str]) -> list[str]:
        o = self.opts
        array = f"0-{len(names) - 1}" + (f"%{o.parallel}" if o.parallel else "")
        sb = [f"--job-name=testbed-{self.runner.plan.experiment.name}"[:60],
              f"--array={array}", "--nodes=1", "--ntasks=1", "--exclusive",
              f"--output={self.dir}/%A_%a.out", f"--chdir={Path.cwd()}",
              f"--time={o.time or _time_limit(self.runner)}"]
        if o.partition:
            sb.append(f"--partition={o.partition}")
        return sb + o.extra

    def _script(self, names: list[str], options: list[str]) -> str:
        bundle = self.runner.run_dir.resolve()
        run = [sys.executable, "-m", "testbed", "run-point", str(bundle)]
        return "\n".join([
            "#!/bin/bash",
            "# submitted as: sbatch " + " ".join(shlex.quote(x) for x in options) + " <this file>",
            "# one sweep point per array task (index → point name)",
            "points=(" + " ".join(shlex.quote(n) for n in names) + ")",
            'point=${points[$SLURM_ARRAY_TASK_ID]}',
            f"cd {shlex.quote(str(Path.cwd()))}",
            " ".join(shlex.quote(x) for x in run) + ' "$point"',
            "rc=$?",
            f'echo $rc > {shlex.quote(str(self.dir))}/"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}.rc"',
            "exit $rc", ""])

    def submit(self, names: list[str]) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        script = self.dir / f"job-{time.strftime('%Y%m%d-%H%M%S')}.sh"
        options = self._options(names)   # as arguments: no quoting rules of #SBATCH lines
        script.write_text(self._script(names, options))
        r = _slurm(["sbatch", "--parsable", *options, str(script)])
        if r.returncode != 0:
            raise RunError(f"sbatch {script}: {(r.stderr or r.stdout).strip()}")
        job = r.stdout.strip().split(";")[0]
        results.write_json(self.dir / f"{job}.json", {
            "job_id": job, "script": str(script), "sbatch": options, "points": names,
            "submitted": time.time()})
        return job

    # -- follow ------------------------------------------------------------------------
    def _queued(self, job: str) -> dict[int, str] | None:
        """Array index → state of the job's tasks still in the queue; None when the
        controller did not answer (busy: nothing is concluded from that)."""
        try:
            r = _slurm(["squeue", "-h", "-r", "-j", job, "-o", "%i %T"], timeout=30)
        except subprocess.TimeoutExpired:
            return None
        out: dict[int, str] = {}
        if r.returncode != 0:
            # the job has left the queue entirely, or the controller is unreachable
            return out if "invalid job id" in (r.stderr + r.stdout).lower() else None
        for line in r.stdout.split("\n"):
            parts = line.split()
            if len(parts) == 2 and "_" in parts[0]:
                idx = parts[0].split("_", 1)[1]
                if idx.isdigit():
                    out[int(idx)] = parts[1]
        return out

    def _result(self, job: str, i: int, name: str) -> dict | None:
        """A finished task's status (its meta.json; its exit code otherwise), or None."""
        rc_file = self.dir / f"{job}_{i}.rc"
        if not rc_file.exists():
            return None
        log = self.dir / f"{job}_{i}.out"
        try:
            meta = json.loads((self.runner.run_dir / name / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        st = {"status": meta.get("status", "failed"), "slurm_job": f"{job}_{i}",
              "node": (meta.get("node") or {}).get("host")}
        if st["status"] != "ok":
            st["error"] = meta.get("error") or (
                f"task exited {rc_file.read_text().strip()} before the point started; "
                f"see {log}")
        return st

    def run(self) -> dict[str, dict]:
        run_dir = self.runner.run_dir
        statuses: dict[str, dict] = {}
        todo = []
        for p in self.runner.plan.points:
            if self.runner.resume and results.point_done(run_dir / p.name):
                statuses[p.name] = {"status": "ok", "resumed": True}
            else:
                todo.append(p)
        if not todo:
            return statuses
        names = [p.name for p in todo]
        job = self.submit(names)
        print(f"slurm: submitted job {job}: {len(names)} point(s) "
              f"(logs: {self.dir}/{job}_<task>.out)", file=sys.stderr, flush=True)
        done: dict[int, dict] = {}
        gone_since: dict[int, float] = {}
        n_before, shown = len(statuses), ""
        try:
            with self.runner.display as show:
                while len(done) < len(names):
                    answer = self._queued(job)
                    queued = answer or {}
                    now = time.monotonic()
                    for i, name in enumerate(names):
                        if i in done:
                            continue
                        st = self._result(job, i, name)
                        if st is None and answer is not None and i not in queued:
                            # Out of the queue without an exit code: give the shared
                            # filesystem (and the task's last write) a moment, then
                            # record the loss.
                            first = gone_since.setdefault(i, now)
                            if now - first > LOST_AFTER_S:
                                st = {"status": "failed", "slurm_job": f"{job}_{i}",
                                      "error": "Slurm task ended without a result (cancelled, "
                                               f"node failure or time limit); see "
                                               f"{self.dir}/{job}_{i}.out"}
                                _mark_failed(run_dir / name, st["error"])
                        elif st is None and i in queued:
                            gone_since.pop(i, None)
                        if st is not None:
                            done[i] = st
                            statuses[name] = st
                            show.point_done(n_before + len(done) - 1, name, st["status"])
                    running = sum(1 for s in queued.values() if s == "RUNNING")
                    pending = sum(1 for s in queued.values() if s == "PENDING")
                    msg = f"job {job}: {len(done)} done, {running} running, {pending} pending"
                    if msg != shown and len(done) < len(names):
                        waiting = next(n for i, n in enumerate(names) if i not in done)
                        show.phase(n_before + len(done), waiting, msg)
                        shown = msg
                    if len(done) < len(names):
                        time.sleep(self.opts.poll_s)
        except BaseException:
            _slurm(["scancel", job])
            print(f"slurm: cancelled job {job}", file=sys.stderr)
            for i, name in enumerate(names):
                statuses.setdefault(name, {"status": "interrupted", "slurm_job": f"{job}_{i}"})
            raise
        return statuses


def _mark_failed(pdir: Path, error: str) -> None:
    """A point whose task never finished: its meta.json says so (resume reruns it)."""
    meta_path = pdir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {"point": pdir.name}
    meta.update(status="failed", error=error)
    pdir.mkdir(parents=True, exist_ok=True)
    results.write_json(meta_path, meta)
