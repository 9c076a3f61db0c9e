"""The stock-kernel tier (`-m stock_kernel`): checks that need netem, AQMs, fq, dctcp or
an older kernel run inside the qemu VM of `python -m testbed vm` (Debian's 6.1 and
bookworm-backports' 6.12), one boot per kernel for all of them; each in-guest check is
reported here as its own test.

The image is built on first use (several minutes, cached under ~/.cache/testbed/vm until
its recipe changes). Where the VM cannot start (no qemu, not root, no disk space) the tier
skips, saying why.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
GUEST = "tests/guest/test_stock_kernel_guest.py"
# existing tests that need a kernel of each version: the eBPF CCs and TCP-INT
CC = "tests/test_cc.py::test_cc_registers_carries_flow_and_is_gone_after_teardown"
# 6.1 has no struct_ops links: registered by a map update, unregistered on Ctrl-C and by
# `clean` after a SIGKILL (6.12 holds it by a link the kernel closes, as the host does)
HOLDER = "tests/test_cc.py::test_cc_gone_when_holder_dies"
INT = ["tests/test_cc.py::test_powertcp_reads_tcp_int_telemetry",
       "tests/test_tcp_int.py::test_wellformed_option_valid_checksums",
       "tests/test_tcp_int.py::test_echo_reaches_the_senders_sk_storage"]
# INT's and the ECN marker's queue depth on the wire against a known standing queue: on
# 6.1 the qdisc is read with bpf_probe_read_kernel (no kfunc before 6.2). (The tests that
# judge it by each segment's sojourn need a CPU that keeps up with the link: not TCG's.)
QUEUE = "tests/test_tcp_int.py::test_int_and_ecn_marker_read_a_known_standing_queue"
QDISC_CHECK = f"{GUEST}::test_tcp_int_and_ecn_marking_read_the_qdisc_on_this_kernel"
REGRESS = "experiments/cc_wan_regress.yaml"
SELECT = {"stable": [GUEST, CC, HOLDER, *INT, QUEUE],
          "backports": [CC, *INT, QDISC_CHECK, QUEUE]}
BOOT_TIMEOUT_S = 1500

pytestmark = [pytest.mark.stock_kernel, pytest.mark.needs_root]


def _guest_functions() -> list[str]:
    tree = ast.parse((REPO / GUEST).read_text())
    return [f"{GUEST}::{n.name}" for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def _cases(kernel: str) -> list[str]:
    return [c for s in SELECT[kernel] for c in (_guest_functions() if s == GUEST else [s])]


def _why_no_vm() -> str | None:
    from testbed.errors import TestbedError
    from testbed.vm import image, qemu
    if os.environ.get("TESTBED_VM") == "1":
        return "already on the stock kernel (TESTBED_VM=1): tests/guest run here directly"
    if os.geteuid() != 0:
        return "the VM image build needs root"
    try:
        qemu.preflight(qemu.VmOptions())
        if not image.current().complete():
            image.preflight_build()
    except TestbedError as e:
        return f"the stock-kernel VM cannot start here: {e}"
    return None


_RUNS: dict[str, dict] = {}


def _boot(kernel: str, tmp: Path) -> dict:
    """One boot of `kernel` running every selected check (and, on stable, the CC
    regression experiment); {case: (outcome, text)}, the console log, the bundle."""
    if kernel in _RUNS:
        return _RUNS[kernel]
    from testbed.vm import qemu
    out = tmp / f"vm-{kernel}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = (f"python -m pytest -q -p no:cacheprovider -o junit_family=xunit1 "
           f"--junitxml=/mnt/out/junit.xml {' '.join(SELECT[kernel])}; ")
    cmd += "true"
    log = out / "console.log"
    with open(log, "w") as f:
        try:
            rc = qemu.run(cmd, qemu.VmOptions(kernel=kernel, out=out, timeout=BOOT_TIMEOUT_S,
                                              quiet=True), stream=f)
        except Exception as e:  # a boot that never ran the checks fails every case
            rc = f"{type(e).__name__}: {e}"
    res = {"rc": rc, "log": log, "out": out, "cases": {}}
    junit = out / "junit.xml"
    if junit.exists():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            f = tc.get("file") or tc.get("classname", "").replace(".", "/") + ".py"
            key = f"{f}::{tc.get('name').split('[')[0]}"
            bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
            skip = tc.find("skipped")
            outcome = "failed" if bad is not None else "skipped" if skip is not None else "passed"
            text = (bad.get("message", "") + "\n" + (bad.text or "")) if bad is not None else \
                (skip.get("message", "") if skip is not None else "")
            res["cases"].setdefault(key, []).append((tc.get("name"), outcome, text))
    _RUNS[kernel] = res
    return res


@pytest.fixture(scope="session")
def vm_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("stock-kernel")


@pytest.fixture(scope="session")
def vm_ready():
    why = _why_no_vm()
    if why:
        pytest.skip(why)


@pytest.mark.parametrize("kernel, case", [(k, c) for k in SELECT for c in _cases(k)])
def test_in_stock_kernel(kernel, case, vm_ready, vm_tmp):
    res = _boot(kernel, vm_tmp)
    tail = "\n".join(res["log"].read_text(errors="replace").splitlines()[-40:])
    got = res["cases"].get(case)
    assert got, f"{case} did not run in the guest (vm: {res['rc']}):\n{tail}"
    failed = [(n, t) for n, o, t in got if o == "failed"]
    assert not failed, "\n\n".join(f"{n}: {t}" for n, t in failed)
    assert any(o == "passed" for _, o, _ in got), got


def _cli(*args, timeout=BOOT_TIMEOUT_S, **kw):
    return run_cli(*args, timeout=timeout, **kw)


def test_vm_run_streams_output_shares_a_folder_and_returns_the_exit_code(vm_ready, tmp_path):
    r = _cli("vm", "run", "--out", str(tmp_path), "--", "sh", "-c",
             "uname -r; echo written-in-guest > /mnt/out/f; exit 7")
    assert r.returncode == 7, r.stdout + r.stderr
    assert re.search(r"^6\.1\.\d+-\d+-amd64$", r.stdout, re.M), r.stdout
    assert (tmp_path / "f").read_text() == "written-in-guest\n"
    assert "TCG" in r.stderr or "kvm" not in r.stderr.lower()  # the accelerator is said


def test_vm_ctrl_c_kills_qemu_and_removes_its_files(vm_ready):
    import signal
    import time
    before = {p.name for p in Path(tempfile.gettempdir()).glob("testbed-vm-*")}
    p = subprocess.Popen([sys.executable, "-m", "testbed", "vm", "run", "--", "sh", "-c",
                          "echo guest-ready; sleep 600"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 300
        while "guest-ready" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        assert "guest-ready" in line, p.stderr.read() if p.poll() is not None else "no boot"
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        qemu = [int(k) for k in kids
                if "qemu-system" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]
        assert len(qemu) == 1, kids
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 130
        assert not Path(f"/proc/{qemu[0]}").exists() or \
            "qemu" not in Path(f"/proc/{qemu[0]}/cmdline").read_text(errors="replace")
        after = {p.name for p in Path(tempfile.gettempdir()).glob("testbed-vm-*")}
        assert after <= before, after - before
    finally:
        if p.poll() is None:
            p.kill()


def test_cc_regression_with_propagation_delay_run_vm_bundle_on_host(vm_ready, tmp_path):
    """`run EXP` of a `vm: true` experiment boots the VM; the bundle lands here and its
    claims are judged (cubic and bbr over fq_codel/ECN; 40 ms RTT, 10 Mb/s)."""
    out = tmp_path / "regress"
    r = _cli("run", "-q", REGRESS, "--out", str(out))
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
    claims = out / "claims.json"
    assert claims.exists(), tail
    verdicts = json.loads(claims.read_text())
    verdicts = verdicts.get("verdicts", verdicts) if isinstance(verdicts, dict) else verdicts
    assert len(verdicts) == 4, verdicts
    bad = [v for v in verdicts if v.get("status") != "PASS"]
    assert not bad, bad
    assert r.returncode == 0, tail
    for pt in ("cc=cubic", "cc=bbr"):
        assert (out / pt / "queue.csv").exists() and (out / pt / "meta.json").exists()
