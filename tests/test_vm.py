"""`python -m testbed vm` and the `aqm:`/netem refusals on this host: bad input stops
before anything starts; a kernel without a qdisc refuses the link and points at --vm.
(What runs inside the VM is tests/test_stock_kernel.py's tier.)"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli

from testbed.preflight import load_experiment
from testbed.errors import ConfigError
from testbed.network import features

REPO = Path(__file__).resolve().parents[1]


def _vm_temps() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("testbed-vm-*")}


def _cli(*args, env=None, timeout=60):
    return run_cli(*args, timeout=timeout, env=env)


def _exp(write, link: str, extra: str = "") -> Path:
    return write("exp.yaml", "name: t\nduration: 1\ntopology:\n  hosts: [h1, h2]\n"
                             f"  links:\n    - {{ends: [h1, h2], {link}}}\n{extra}")


@pytest.mark.parametrize("args, what", [
    (["vm", "run", "--kernel", "oldstable", "--", "true"], "unknown kernel 'oldstable'"),
    (["vm", "run", "--memory", "64", "--", "true"], "too little"),
    (["vm", "run", "--accel", "hvf", "--", "true"], "unknown accelerator"),
    (["vm", "run", "--accel", "kvm", "--icount", "0", "--", "true"], "software emulation"),
    (["vm", "run", "--icount", "11", "--", "true"], "--icount SHIFT (0-10)"),
    (["vm", "run"], "no command"),
    (["vm", "build", "--kernel", "sid"], "unknown kernel 'sid'"),
    (["run", "experiments/powertcp_incast.yaml", "--vm", "--kernel", "x"], "unknown kernel"),
])
def test_vm_bad_input_is_one_line_exit_2_nothing_started(args, what):
    before = _vm_temps()
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _vm_temps() == before


def test_vm_without_qemu_is_refused_before_anything(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}   # no qemu-system-x86_64 on it
    before = _vm_temps()
    r = _cli("vm", "run", "--", "true", env=env)
    assert r.returncode == 2 and "qemu-system-x86_64 not found" in r.stderr, r.stderr
    assert "qemu-system-x86" in r.stderr  # the fix names the Debian package
    assert _vm_temps() == before


def test_run_vm_bad_experiment_fails_on_the_host_before_a_boot(write):
    p = write("bad.yaml", "name: t\nduration: 1\ntopology: {builtin: incast}\n"
                          "workload:\n  flows:\n    - {src: h1, dst: h42}\n")
    before = _vm_temps()
    r = _cli("run", str(p), "--vm")
    assert r.returncode == 2 and "h42" in r.stderr, r.stderr
    assert _vm_temps() == before


@pytest.mark.parametrize("kind", ["red", "codel", "fq_codel", "pie", "fq"])
def test_aqm_on_a_kernel_without_it_is_refused_with_the_vm_hint(write, kind):
    p = _exp(write, f"bw: 20, aqm: {kind}")
    if features.has_qdisc(kind):
        load_experiment(p)
        pytest.skip(f"this kernel has sch_{kind}: nothing to refuse")
    with pytest.raises(ConfigError) as ei:
        load_experiment(p)
    msg = str(ei.value)
    assert "h1-h2" in msg and f"sch_{kind}" in msg and "--vm" in msg, msg


def test_vm_true_experiment_validates_here_and_leaves_the_kernel_to_the_guest(write):
    p = _exp(write, "bw: 20, delay: 5ms, aqm: {kind: red, ecn: true}", "vm: true\ncc: dctcp\n")
    plan = load_experiment(p)
    assert plan.experiment.vm and plan.points[0].experiment.cc == "dctcp"


def test_vm_icount_experiment_asks_for_the_instruction_clock(write, cli):
    """`vm: {icount: N}` runs in the VM like `vm: true`, and the TCG command line it leads
    to carries qemu's -icount on one vCPU; a shift out of range names its line."""
    from testbed.vm.qemu import VmOptions, _accel
    p = _exp(write, "bw: 20, delay: 5ms", "vm: {icount: 0}\n")
    assert load_experiment(p).experiment.vm.icount == 0
    acc = _accel(VmOptions(accel="tcg", icount=0), Path("/nonexistent"), print)
    assert acc == ["-accel", "tcg,thread=single", "-icount", "shift=0,sleep=off"]
    assert _accel(VmOptions(accel="tcg"), Path("/nonexistent"), print)[1] == \
        "tcg,thread=multi"
    r = cli("validate", str(_exp(write, "bw: 20", "vm: {icount: 11}\n")))
    assert r.returncode == 2 and "icount" in r.stderr and ":7:" in r.stderr, r.stderr


@pytest.mark.parametrize("aqm, what", [
    ("{kind: codel, min: 10KB}", "min is not an option of codel"),
    ("{kind: fq, ecn: true}", "fq does not mark ECN"),
    ("{kind: red, min: 90KB, max: 30KB}", "min must not exceed max"),
    ("{kind: blue}", "kind"),
])
def test_aqm_bad_options_name_the_line(write, cli, aqm, what):
    p = _exp(write, f"bw: 20, aqm: {aqm}", "vm: true\n")
    r = cli("validate", str(p))
    assert r.returncode == 2 and what in r.stderr and ":6:" in r.stderr, r.stderr


def test_doctor_lists_stock_kernel_features_with_the_vm_hint(cli):
    out = cli("doctor").stdout
    for row in ("qdisc netem", "qdisc fq ", "qdisc fq_codel", "qdisc codel", "qdisc red",
                "qdisc pie", "kernel TCP CC dctcp"):
        line = next((ln for ln in out.splitlines() if row in ln), None)
        assert line is not None, (row, out)
        assert line.startswith("ok") or "--vm" in line or "testbed vm" in line, line
