"""Fuzzing the configuration edge: mutated experiment and topology files (from the shipped
ones) give "ok" or one ConfigError naming the file and a line — never another exception.

Mutators: bytes (flips, insertions, cuts), lines (delete, duplicate, swap, indent),
values (a value of the parsed tree replaced by a hostile one, a key removed or added,
written back as YAML so they pass the parser and reach the models and the cross-checks),
and generated (small topologies and workloads drawn from a few names and addresses,
combined wrongly in every way: loops, address clashes, kinds, reachability, events).
The module runs on a time budget (FUZZ_BUDGET_S, default 60 s, shared by the mutators);
every example is validated in-process, as `validate` does.
A crash found is kept as a file under tests/fuzz_cases/, replayed by
test_fuzz_regression_cases.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from testbed.preflight import validate_file
from testbed.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "experiments").glob("*.yaml")) + \
    sorted((REPO / "topologies").glob("*.yaml"))
CASES = REPO / "tests" / "fuzz_cases"
BUDGET_S = float(os.environ.get("FUZZ_BUDGET_S", "60"))
SHARES = {"bytes": 0.25, "lines": 0.2, "values": 0.3, "generated": 0.25}   # of the budget
BATCH = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))


def _fuzz(search, share: str, root: Path) -> int:
    """Run batches of a Hypothesis search (each with fresh random examples, shrinking a
    failure within its batch) until this mutator's share of the budget is used."""
    t0 = time.monotonic()
    end = t0 + SHARES[share] * BUDGET_S
    batches = 0
    # stop when the next batch (as long as the mean one so far) would end past the share
    while batches == 0 or time.monotonic() + (time.monotonic() - t0) / batches < end:
        search(root)
        batches += 1
    return batches


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of experiments/ and topologies/ (experiments name ../topologies/…)."""
    root = tmp_path_factory.mktemp("fuzz")
    for d in ("experiments", "topologies"):
        shutil.copytree(REPO / d, root / d)
    return root


def _check(path: Path) -> None:
    """The property: ok, or a ConfigError with this file and a line."""
    try:
        validate_file(path, [])
    except ConfigError as e:
        # this file, or the topology file it names (then that file's line)
        assert e.file == str(path) or Path(e.file).is_file(), str(e)
        assert e.line is not None and e.line >= 1, f"no line: {e}"
        assert "\n" not in str(e), str(e)


def _run(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        _check(path)
    except BaseException:
        # Hypothesis replays the smallest failing input last: this file is it. Copy it
        # to tests/fuzz_cases/<experiments|topologies>-<name>.yaml once fixed.
        (path.parent.parent / f"crash-{path.parent.name}.yaml").write_bytes(data)
        raise


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.sampled_from([0, -1, 1, 10**400, 2**31, 65536, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "h0", "h1", "h2", "s1", "r1", "r9", "nope", "10.0.0.1",
                     "10.0.0.0/24", "fd00::1", "1Gbit", "-5ms", "64KB", "cubic", "powertcp",
                     "bbr", "vegasx", "h1..h3", "h1..h9999", "queue", "int_trace",
                     "s1-eth1", "s1:s1-eth0", "link_down", "route", "a" * 300, "\u00e9\u4e2d",
                     "0x10", "1e999", "nan", "~", "[1, 2]"]),
    st.text(max_size=20),
    st.lists(st.sampled_from(["h1", "h2", "s1", "r1", 1, None]), max_size=4),
    st.dictionaries(st.sampled_from(["bw", "ends", "ip", "src", "dst", "x", "enabled",
                                     "hosts", "nodes"]),
                    st.sampled_from([1, "h1", None, [], {}, True]), max_size=3),
)


def _paths(d, prefix=()):
    """Every path into a parsed tree (mappings and lists)."""
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))


def _at(d, path):
    for p in path:
        d = d[p]
    return d


@BATCH
@given(src=st.sampled_from(SHIPPED), data=st.data())
def _search_bytes(tree, src, data):
    raw = bytearray(src.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "cut", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.sampled_from(
                [b"\0", b"\xff\xfe", b"\xef\xbb\xbf", b"&a ", b"*a", b"!!python/object ",
                 b"<<: ", b"---\n", b"[", b"{", b"\t", b"\x85", b"\xc3", b": ", b"- ",
                 b"\n  ", b"? ", b"!!binary ", b"!custom ", b"%YAML 1.1\n"]))
        elif op == "cut" and raw:
            raw[pos:pos + data.draw(st.integers(1, 40))] = b""
        elif op == "truncate":
            raw = raw[:pos]
    _run(tree / src.parent.name / f"fuzz-{src.name}", bytes(raw))


@BATCH
@given(src=st.sampled_from(SHIPPED), data=st.data())
def _search_lines(tree, src, data):
    lines = src.read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        else:
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
    _run(tree / src.parent.name / f"fuzz-{src.name}", ("\n".join(lines) + "\n").encode())


@BATCH
@given(src=st.sampled_from(SHIPPED), data=st.data())
def _search_values(tree, src, data):
    doc = yaml.safe_load(src.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "add", "copy"]))
        if op == "replace":
            if not path:
                continue
            _at(doc, path[:-1])[path[-1]] = data.draw(HOSTILE)
        elif op == "delete" and path:
            parent = _at(doc, path[:-1])
            del parent[path[-1]]
        elif op == "add":
            target = _at(doc, path)
            if isinstance(target, dict):
                target[data.draw(st.sampled_from(["x", "hosts", "ip", "ip6", "bw", "nodes",
                                                  "ports", "via", "cc", "dst", "senders"]))] = \
                    data.draw(HOSTILE)
            elif isinstance(target, list):
                target.append(data.draw(HOSTILE))
        elif op == "copy" and path:
            # another part of the file put here: plausible shapes, wrong places
            other = _at(doc, data.draw(st.sampled_from(paths)))
            import copy
            _at(doc, path[:-1])[path[-1]] = copy.deepcopy(other)
    try:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError, RecursionError):
        return   # a tree PyYAML cannot write (e.g. a value put inside itself): not input
    _run(tree / src.parent.name / f"fuzz-{src.name}", text.encode())


NAMES = ["h1", "h2", "h3", "h4", "s1", "s2", "r1", "r2", "x1"]
GOOD4 = [None, None, None, None, "10.1.0.1/24", "10.1.0.2/24", "10.0.1.7/24", "10.2.0.1/30"]
BAD4 = ["10.1.0.0/24", "10.1.0.255/24", "10.1.0.1/16", "10.0.0.1/24", "10.3.0.1/32",
        "127.0.0.1/8", "224.0.0.1/24", "10.1.0.1/31", 5, "nope"]
GOOD6 = [None, None, None, "fd01::1/64", "fd01::2/64", "fd00::1/64"]
BAD6 = ["fd01::/64", "fe80::1/64", "fd01::1/127", "::1/128"]


@BATCH
@given(data=st.data())
def _search_generated(tree, data):
    """Topologies and workloads drawn from scratch: few names, mostly plausible choices
    and one wrong one now and then (1 in 12 per choice), so that every check is reached:
    loops, addresses, kinds, reachability, events, instruments, CCs."""
    d = data.draw

    def pick(good: list, bad: list, odds: int = 12):
        return d(st.sampled_from(bad)) if bad and d(st.integers(1, odds)) == 1 else \
            d(st.sampled_from(good))
    hosts = d(st.lists(st.sampled_from(["h1", "h2", "h3", "h4"]), min_size=2, max_size=4,
                       unique=True))
    switches = d(st.lists(st.sampled_from(["s1", "s2"]), max_size=2, unique=True))
    routers = d(st.lists(st.sampled_from(["r1", "r2"]), max_size=2, unique=True))
    nodes = hosts + switches + routers
    fwd = switches + routers or hosts[:1]
    links = {frozenset((n, d(st.sampled_from([f for f in fwd if f != n] or hosts[1:2]))))
             for n in nodes if [f for f in fwd if f != n] or n != hosts[1]}
    for _ in range(d(st.integers(0, 2))):   # extra links: loops, multi-homed hosts
        a, b = d(st.sampled_from(nodes)), d(st.sampled_from(nodes))
        if a != b:
            links.add(frozenset((a, b)))
    links = [sorted(l) for l in links if len(l) == 2]
    v6 = d(st.booleans())
    topo = {"ipv6": v6,
            "hosts": {h: {k: v for k, v in (("ip", pick(GOOD4, BAD4)),
                                           ("ip6", pick(GOOD6, BAD6) if v6 else
                                            pick([None], ["fd01::1/64"])))
                          if v is not None} for h in hosts},
            "switches": switches, "routers": routers,
            "links": [l if d(st.booleans()) else
                      {"ends": l, "bw": pick([10, "1Gbit", 100], [0, "fast"], 40),
                       "queue": pick([100, "64KB"], [0, "lots"], 40)} for l in links]}
    names = pick([hosts], [NAMES])

    def pair():
        a = d(st.sampled_from(names))
        return a, pick([x for x in names if x != a] or [a], [a, "s1", "r1"])
    flows = []
    for _ in range(d(st.integers(0, 3))):
        a, b = pair()
        flows.append({"src": a, "dst": b, "ipv6": pick([False, v6], [True]),
                      "cc": pick(["cubic", "reno", "bbr"], ["powertcp", "dctcp", "nope"])})
    events = [{"at": pick([0.1, 1], [5]), "action": "link_down", "link": pick(links, [["h1", "x1"]])}
              for _ in range(d(st.integers(0, 1))) if links]
    events += [{"at": pick([0.5], [9]), "action": "route", "node": pick(routers or ["r1"], NAMES),
                "dst": pick(hosts, ["10.9.0.0/24", "fd01::/64", "x1"]),
                "via": [pick(routers + hosts, ["10.1.0.9", "fd01::9", "x1"])]}
               for _ in range(d(st.integers(0, 1)))]
    exp = {"name": "gen", "duration": 2, "topology": topo,
           "workload": {"flows": flows, "events": events,
                        "commands": [{"host": pick(nodes, ["x1"]), "at": pick([0, 1], [3]),
                                      "cmd": "true"} for _ in range(d(st.integers(0, 1)))]},
           "instruments": d(st.sampled_from([
               {}, {"queue": {"nodes": [pick(switches + routers or ["s1"], ["h1", "x1"])]}},
               {"queue": {"ports": [pick(["s1-eth0", "s1-eth1", "r1-eth0", "s1:s1-eth1"],
                                         ["h1-eth0", "x", "s1-eth9"])]}},
               {"noobprobe": {"hosts": [pick(hosts, ["s1", "x1"])],
                              "dests": [pick(hosts + ["10.1.0.1"], ["s1", "x1"])]}},
               {"noobflow": {"ports": [pick(["s1-eth0", "r1-eth1"], ["h1-eth0"])]}},
               {"pcap": {"nodes": [pick(nodes, ["x1"])],
                         "interfaces": [pick(["h1-eth0", "s1-eth0"], ["x"])]}},
               {"int_trace": {}}]))}
    if d(st.booleans()):
        exp["int"] = {"enabled": d(st.booleans()), "hosts": [pick(hosts, ["s1"])],
                      "switches": [pick(switches + routers or ["s1"], ["h1"])]}
    text = yaml.safe_dump(exp, sort_keys=False)
    _run(tree / "experiments" / "fuzz-generated.yaml", text.encode())


@pytest.mark.parametrize("mutator", list(SHARES))
def test_fuzz(tree, mutator):
    """ok or a ConfigError with file and line, for the mutator's share of the budget."""
    n = _fuzz(globals()[f"_search_{mutator}"], mutator, tree)
    assert n >= 1


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")) or [None],
                         ids=lambda p: p.name if p else "none")
def test_fuzz_regression_cases(tree, case):
    """Inputs that once crashed the loader or validate stay fixed."""
    if case is None:
        pytest.skip("no regression cases kept")
    kind = case.name.split("-", 1)[0]
    dst = tree / (kind if kind in ("experiments", "topologies") else "experiments") / case.name
    shutil.copy(case, dst)
    _check(dst)
