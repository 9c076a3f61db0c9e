"""Hostile and inconsistent input, as a user meets it: `python -m testbed validate/run` on
files we write. Every refusal: exit 2, one line `FILE:LINE: what and the fix` on stderr,
no traceback, no results folder, nothing left in the kernel (no cgroup, state file or
namespace of the run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]

GOOD = b"name: t\ntopology: {builtin: incast, senders: 2}\nduration: 2\n"

# name → (file bytes, line the error names, words the message holds)
LOADER = {
    "binary": (bytes(range(256)) * 4, 1, ["binary"]),
    "nul_in_text": (GOOD + b"scale: x\0y\n", 4, ["binary"]),
    "latin1": (GOOD + b"description: caf\xe9\n", 4, ["UTF-8"]),
    "control_char": (GOOD + b"description: a\x07b\n", 4, ["control character"]),
    "alias_bomb": (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" +
                   b"".join(b"%c: &%c [%s]\n" % (98 + i, 98 + i, b", ".join([b"*%c" % (97 + i)] * 10))
                            for i in range(8)) + GOOD, 5, ["alias bomb"]),
    "recursive_alias": (b"name: t\ntopology: &t {builtin: incast, x: *t}\nduration: 2\n", 2,
                        ["recursive alias"]),
    "unknown_alias": (b"name: t\ntopology: *nothing\nduration: 2\n", 2, ["unknown alias"]),
    "deep_nesting": (b"name: t\nx: " + b"[" * 10000 + b"]" * 10000 + b"\n", 2, ["nested deeper"]),
    "deep_mappings": (b"name: t\n" + b"".join(b"  " * i + b"k%d:\n" % i for i in range(200)), 66,
                      ["nested deeper"]),
    "python_tag": (b"name: !!python/object/apply:os.system [touch /tmp/pwned]\n", 1,
                   ["tag", "not allowed"]),
    "python_name_tag": (GOOD + b"scale: !!python/name:os.system ''\n", 4, ["tag"]),
    "custom_tag": (GOOD + b"description: !vault secret\n", 4, ["tag"]),
    "set_tag": (GOOD + b"instruments: !!set {queue, iperf}\n", 4, ["tag"]),
    "huge_int": (b"name: t\ntopology: {builtin: incast}\nduration: " + b"9" * 5000 + b"\n", 3,
                 ["not a valid int"]),
    "nan_duration": (b"name: t\ntopology: {builtin: incast}\nduration: .nan\n", 3, ["duration"]),
    "scalar_document": (b"42\n", 1, ["mapping"]),
    "list_document": (b"- name: t\n- duration: 2\n", 1, ["mapping"]),
    "two_documents": (GOOD + b"---\n" + GOOD, 4, ["second YAML document"]),
    "complex_key": (GOOD + b"? [a, b]\n: 1\n", 4, ["key"]),
    "duplicate_key": (GOOD + b"duration: 3\n", 4, ["duplicate key"]),
    "syntax": (b"name: t\n  topology: x\n", 2, ["YAML syntax"]),
    "hosts_list_of_mappings": (b"name: t\nduration: 2\ntopology:\n  hosts: [{h1: {}}]\n"
                               b"  links: []\n", 4, ["node names"]),
    "name_range_bomb": (GOOD + b"workload:\n  incast:\n    - {senders: h1..h999999999, dst: h0, "
                        b"start: 0, bytes: 1}\n", 6, ["range", "4096"]),
    "sweep_bomb": (GOOD + b"sweep:\n" + b"".join(b"  topology.x%d: [1,2,3,4,5,6,7,8,9,10]\n" % i
                                                 for i in range(6)), 4, ["10000"]),
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=120, cwd=cwd)


def _assert_refused(r: subprocess.CompletedProcess, path: Path, line: int, words: list[str]):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    assert f"{path}:{line}: " in lines[0], lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


@pytest.mark.parametrize("name", list(LOADER))
def test_loader_refuses_hostile_file(tmp_path, name):
    data, line, words = LOADER[name]
    p = tmp_path / f"{name}.yaml"
    p.write_bytes(data)
    _assert_refused(_cli("validate", str(p), cwd=tmp_path), p, line, words)


def test_bom_and_utf16_are_read(tmp_path):
    """A BOM is allowed (YAML says so); UTF-16 announced by its BOM is text too."""
    a = tmp_path / "bom8.yaml"
    a.write_bytes(b"\xef\xbb\xbf" + GOOD)
    b = tmp_path / "utf16.yaml"
    b.write_bytes(GOOD.decode().encode("utf-16"))
    r = _cli("validate", str(a), str(b), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok (1 point(s))") == 2


def test_merge_keys_and_anchors_still_work(tmp_path):
    p = tmp_path / "anchors.yaml"
    p.write_bytes(b"name: t\ntopology: {builtin: incast, senders: 2}\nduration: 2\n"
                  b"workload:\n  flows:\n    - &f {src: h1, dst: h0, start: 0, duration: 1}\n"
                  b"    - {<<: *f, src: h2}\n")
    r = _cli("validate", str(p), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_big_file_refused_before_parsing(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_bytes(GOOD + b"description: '" + b"x" * (2 << 20) + b"'\n")
    r = _cli("validate", str(p), cwd=tmp_path)
    assert r.returncode == 2 and "KiB" in r.stderr and "Traceback" not in r.stderr


def test_directory_and_missing_file(tmp_path):
    r = _cli("validate", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "directory" in r.stderr and "Traceback" not in r.stderr
    r = _cli("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


@pytest.mark.parametrize("sets, words", [
    (["duration=soon"], ["duration", "--set duration=soon"]),
    (["duraton=5"], ["unknown key 'duraton'", "duration", "--set duraton=5"]),
    (["topology.sendrs=4"], ["sendrs", "senders"]),
    (["duration.x=1"], ["duration is a value"]),
    (["workload.flows.7.cc=bbr"], ["no item 7"]),
    (["repetitions=[1, 2]"], ["repetitions", "--set"]),
    (["x=&a [*a]"], ["recursive alias"]),
    (["name=!!python/object/apply:os.system [ls]"], ["tag"]),
    (["no_equals_sign"], ["key.path=value"]),
])
def test_bad_set_is_refused(tmp_path, sets, words):
    p = tmp_path / "exp.yaml"
    p.write_bytes(GOOD)
    r = _cli("validate", str(p), *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(p) in lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


@pytest.mark.needs_root
@pytest.mark.parametrize("name", ["binary", "alias_bomb", "recursive_alias", "deep_nesting",
                                  "python_tag", "two_documents"])
def test_run_refuses_hostile_file_and_starts_nothing(tmp_path, name):
    from testbed.network.tracker import CGROUP_ROOT, STATE_DIR
    data, line, words = LOADER[name]
    p = tmp_path / f"{name}.yaml"
    p.write_bytes(data)
    netns_before = set(Path("/run/netns").glob("*")) if Path("/run/netns").exists() else set()
    cg_before = set(CGROUP_ROOT.glob("testbed-*"))
    st_before = set(STATE_DIR.glob("*"))
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(p)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    _assert_refused(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), p, line,
                    words)
    assert not (tmp_path / "results").exists()
    for sf in set(STATE_DIR.glob("*.json")) - st_before:   # other runs may be live
        assert json.loads(sf.read_text()).get("pid") != proc.pid
    for cg in set(CGROUP_ROOT.glob("testbed-*")) - cg_before:
        state = STATE_DIR / f"{cg.name.removeprefix('testbed-')}.json"
        assert not state.exists() or json.loads(state.read_text()).get("pid") != proc.pid
    if Path("/run/netns").exists():
        assert not {n for n in set(Path("/run/netns").glob("*")) - netns_before
                    if str(proc.pid) in n.name}
