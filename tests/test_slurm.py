"""The Slurm executor end to end, through a real one-node Slurm started by the test.

The fixture starts Debian's munged, slurmctld and slurmd by hand (no systemd) as children
of the test, in a generated slurm.conf on 127.0.0.1 (free ports, state in a temp dir),
inside a cgroup of their own: stopping them, and every job step they started, is one
cgroup.kill on every exit path (slurmstepd ignores SIGTERM). It skips, saying why, only
where Slurm cannot start here.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from conftest import run_cli

from testbed.network.tracker import RunTracker, kill_cgroup

pytestmark = pytest.mark.needs_root

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "munge")

SWEEP = """\
name: slurm_small
scale: "test: 50 Mb/s bottleneck"
topology: {builtin: dumbbell, pairs: 1, bw: 1000, bottleneck_bw: 50, bottleneck_queue: 50, ipv6: false}
hosts: {offloads: off}
duration: 1.5
workload:
  flows:
    - {name: a, src: h1, dst: h2, start: 0, duration: 1.5}
instruments: [queue, iperf]
sweep:
  cc: [cubic, reno]
expect:
  - {claim: utilization, cc: cubic, min: 0.5}
  - {claim: utilization, cc: reno, min: 0.5}
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, n: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextmanager
def slurm_cluster(d: Path) -> Iterator[dict[str, str]]:
    """A one-node Slurm on this machine; yields the environment its clients need."""
    missing = [p for p in DAEMONS if not os.access(p, os.X_OK)] + \
        [c for c in CLIENTS if shutil.which(c) is None]
    if missing:
        pytest.skip(f"Slurm cannot start here: {', '.join(missing)} missing "
                    "(scripts/setup.sh installs slurmctld slurmd munge slurm-client)")
    # A tracked run of its own (state file with our PID), so that a `testbed clean` running
    # meanwhile sees a live run, not a crashed one's cgroup to kill.
    tracker = RunTracker().open()
    cg = tracker.node_cgroup("slurm")
    procs = str(cg / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as f:
            f.write("0")

    children: list[subprocess.Popen] = []

    def start(*cmd: str, log: str) -> None:
        children.append(subprocess.Popen(cmd, stdout=open(d / log, "w"), stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=enter))
    try:
        m = d / "munge"
        m.mkdir(mode=0o700)
        key = m / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        sock = m / "munge.sock"
        start("/usr/sbin/munged", "-F", "-f", f"--socket={sock}", f"--key-file={key}",
              f"--pid-file={m / 'pid'}", f"--seed-file={m / 'seed'}",
              f"--log-file={m / 'log'}", log="munged.out")
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline or children[0].poll() is not None:
                pytest.skip(f"Slurm cannot start here: munged did not start: "
                            f"{_tail(d / 'munged.out')}")
            time.sleep(0.05)
        node = socket.gethostname().split(".")[0]
        ctld_port, d_port = _free_ports(2)
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        conf = d / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=testbed", f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
            f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            # no cgroup plugins: the points make their own cgroups; ours holds the steps
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SwitchType=switch/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "ReturnToService=2", "MinJobAge=300",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName=tbtest Nodes={node} Default=YES MaxTime=INFINITE State=UP", ""]))
        env = {**os.environ, "SLURM_CONF": str(conf)}
        start("/usr/sbin/slurmctld", "-D", "-i", "-f", str(conf), log="slurmctld.out")
        start("/usr/sbin/slurmd", "-D", "-N", node, "-f", str(conf), log="slurmd.out")
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               env=env, timeout=20)
            if r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated"):
                break
            dead = [c.args[0] for c in children if c.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.skip(f"Slurm cannot start here: {', '.join(dead) or 'node not idle'}: "
                            f"sinfo {r.stdout.strip() or r.stderr.strip()}; slurmctld: "
                            f"{_tail(d / 'slurmctld.log', 3)}; slurmd: {_tail(d / 'slurmd.log', 3)}")
            time.sleep(0.3)
        yield env
    finally:
        # every daemon and job step: one cgroup.kill (then the cgroup is removed)
        kill_cgroup(cg, timeout=10)
        for c in children:
            c.wait(timeout=10)
        tracker.close()


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def _run(args: list[str], env: dict | None = None, timeout: float = 300):
    return run_cli(*args, timeout=timeout, env=env)


def _shape(bundle: Path) -> dict:
    """What a bundle holds, without its numbers: points, their files, meta keys, claims."""
    run = json.loads((bundle / "run.json").read_text())
    pts = {}
    for name in run["points"]:
        p = bundle / name
        meta = json.loads((p / "meta.json").read_text())
        pts[name] = {"status": meta["status"],
                     "files": sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file()),
                     "meta_keys": sorted(set(meta) - {"plot_error"}),
                     "node_keys": sorted(set(meta["node"]) - {"slurm"})}
    claims = json.loads((bundle / "claims.json").read_text())
    return {"points": pts, "run_points": {k: v["status"] for k, v in run["points"].items()},
            # judged on both (the verdict itself may be N/A where the shared CPU was the
            # bottleneck of one run and not of the other)
            "claims": [(c["claim"], c["cc"], c["status"] in ("PASS", "N/A")) for c in claims],
            "bundle": sorted(f.name for f in bundle.iterdir() if f.name != "slurm")}


def test_sweep_through_slurm_equals_local_run_in_structure(write, tmp_path, slurm_env):
    exp = write("sweep.yaml", SWEEP)
    local, remote = tmp_path / "local", tmp_path / "remote run"   # a space: quoting
    r = _run(["run", str(exp), "--out", str(local), "-q"])
    assert r.returncode == 0, r.stderr
    r = _run(["run", str(exp), "--out", str(remote), "--executor", "slurm",
              "--slurm-partition", "tbtest"], env=slurm_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted job" in r.stderr and "claim " in r.stdout, r.stdout
    run = json.loads((remote / "run.json").read_text())
    assert run["executor"] == "slurm"
    jobs = {v["slurm_job"].split("_")[0] for v in run["points"].values()}
    assert len(jobs) == 1, run["points"]           # one array job, a task per point
    for name, st in run["points"].items():
        meta = json.loads((remote / name / "meta.json").read_text())
        # the node's facts, from the task's own environment
        assert meta["node"]["slurm"]["array_job_id"] == st["slurm_job"].split("_")[0]
        assert meta["node"]["kernel"] == os.uname().release and meta["node"]["cpus"]
        assert (remote / "slurm" / f"{st['slurm_job']}.rc").read_text().strip() == "0"
        assert (remote / "slurm" / f"{st['slurm_job']}.out").exists()
    assert _shape(local) == _shape(remote)
    verdicts = json.loads((remote / "claims.json").read_text())
    assert [(v["claim"], v["cc"]) for v in verdicts] == [("utilization", "cubic"),
                                                          ("utilization", "reno")]
    assert all(v["reason"] for v in verdicts), verdicts

    # claims refuse to compare points of machines with different kernels unless told to
    meta_path = remote / "cc=reno" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["node"]["kernel"] = "5.10.0-other"
    meta_path.write_text(json.dumps(meta))
    r = _run(["check", str(remote), "--no-write"])
    assert r.returncode == 1 and "different kernels" in r.stdout + r.stderr, r.stdout + r.stderr
    r = _run(["check", str(remote), "--no-write", "--mixed-kernels"])
    assert r.returncode == 0 and "different kernels" not in r.stdout, r.stdout + r.stderr


def test_failed_task_is_recorded_and_resume_resubmits_only_it(write, tmp_path, slurm_env):
    """One point fails on its node (an event takes its only link down at t=0: the
    burst never completes): recorded with its error, the other point ok, exit 1; --resume then
    submits a job of that point alone."""
    text = SWEEP.replace("instruments:", "  incast:\n    - {name: burst, senders: [h1], dst: h2, "
                                         "start: 0.5, bytes: 32KB}\n"
                                         "  events:\n    - {at: 0, action: link_up, link: [h1, s1]}\n"
                                         "instruments:")
    text = text.replace("  cc: [cubic, reno]", "  workload.events.0.action: [link_down, link_up]")
    text = text[:text.index("expect:")]
    exp, out = write("e.yaml", text), tmp_path / "res"
    r = _run(["run", str(exp), "--out", str(out), "--executor", "slurm"], env=slurm_env)
    assert r.returncode == 1, r.stdout + r.stderr
    run = json.loads((out / "run.json").read_text())["points"]
    assert run["action=link_down"]["status"] == "failed" and run["action=link_down"]["error"]
    assert run["action=link_up"]["status"] == "ok"
    up_started = json.loads((out / "action=link_up" / "meta.json").read_text())["started"]
    r = _run(["run", str(exp), "--out", str(out), "--executor", "slurm", "--resume"],
             env=slurm_env)
    assert r.returncode == 1, r.stdout + r.stderr
    run = json.loads((out / "run.json").read_text())["points"]
    assert run["action=link_up"].get("resumed") is True
    assert run["action=link_down"]["status"] == "failed"
    assert json.loads((out / "action=link_up" / "meta.json").read_text())["started"] == up_started
    jobs = [json.loads(f.read_text()) for f in (out / "slurm").glob("*.json")]
    assert sorted(len(j["points"]) for j in jobs) == [1, 2], jobs
    assert next(j for j in jobs if len(j["points"]) == 1)["points"] == ["action=link_down"]


def test_no_cluster_is_reported_before_anything_exists(write, tmp_path):
    out = tmp_path / "res"
    r = _run(["run", str(write("s.yaml", SWEEP)), "--out", str(out), "--executor", "slurm"],
             env={**os.environ, "SLURM_CONF": str(tmp_path / "none.conf")}, timeout=60)
    assert r.returncode == 2 and "SLURM_CONF" in r.stderr and "fix:" in r.stderr, r.stderr
    assert not out.exists()
    r = _run(["run", str(write("s.yaml", SWEEP)), "--slurm-partition", "p"], timeout=60)
    assert r.returncode == 2 and "--executor slurm" in r.stderr, r.stderr
