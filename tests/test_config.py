"""Bad input: one line naming file, line, key and the fix; exit 2; nothing started."""
from __future__ import annotations

import pytest

from testbed.config.load import load_topology
from testbed.preflight import load_experiment
from testbed.errors import ConfigError


GOOD = """\
name: t
topology:
  builtin: incast
  senders: 2
  bw: 100
duration: 2
workload:
  flows:
    - {src: h1, dst: h0, start: 0, duration: 1}
"""

# (experiment text, the line the error must name, words the message must contain)
BAD = [
    ("name: t\ntopology: {builtin: incast}\nduraton: 2\n", 3, ["unknown key 'duraton'", "duration"]),
    ("name: t\ntopology: {builtin: incats}\nduration: 2\n", 2, ["unknown builtin", "incast"]),
    ("name: t\ntopology: {builtin: incast, sendrs: 3}\nduration: 2\n", 2, ["sendrs", "senders"]),
    ("name: t\ntopology: {builtin: incast, bw: fast}\nduration: 2\n", 2, ["rate"]),
    ("name: t\ntopology: {builtin: incast}\nduration: -1\n", 3, ["duration"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 5 parsecs\n", 3, ["duration"]),
    ("name: t\ntopology: {builtin: incast}\n", 1, ["missing", "duration"]),
    ("topology: {builtin: incast}\nduration: 2\n", 1, ["missing", "name"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h99}\n", 6, ["unknown host 'h99'"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h1}\n", 6, ["same host"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h0, bytes: 1MB, duration: 1}\n", 6, ["bytes or duration"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h0, start: 1, duration: 5}\n", 6, ["past the experiment"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h0, parallel: 0}\n", 6, ["parallel"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\ncc: cubik\n", 4, ["cubik", "cubic"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\ninstruments:\n  queu: {}\n", 5,
     ["unknown instrument 'queu'", "queue"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\ninstruments:\n"
     "  queue: {intervall: 1ms}\n", 5, ["intervall", "interval"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nsweep:\n  cc: []\n", 4, ["'cc' has no values"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nsweep:\n  cc: [cubic, vegass]\n", 5,
     ["vegass"]),
    ("name: t\ntopology: missing.yaml\nduration: 2\n", 2, ["not found"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  incast:\n"
     "    - {senders: h1..h2, dst: h0, start: 0.5}\n", 6, ["bytes", "duration"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  events:\n"
     "    - {at: 1, action: link_down}\n", 6, ["link"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n  events:\n"
     "    - {at: 1, action: link_down, link: [h1, h2]}\n", 6, ["no link h1-h2"]),
    ("name: t\ntopology:\n  hosts: [h1, h2]\n  links: [[h1, h3]]\nduration: 2\n", 2,
     ["unknown node 'h3'"]),
    ("name: t\ntopology:\n  hosts: [h1, h2]\n  links: [[h1, h1]]\nduration: 2\n", 4,
     ["two different ends"]),
    ("name: t\ntopology:\n  hosts: [H-1]\n  links: []\nduration: 2\n", 3, ["node names"]),
    ("name: t\ntopology:\n  hosts: [h1, h2]\n  links:\n    - {ends: [h1, h2], queue: lots}\n"
     "duration: 2\n", 5, ["queue"]),
    ("name: t\ntopology:\n  hosts: [h1, h2]\n  links:\n    - {ends: [h1, h2], loss: 150}\n"
     "duration: 2\n", 5, ["loss"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nrepetitions: 0\n", 4, ["repetitions"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nhosts:\n  offloads: {tso: maybe}\n", 5,
     ["tso"]),
    ("name: t\ntopology: {builtin: chain, routers: 3, bottleneck: 5}\nduration: 2\n", 2,
     ["bottleneck"]),
    ("name: t\ntopology: {builtin: incast}\nduration: 2\nemulation:\n  rsp: true\n", 5,
     ["rsp", "rps"]),
    ("name: t\ntopology: {builtin: incast, ipv6: false}\nduration: 2\nworkload:\n  flows:\n"
     "    - {src: h1, dst: h0,\n       ipv6: true}\n", 7, ["no IPv6", "ipv6: true"]),
    ("name: t\n  topology: x\n", 2, ["YAML syntax"]),
    ("- just\n- a list\n", 1, ["mapping"]),
]


@pytest.mark.parametrize("text,line,words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_names_file_line_and_fix(write, text, line, words):
    p = write("exp.yaml", text)
    with pytest.raises(ConfigError) as ei:
        load_experiment(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)


def test_good_file_validates(write):
    plan = load_experiment(write("exp.yaml", GOOD))
    assert [p.name for p in plan.points] == ["default"]
    f = plan.points[0].experiment.workload.flows[0]
    assert (f.src, f.dst, f.duration) == ("h1", "h0", 1.0)


def test_units_and_short_forms(write):
    text = GOOD + "hosts: {offloads: off}\n"
    text = text.replace("bw: 100", "bw: 1Gbit\n  queue: 64KB")
    plan = load_experiment(write("exp.yaml", text))
    topo = plan.points[0].topology
    assert topo.defaults.link.bw == 1000.0
    assert topo.defaults.link.queue.bytes == 64000
    assert plan.points[0].experiment.hosts.offloads.gro is False


def test_sweep_and_repetitions_make_points(write):
    text = GOOD + "sweep:\n  cc: [cubic, reno]\n  topology.bw: [50, 100]\nrepetitions: 2\n"
    plan = load_experiment(write("exp.yaml", text))
    assert len(plan.points) == 8
    names = {p.name for p in plan.points}
    assert "cc=cubic,bw=50,rep=1" in names
    bws = {p.topology.defaults.link.bw for p in plan.points}
    assert bws == {50.0, 100.0}


def test_sweep_and_set_can_clear_a_key_with_null(write):
    """`null` is a value of a sweep or --set (the key goes back to none), not an empty
    mapping."""
    text = GOOD.replace("duration: 1}", "duration: 1, rate: 20}") + \
        "sweep:\n  workload.flows.0.rate: [null, 50]\n"
    plan = load_experiment(write("exp.yaml", text))
    assert [p.experiment.workload.flows[0].rate for p in plan.points] == [None, 50.0]
    plan = load_experiment(write("exp2.yaml", GOOD.replace("duration: 1}", "duration: 1, rate: 20}")),
                           ["workload.flows.0.rate=null"])
    assert plan.points[0].experiment.workload.flows[0].rate is None


def test_set_overrides_and_errors_name_the_override(write):
    p = write("exp.yaml", GOOD)
    plan = load_experiment(p, ["duration=5", "topology.senders=4"])
    assert plan.experiment.duration == 5
    assert len(plan.points[0].topology.hosts) == 5
    with pytest.raises(ConfigError) as ei:
        load_experiment(p, ["duration=soon"])
    assert "duration" in str(ei.value)


def test_topology_file_with_overrides(write, tmp_path):
    write("topo.yaml", "hosts: [h1, h2]\nswitches: [s1]\nlinks:\n  - [h1, s1]\n  - {ends: [s1, h2], bw: 10}\n")
    p = write("exp.yaml", "name: t\nduration: 1\ntopology:\n  file: topo.yaml\n"
                          "  overrides: {defaults.link.bw: 100}\n")
    topo = load_experiment(p).points[0].topology
    assert topo.defaults.link.bw == 100
    assert topo.link_params(topo.links[1]).bw == 10


def test_topology_errors_in_topology_file_name_that_file(write):
    t = write("topo.yaml", "hosts: [h1, h2]\nlinks:\n  - [h1, h2]\nswichtes: []\n")
    with pytest.raises(ConfigError) as ei:
        load_topology(t)
    assert str(ei.value).startswith(f"{t}:4:") and "switches" in str(ei.value)


def test_l2_loop_is_refused(write, cli):
    t = write("topo.yaml", "hosts: [h1]\nswitches: [s1, s2, s3]\nlinks:\n  - [h1, s1]\n"
                           "  - [s1, s2]\n  - [s2, s3]\n  - [s3, s1]\n")
    r = cli("validate", str(t))
    assert r.returncode == 2 and "loop" in r.stderr and "routers" in r.stderr


def test_delay_without_netem_is_refused_naming_the_link(write):
    from testbed.network import features
    p = write("exp.yaml", "name: t\nduration: 1\ntopology:\n  hosts: [h1, h2]\n"
                          "  links:\n    - {ends: [h1, h2], delay: 5ms}\n")
    if features.has_qdisc("netem"):
        load_experiment(p)  # accepted where the kernel has netem
        pytest.skip("this kernel has netem: nothing to refuse")
    with pytest.raises(ConfigError) as ei:
        load_experiment(p)
    assert "h1-h2" in str(ei.value) and "netem" in str(ei.value) and "delay" in str(ei.value)


def test_cli_bad_input_exit_2_one_line_nothing_started(write, tmp_path):
    import subprocess
    import sys
    from testbed.network.tracker import CGROUP_ROOT, STATE_DIR
    p = write("exp.yaml", "name: t\ntopology: {builtin: incast}\nduration: 2\nworkload:\n"
                          "  flows:\n    - {src: h1, dst: h42}\n")
    before = set(STATE_DIR.glob("*")) | set(CGROUP_ROOT.glob("testbed-*"))
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(p), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and f"{p}:6:" in lines[0] and "h42" in lines[0], err
    assert not out.exists()  # not even a results directory
    import json
    for sf in set(STATE_DIR.glob("*.json")) - before:  # other runs may be going on
        assert json.loads(sf.read_text()).get("pid") != proc.pid


def test_cli_validate_all_shipped_files(cli):
    import glob
    from pathlib import Path

    from testbed.network.backends.bmv2 import bmv2_available

    files = sorted(glob.glob("experiments/*.yaml") + glob.glob("topologies/*.yaml"))
    assert files
    if not bmv2_available()[0]:
        # BMv2 experiments are refused where BMv2 is not installed, with the reason
        bm = [f for f in files if "backend: bmv2" in Path(f).read_text()]
        for f in bm:
            r = cli("validate", f)
            assert r.returncode == 2 and "backend bmv2 unavailable" in r.stderr, r.stderr
        files = [f for f in files if f not in bm]
    r = cli("validate", *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_imports_nothing_above_it():
    """Loading an experiment with instruments, eBPF CC parameters, TCP-INT and claims
    (every option type) imports only configuration: the option types live in
    config.models, the components they configure are not needed to validate them.
    `validate` as a whole (preflight) does not import numpy, pandas or matplotlib."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "from testbed.config.load import load_experiment\n"
        "p = load_experiment('experiments/powertcp_incast.yaml', check_kernel=False)\n"
        "e = p.points[0].experiment\n"
        "assert e.instruments.chosen() and e.congestion_control.chosen() and e.expect\n"
        "load_experiment('experiments/tcp_int_trace.yaml', check_kernel=False)\n"
        "load_experiment('experiments/noob_n3.yaml', check_kernel=False)\n"
        "from testbed.preflight import validate_file\n"
        "validate_file('experiments/noob_n4.yaml')\n"
        "assert not {'numpy', 'pandas', 'matplotlib'} & set(sys.modules), 'validate: numpy'\n"
        "print(' '.join(m for m in sys.modules if m.startswith('testbed.')))\n")
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.split()
    # validate_file (preflight) may load the components; load_experiment alone may not
    before = loaded[:loaded.index("testbed.preflight")] if "testbed.preflight" in loaded \
        else loaded
    above = [m for m in before if m.split(".")[1] in
             ("network", "instruments", "bpf", "claims", "claims_noob", "workload",
              "runner", "results", "plots", "preflight")]
    assert not above, above


def test_former_instrument_name_is_read_with_a_note(write):
    """`iperf` (the flows instrument's former name) still works, and says `flows`."""
    from conftest import run_cli
    for text in ("instruments: [queue, iperf]\n", "instruments:\n  iperf: {late_after: 1}\n"):
        p = write("exp.yaml", GOOD + text)
        plan = load_experiment(p)
        assert "flows" in plan.points[0].experiment.instruments.chosen()
        assert plan.notes == ["instruments.iperf: renamed flows (`iperf` is still read; "
                              "write `flows`)"]
        r = run_cli("validate", str(p))
        assert r.returncode == 0 and "note: instruments.iperf: renamed flows" in r.stderr
    plan = load_experiment(write("exp.yaml", GOOD + "instruments: [queue, flows]\n"))
    flows = plan.points[0].experiment.instruments.get("flows")
    assert plan.notes == [] and flows.late_after == 0.25
    with pytest.raises(ConfigError) as ei:
        load_experiment(write("exp.yaml", GOOD + "instruments:\n  iperf: {late_after: -1}\n"))
    assert ":11: instruments.iperf.late_after" in str(ei.value)
