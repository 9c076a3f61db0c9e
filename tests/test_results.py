"""Results people use, on bundles of real short runs: the pandas API and its Parquet
export, the example script, report.html rendered in headless Chromium, compare (one run
with a 10× larger bottleneck queue regresses), JUnit XML validated against its schema."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from testbed.results import load

pytestmark = pytest.mark.needs_root
REPO = Path(__file__).resolve().parents[1]

# Two pairs across a 50 Mb/s bottleneck (s1 → s2), 3 repetitions: CUBIC fills the FIFO, so
# NEW (200 packets instead of 20) holds ~10× the queue.
TINY = """\
name: tiny
scale: "test: 50 Mb/s bottleneck, no propagation delay"
topology: {builtin: dumbbell, pairs: 2, bw: 1000, bottleneck_bw: 50, bottleneck_queue: 20, ipv6: false}
hosts: {offloads: off}
cc: cubic
duration: 1.5
workload:
  flows:
    - {name: a, src: h1, dst: h3, start: 0, duration: 1.5}
    - {name: b, src: h2, dst: h4, start: 0.2, duration: 1.3}
  incast:
    - {name: burst, senders: [h2], dst: h3, start: 0.8, bytes: 64KB}
instruments: {queue: {nodes: [s1]}, iperf: {}}
repetitions: 3
expect:
  - {claim: utilization, cc: cubic, min: 0.5}
  - {metric: queue_p99_bytes, tolerance: 0.5}
"""


def _tb(*args, **kw):
    return run_cli(*args, timeout=300, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    exp = d / "tiny.yaml"
    exp.write_text(TINY)
    out = {}
    for name, sets in (("base", []), ("new", ["--set", "topology.bottleneck_queue=200"])):
        r = _tb("run", str(exp), "--out", str(d / name), "-q", *sets)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = d / name
    return out


def test_tables_carry_sweep_keys_and_shared_clock(runs):
    run = load(runs["base"])
    assert run.experiment == "tiny" and run.params == []
    assert sorted(run.points.rep) == [0, 1, 2] and set(run.points.status) == {"ok"}
    assert set(run.meta) == set(run.points.point)
    assert run.points.kernel.notna().all() and run.points.bottleneck.notna().all()
    q, tp, fl = run.queue, run.throughput, run.flows
    for df in (q, tp, fl):
        assert list(df.columns[:2]) == ["point", "rep"] and set(df.rep) == {0, 1, 2}
    # the bottleneck port s1 → s2 (s1-eth2) was sampled for the whole workload, and its
    # queue reached the 20-packet FIFO while both flows ran
    bn = q[(q.node == "s1") & (q.iface == "s1-eth2")]
    assert bn.time.min() < 0.1 and bn.time.max() > 1.4
    assert bn.backlog_bytes.max() > 15 * 1514
    assert set(tp.flow) == {"a", "b"} and tp.time.between(0, 3).all()
    # one clock: throughput samples fall inside the queue's sampled span of each point
    for point, g in tp.groupby("point"):
        qs = q[q.point == point].time
        assert qs.min() <= g.time.min() and g.time.max() <= qs.max() + 0.5, point
    burst = fl[fl.flow == "burst-h2"]
    assert (burst.bytes == 64000).all() and len(burst) == 3
    assert set(fl.columns) >= {"point", "rep", "flow", "cc", "mean_bps", "retransmits"}
    c = run.claims
    assert list(c.claim) == ["utilization"] and c.status.iloc[0] in ("PASS", "FAIL", "N/A")
    assert run.int_trace.empty and list(run.int_trace.columns) == ["point", "rep"]


def test_parquet_roundtrip(runs, tmp_path):
    r = _tb("export", str(runs["base"]), "--parquet", str(tmp_path / "pq"))
    assert r.returncode == 0, r.stderr
    run = load(runs["base"])
    for name, df in run.tables().items():
        back = pd.read_parquet(tmp_path / "pq" / f"{name}.parquet")
        assert list(back.columns) == list(df.columns), name
        if len(df):
            pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_dtype=False)
    assert len(pd.read_parquet(tmp_path / "pq" / "queue.parquet")) == len(run.queue) > 1000


def test_example_script_plots_two_runs(runs, tmp_path):
    png = tmp_path / "cdf.png"
    r = subprocess.run([sys.executable, str(REPO / "docs" / "results_example.py"),
                        str(runs["base"]), str(runs["new"]), "-o", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    p99 = [float(x) for x in re.findall(r"p99 ([\d.]+) KB", r.stdout)]
    assert len(p99) == 2 and p99[1] > 3 * p99[0], r.stdout   # the larger FIFO shows


# --- report.html in a real browser ---------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
# Runs first in <head>: records every element whose resource failed, then, once loaded,
# every image that did not decode and every resource fetched from outside the page.
PROBE = """<script>
window.__failed = [];
addEventListener('error', e => { const t = e.target;
  if (t && t !== window) __failed.push((t.tagName || '') + ' ' + (t.src || t.href || '')); }, true);
addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    failed: __failed, fetched: performance.getEntriesByType('resource').map(r => r.name)};
  const p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def _chromium(url: str, tmp: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:   # setup.sh installs it on Debian (CI); Ubuntu has it only as a snap
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's)")
    r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}",
                        "--virtual-time-budget=10000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


def test_report_renders_in_chromium(runs, tmp_path):
    base = runs["base"]
    page = base / "report.html"          # written at the end of `run`
    assert page.exists()
    probed = base / "probed.html"        # beside it, so its relative links resolve alike
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = _chromium(probed.as_uri(), tmp_path)
    probed.unlink()
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom).group(1)
                       .replace("&quot;", '"').replace("&amp;", "&"))
    pngs = list(base.glob("*.png")) + list(base.glob("*/plots/*.png")) + \
        list(base.glob("*/*.png"))
    assert probe["images"] == probe["decoded"] == len(pngs) >= 5, probe
    assert probe["failed"] == [] and probe["fetched"] == [], probe   # nothing from outside
    assert "<h1>tiny</h1>" in dom and "test: 50 Mb/s bottleneck" in dom
    # the topology: every node, the bottleneck's rate and queue, the sampled port
    for n in ("h1", "h2", "h3", "h4", "s1", "s2"):
        assert f'data-node="{n}"' in dom, n
    assert "50 Mb/s · 20 pkts" in dom and 'data-port="s1:s1-eth2"' in dom
    assert re.search(r"<td>(PASS|FAIL|N/A)</td><td>utilization</td><td>cubic</td>", dom)
    meta = json.loads((base / "default,rep=0" / "meta.json").read_text())
    assert meta["versions"]["kernel"] in dom and f"{meta['cpu_busy_pct']} %" in dom
    for rep in range(3):
        assert f'href="default,rep={rep}/queue.csv"' in dom and \
            (base / f"default,rep={rep}" / "queue.csv").exists()
    # the report command writes the same page elsewhere
    r = _tb("report", str(base), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0 and (tmp_path / "r.html").stat().st_size > 100_000, r.stderr


# --- compare and JUnit -----------------------------------------------------------------
def _junit_schema():
    import xmlschema
    return xmlschema.XMLSchema(str(REPO / "testbed" / "results" / "junit.xsd"))


def test_compare_names_the_regression_and_writes_valid_junit(runs, tmp_path):
    from xml.etree import ElementTree as ET
    xml = tmp_path / "compare.xml"
    r = _tb("compare", str(runs["base"]), str(runs["new"]), "--junit", str(xml))
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if " queue_p99_bytes " in line)
    assert row.startswith("REGRESSED"), r.stdout
    assert "queue_p99_bytes [default]" in r.stderr
    schema = _junit_schema()
    schema.validate(str(xml))
    cases = {c.get("name"): c for c in ET.parse(xml).iter("testcase")}
    assert {"goodput_mbps", "queue_p50_bytes", "queue_p99_bytes", "jain", "retransmits",
            "utilization"} <= set(cases)
    fail = cases["queue_p99_bytes"].find("failure")
    assert fail is not None and "regressed" in fail.get("message")
    # 3 vs 3 repetitions: the Mann-Whitney test decided (p ≤ α; exact, its smallest p is
    # 1/20), and the tolerance came from the experiment's expect: (50 %)
    p = float(re.search(r"Mann-Whitney one-sided p=([\d.]+)", fail.text).group(1))
    assert p <= 0.05 and "tolerance 50%" in fail.text, fail.text
    # the schema bites: a report with a misspelt element is rejected
    bad = xml.read_text().replace("<failure", "<failed", 1).replace("</failure>", "</failed>", 1)
    assert not schema.is_valid(bad)
    # a run against itself regresses nothing
    r = _tb("compare", str(runs["base"]), str(runs["base"]))
    assert r.returncode == 0 and "REGRESSED" not in r.stdout, r.stdout


def test_compare_api_judges_with_statistics():
    from testbed.results.compare import judge
    # three clearly larger queues: significant; two vs two cannot reach α: medians decide
    assert judge("queue_p99_bytes", [30e3, 31e3, 29e3], [160e3, 150e3, 170e3], 0.1)[0] == \
        "REGRESSED"
    v, _rel, p, detail = judge("queue_p99_bytes", [30e3, 31e3], [160e3, 150e3], 0.1)
    assert v == "REGRESSED" and "medians decide" in detail
    # overlapping samples, medians 20 % apart: not significant
    v, _rel, p, _d = judge("goodput_mbps", [50, 60, 40, 55], [45, 38, 62, 41], 0.1)
    assert v == "worse (not significant)" and p > 0.05
    assert judge("jain", [0.99], [0.98], 0.1)[0] == "ok"
    assert judge("drain_ms", [5.0], [float("inf")], 0.1)[0] == "REGRESSED"


def test_check_writes_valid_junit(runs, tmp_path):
    from xml.etree import ElementTree as ET
    xml = tmp_path / "check.xml"
    r = _tb("check", str(runs["base"]), "--junit", str(xml), "--no-write")
    assert r.returncode in (0, 1), r.stderr
    _junit_schema().validate(str(xml))
    (case,) = ET.parse(xml).iter("testcase")
    assert case.get("name") == "utilization" and case.get("classname") == "claims.cubic"
    failed = case.find("failure") is not None
    assert failed == (r.returncode == 1)
