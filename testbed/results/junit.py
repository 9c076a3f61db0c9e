"""JUnit XML for CI: one test case per claim (check) or per claim and metric (compare).

The shape is the common one CI systems read (Jenkins, GitLab, GitHub actions' reporters):
<testsuites><testsuite name tests failures errors skipped time timestamp hostname>
<properties/><testcase classname name time>[<failure message type>|<skipped message>]
<system-out/></testcase></testsuite></testsuites>. `junit.xsd` beside this module is the
schema it is written to (tests validate against it).

A failed claim or a regressed metric is a <failure>; a claim that cannot be judged or a
metric absent in one run is <skipped>; everything else passes, its numbers in <system-out>.

Functions: write_check(verdicts, bundle, path), write_compare(comparison, path).
"""
from __future__ import annotations

import datetime as dt
import math
import platform
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = Path(__file__).with_name("junit.xsd")


def _suite(root: ET.Element, name: str, cases: list[dict], props: dict[str, str]) -> None:
    s = ET.SubElement(root, "testsuite", {
        "name": name, "tests": str(len(cases)),
        "failures": str(sum(c.get("failure") is not None for c in cases)),
        "errors": "0", "skipped": str(sum(c.get("skipped") is not None for c in cases)),
        "time": "0", "timestamp": dt.datetime.now().replace(microsecond=0).isoformat(),
        "hostname": platform.node() or "localhost"})
    pe = ET.SubElement(s, "properties")
    for k, v in props.items():
        ET.SubElement(pe, "property", {"name": k, "value": str(v)})
    for c in cases:
        tc = ET.SubElement(s, "testcase", {"classname": c["classname"], "name": c["name"],
                                            "time": "0"})
        if c.get("failure") is not None:
            f = ET.SubElement(tc, "failure", {"message": c["failure"][:500],
                                              "type": c.get("type", "regression")})
            f.text = c.get("text", "")
        elif c.get("skipped") is not None:
            ET.SubElement(tc, "skipped", {"message": c["skipped"][:500]})
        if c.get("out"):
            ET.SubElement(tc, "system-out").text = c["out"]


def _write(root: ET.Element, path: str | Path) -> Path:
    for k in ("tests", "failures", "errors", "skipped"):
        root.set(k, str(sum(int(x.get(k)) for x in root.findall("testsuite"))))
    root.set("time", "0")
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_check(verdicts: list, bundle: str | Path, path: str | Path,
                strict: bool = False) -> Path:
    """`check`'s verdicts (claims.Verdict) as one suite."""
    cases = []
    for v in verdicts:
        c = {"classname": f"claims.{v.cc or 'run'}", "name": v.claim, "out": v.reason}
        if v.passed is False or (strict and v.passed is None):
            c.update(failure=f"{v.claim} [{v.cc or '-'}]: {v.reason}", type="claim",
                     text="\n".join(f"{k} = {x}" for k, x in v.measured.items()))
        elif v.passed is None:
            c["skipped"] = f"not judged: {v.reason}"
        cases.append(c)
    root = ET.Element("testsuites", {"name": "testbed check"})
    _suite(root, f"check {Path(bundle).name}", cases, {"bundle": str(bundle)})
    return _write(root, path)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.6g}"
    return str(x)


def write_compare(cmp, path: str | Path) -> Path:
    """`compare`'s rows (results.compare.Comparison) as one suite."""
    cases = []
    for r in cmp.rows:
        change = "-" if r.change is None else ("inf" if math.isinf(r.change)
                                               else f"{r.change:+.1%}")
        out = (f"base {_fmt(r.base)} new {_fmt(r.new)} change {change}: {r.verdict}"
               + (f" ({r.detail})" if r.detail else "")
               + (f"\nbase samples {[_fmt(x) for x in r.base_values]}, new samples "
                  f"{[_fmt(x) for x in r.new_values]}" if r.base_values or r.new_values else ""))
        c = {"classname": f"{r.kind}s.{r.group}", "name": r.name, "out": out}
        if r.regressed:
            c.update(failure=f"{r.name} [{r.group}] regressed: base {_fmt(r.base)} → new "
                             f"{_fmt(r.new)} ({change})", type=r.kind, text=out)
        elif r.verdict == "n/a":
            c["skipped"] = f"{r.name}: {r.detail or 'not in both runs'}"
        cases.append(c)
    root = ET.Element("testsuites", {"name": "testbed compare"})
    _suite(root, f"compare {cmp.base.name} → {cmp.new.name}", cases,
           {"base": str(cmp.base), "new": str(cmp.new),
            **{f"tolerance.{k}": f"{v:g}" for k, v in cmp.tolerance.items()}})
    return _write(root, path)
