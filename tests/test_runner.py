"""The runner end to end: bundles, failures, resume, Ctrl-C and SIGKILL + clean."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from testbed.network.tracker import BPFFS, STATE_DIR, cgroup_pids

pytestmark = pytest.mark.needs_root

SMALL = """\
name: small
scale: "test: 50 Mb/s bottleneck"
topology: {builtin: dumbbell, pairs: 1, bw: 1000, bottleneck_bw: 50, bottleneck_queue: 50, ipv6: false}
hosts: {offloads: off}
duration: 2
workload:
  flows:
    - {name: a, src: h1, dst: h2, start: 0, duration: 2}
  incast:
    - {name: burst, senders: [h1], dst: h2, start: 1.0, bytes: 32KB}
  commands:
    - {host: h1, at: 0.5, cmd: "echo hello from h1"}
instruments: [queue, iperf]
"""


def _run(args, **kw):
    return run_cli(*args, timeout=180, **kw)


def test_small_experiment_writes_a_full_bundle(write, tmp_path):
    out = tmp_path / "res"
    r = _run(["run", str(write("small.yaml", SMALL)), "--out", str(out), "-q"])
    assert r.returncode == 0, r.stderr
    assert "[1/1]" not in r.stderr, r.stderr          # -q: no progress lines in logs
    p = out / "default"
    meta = json.loads((p / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["versions"]["kernel"]
    for f in ("config.yaml", "topology.yaml", "queue.csv", "throughput.csv", "flows.csv",
              "plots/throughput_queue.png"):
        assert (p / f).stat().st_size > 0, f
    assert (out / "summary.csv").exists() and (out / "run.json").exists()
    flows = {l.split(",")[0]: l.split(",") for l in (p / "flows.csv").read_text().splitlines()[1:]}
    assert int(flows["burst-h1"][6]) == 32000          # every byte of the burst arrived
    assert float(flows["a"][7]) > 20e6       # the long flow used the link (rate: test_network)
    # the sender's kernel ran the experiment's CC (the machine's default here: bbr)
    assert flows["a"][10] == flows["burst-h1"][10] == "cubic", meta["versions"]["default_cc"]
    assert "hello from h1" in (p / "logs" / "h1-cmd1.log").read_text()
    port = meta["bottleneck"]["ports"]["s1:s1-eth1"]
    assert port["rate_mbps"] == 50 and port["util_pct"] > 20  # iperf3 start-up is in the window


def test_flows_over_ipv6(write, tmp_path):
    """`ipv6: true` on a flow or an incast: iperf3 and the burst sender go to the
    destination's IPv6 address (the sink takes both families), every byte arrives."""
    text = SMALL.replace("ipv6: false", "ipv6: true").replace(
        "duration: 2}\n  incast:", "duration: 2, ipv6: true}\n  incast:").replace(
        "bytes: 32KB}", "bytes: 32KB, ipv6: true}")
    out = tmp_path / "res"
    r = _run(["run", str(write("small6.yaml", text)), "--out", str(out), "-q"])
    assert r.returncode == 0, r.stderr
    p = out / "default"
    flows = {l.split(",")[0]: l.split(",") for l in (p / "flows.csv").read_text().splitlines()[1:]}
    assert int(flows["burst-h1"][6]) == 32000 and float(flows["a"][7]) > 20e6, flows
    h2 = json.loads((p / "meta.json").read_text())["addresses"]["h2"]
    remote = json.loads((p / "iperf" / "a.client.json").read_text())["start"]["connected"][0]
    assert ":" in remote["remote_host"], remote         # an IPv6 connection
    sink = json.loads((p / "iperf" / "h2.sink.json").read_text())["connections"]
    assert len(sink) == 1 and ":" in sink[0]["peer"].rsplit(":", 1)[0] and \
        not sink[0]["peer"].startswith("::ffff:"), sink
    assert h2 and remote["remote_host"] != h2           # meta lists the IPv4 address


def test_failed_point_is_recorded_and_the_sweep_goes_on(write, tmp_path):
    text = SMALL.replace("  commands:", "  events:\n    - {at: 0, action: link_up, link: [h1, s1]}\n  commands:")
    text += "sweep:\n  workload.events.0.action: [link_down, link_up]\n"
    out = tmp_path / "res"
    r = _run(["run", str(write("e.yaml", text)), "--out", str(out), "-q"])
    assert r.returncode == 1
    run = json.loads((out / "run.json").read_text())["points"]
    assert run["action=link_down"]["status"] == "failed" and run["action=link_down"]["error"]
    assert run["action=link_up"]["status"] == "ok"
    # --resume runs only what did not finish
    r = _run(["run", str(write("e.yaml", text)), "--out", str(out), "--resume", "-q"])
    run = json.loads((out / "run.json").read_text())["points"]
    assert run["action=link_up"].get("resumed") is True
    assert run["action=link_down"]["status"] == "failed"


def _start_long_run(write, tmp_path) -> tuple[subprocess.Popen, dict]:
    text = SMALL.replace("duration: 2\n", "duration: 30\n").replace("duration: 2}", "duration: 30}")
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(write("l.yaml", text)),
                             "--out", str(tmp_path / "res"), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline and state is None:
        for sf in STATE_DIR.glob("testbed-*.json"):
            try:
                st = json.loads(sf.read_text())
            except ValueError:
                continue
            if st.get("pid") == proc.pid:
                state = st
        time.sleep(0.05)
    assert state, "the run never started"
    cg = Path(state["cgroup"])
    # wait for the workload: iperf3 running inside the run's cgroup
    while time.monotonic() < deadline:
        names = []
        for pid in cgroup_pids(cg):
            try:
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                pass
        if "iperf3" in names:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("workload never started")
    return proc, state


def _nothing_left(state) -> list[str]:
    left = []
    cg = Path(state["cgroup"])
    if cg.exists():
        left.append(f"cgroup {cg} ({len(cgroup_pids(cg))} processes)")
    name = cg.name
    for p in (STATE_DIR / f"{name}.json", STATE_DIR / name, BPFFS / name):
        if p.exists():
            left.append(str(p))
    return left


def _alive(pids: list[int]) -> list[int]:
    """Processes still running (zombies waiting for init to reap them are not)."""
    out = []
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(p)
        except OSError:
            pass
    return out


def test_ctrl_c_mid_run_leaves_nothing(write, tmp_path):
    proc, state = _start_long_run(write, tmp_path)
    pids = cgroup_pids(Path(state["cgroup"]))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert _nothing_left(state) == []
    assert pids and not _alive(pids)
    meta = json.loads((tmp_path / "res" / "default" / "meta.json").read_text())
    assert meta["status"] == "interrupted"


def test_clean_after_sigkill_removes_only_that_run(write, tmp_path):
    proc, state = _start_long_run(write, tmp_path)
    pids = cgroup_pids(Path(state["cgroup"]))
    proc.kill()
    proc.wait(timeout=10)
    assert _nothing_left(state)  # a killed run cannot clean up after itself
    r = _run(["clean"])
    assert r.returncode == 0 and state["run_id"] in r.stdout, r.stdout + r.stderr
    assert _nothing_left(state) == []
    assert pids and not _alive(pids)
