"""Flow accounting from the wire, and handshakes: flows.csv says when each flow's data
really arrived, how its handshakes went, and marks a flow that did not run as asked.

Real runs (`python -m testbed run`), real kernel counters (each host namespace's SNMP
TCPSynRetrans, read by the runner into meta.json) as the independent witness, and a real
fault: a tc egress eBPF program (tests/bpf/syn_drop.bpf.c) that drops a host's first SYN.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import PY, REPO, run_cli
from testbed import claims

pytestmark = pytest.mark.needs_root

RATE_MBPS = 50


def _run(exp: Path, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("run", str(exp), "--out", str(out), "-q", timeout=timeout)


def _flows(pdir: Path) -> dict[str, dict]:
    return {r["flow"]: r for r in csv.DictReader(open(pdir / "flows.csv"))}


def _syn_drop(out: Path, *flags: str) -> Path:
    inc = [f"-I/usr/include/{d}" for d in os.listdir("/usr/include") if d.endswith("-linux-gnu")]
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", *inc, *flags, "-c",
                    str(REPO / "tests" / "bpf" / "syn_drop.bpf.c"), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def syn_drop(tmp_path_factory) -> Path:
    return _syn_drop(tmp_path_factory.mktemp("bpf") / "syn_drop.o")


DELAYED = """
name: tbtest_delayed
scale: "test: {rate} Mb/s bottleneck"
topology: {{builtin: incast, senders: 3, bw: 1000, bottleneck_bw: {rate}, bottleneck_queue: 100,
           ipv6: false}}
hosts: {{offloads: off}}
duration: 3.5
cc: cubic
workload:
  flows:
    - {{name: long, src: h1, dst: h0, start: 0, duration: 3}}
    - {{name: delayed, src: h2, dst: h0, start: 0.5, duration: 2}}
  incast:
    - {{name: burst, senders: [h3], dst: h0, start: 1.0, bytes: 64KB, warm: true}}
  commands:   # h2's first SYN (iperf3's control connection, at 0.5 s) is dropped; tc's
              # loader wants a bpffs in the host's own mount namespace
    - {{host: h2, at: 0, cmd: "mount -t bpf bpf /sys/fs/bpf && tc qdisc add dev h2-eth0 clsact && tc filter add dev h2-eth0 egress bpf da obj {obj} sec tc"}}
instruments: {{queue: {{interval: 1ms, ports: [s1-eth0]}}, iperf: {{}}}}
"""


def test_delayed_flow_reported_with_its_true_start(tmp_path, syn_drop):
    exp = tmp_path / "delayed.yaml"
    exp.write_text(DELAYED.format(rate=RATE_MBPS, obj=syn_drop))
    out = tmp_path / "res"
    r = _run(exp, out)
    assert r.returncode == 0, r.stderr[-3000:]
    p = out / "default"
    fl = _flows(p)
    meta = json.loads((p / "meta.json").read_text())
    # the kernel's own counter: h2 retransmitted a SYN, nobody else did
    assert meta["tcp_counters"]["h2"]["TCPSynRetrans"] >= 1, meta["tcp_counters"]
    assert all(c["TCPSynRetrans"] == 0 for h, c in meta["tcp_counters"].items() if h != "h2")
    d = fl["delayed"]
    # released on time, but its data arrived after the 1 s SYN retransmission timeout
    assert abs(float(d["released"]) - 0.5) < 0.1, d
    assert 1.4 <= float(d["start"]) <= 2.0, d
    assert int(d["syn_retransmits"]) >= 1 and float(d["connect_ms"]) >= 900, d
    assert "late" in d["status"] and d["source"] == "wire", d
    # the receiver's throughput series agrees: nothing before the true start
    tput = [float(x["time"]) for x in csv.DictReader(open(p / "throughput.csv"))
            if x["flow"] == "delayed" and float(x["bps"]) > 0]
    assert tput and min(tput) >= float(d["start"]), (min(tput), d)
    # the others ran as asked; the warm burst connected before t0 and sent on release
    assert fl["long"]["status"] == "ok" and fl["burst-h3"]["status"] == "ok", fl
    b = fl["burst-h3"]
    assert b["warm"] == "1" and int(b["syn_retransmits"]) == 0 and int(b["bytes"]) == 64000
    assert 1.0 <= float(b["start"]) < float(b["end"]) < 1.5, b
    # nothing reads more than the link carried: each flow, and all of them together
    rate = RATE_MBPS * 1e6
    spans = [(float(f["start"]), float(f["end"]), int(f["bytes"])) for f in fl.values()]
    total = sum(s[2] for s in spans) * 8 / (max(s[1] for s in spans) - min(s[0] for s in spans))
    assert total <= 1.02 * rate, (total, fl)
    assert all(float(f["mean_bps"]) <= 1.02 * rate for f in fl.values()), fl
    summary = next(csv.DictReader(open(out / "summary.csv")))
    assert float(summary["total_mbps"]) <= 1.02 * RATE_MBPS, summary
    assert float(summary["goodput_mbps"]) <= 1.02 * RATE_MBPS, summary
    assert summary["flows_not_ok"] == "1" and int(summary["syn_retransmits"]) >= 1, summary
    # a claim over this point is not judged on its wrong-looking series
    v = claims.check(out, [{"claim": "utilization", "cc": "cubic", "min": 0.5}])
    assert v[0].passed is None and "delayed late" in v[0].reason, v[0].reason


def test_flow_that_never_connects(tmp_path):
    """Every SYN of h2 dropped: iperf3 gives up (--connect-timeout), the point fails, and
    flows.csv still says what happened — no data, never connected, SYNs retransmitted."""
    obj = _syn_drop(tmp_path / "syn_drop_all.o", "-DSYN_DROP_ALL")
    text = DELAYED.format(rate=RATE_MBPS, obj=obj).replace("duration: 3.5\n", "duration: 2\n") \
        .replace("{name: long, src: h1, dst: h0, start: 0, duration: 3}",
                 "{name: long, src: h1, dst: h0, start: 0, duration: 2}") \
        .replace("{name: delayed, src: h2, dst: h0, start: 0.5, duration: 2}",
                 "{name: delayed, src: h2, dst: h0, start: 0.5, duration: 1}")
    exp = tmp_path / "never.yaml"
    exp.write_text(text)
    out = tmp_path / "res"
    r = _run(exp, out)
    assert r.returncode == 1, r.stderr[-3000:]
    p = out / "default"
    assert json.loads((p / "meta.json").read_text())["status"] == "failed"
    d = _flows(p)["delayed"]
    assert d["status"] == "no_connection" and d["bytes"] == "0" and d["start"] == "", d
    assert int(d["syn_retransmits"]) >= 1 and d["error"], d
    assert _flows(p)["long"]["status"] == "ok"


FRESH = """
name: tbtest_fresh
scale: "test: uncongested 1 Gb/s"
topology: {{builtin: incast, senders: {n}, bw: 1000, bottleneck_bw: 1000,
           bottleneck_queue: 1000, ipv6: false}}
hosts: {{offloads: off}}
duration: {dur}
settle: 0.2
workload:
  incast:
{incasts}
instruments: [iperf]
repetitions: {reps}
"""


def test_fresh_flows_lose_no_syn(tmp_path):
    """200 first contacts (10 fresh networks × 20 senders, staggered 25 ms, nothing queued
    anywhere): the emulation itself loses no SYN — per flow from the wire, and per host
    from the kernel's own counter."""
    n, reps, gap = 20, 10, 0.025
    incasts = "\n".join(f"    - {{name: f{i}, senders: [h{i}], dst: h0, start: {i * gap:.3f}, "
                        f"bytes: 20KB}}" for i in range(1, n + 1))
    exp = tmp_path / "fresh.yaml"
    exp.write_text(FRESH.format(n=n, reps=reps, incasts=incasts, dur=n * gap + 0.3))
    out = tmp_path / "res"
    r = _run(exp, out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    flows, syns, late = 0, [], []
    for p in sorted(out.glob("*rep=*")):
        meta = json.loads((p / "meta.json").read_text())
        syns += [(p.name, h) for h, c in meta["tcp_counters"].items() if c["TCPSynRetrans"]]
        for f in _flows(p).values():
            flows += 1
            if f["status"] != "ok" or f["syn_retransmits"] != "0":
                late.append((p.name, f["flow"], f["status"], f["syn_retransmits"],
                             f["connect_ms"]))
    assert flows == n * reps
    assert not syns and not late, (syns, late)


def test_build_cache_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_BUILD"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    r = subprocess.run([PY, "-c", "from testbed.bpf.build import compile_bpf; "
                        "print(compile_bpf('flowacct'))"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    obj = Path(r.stdout.strip())
    assert obj.is_relative_to(tmp_path / "cache" / "testbed" / "bpf") and obj.stat().st_size
    env["TESTBED_BUILD"] = str(tmp_path / "mine")
    r = subprocess.run([PY, "-c", "from testbed.bpf.build import compile_bpf; "
                        "print(compile_bpf('flowacct'))"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert Path(r.stdout.strip()).is_relative_to(tmp_path / "mine"), r.stdout + r.stderr
