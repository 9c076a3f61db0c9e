"""The PowerTCP paper's comparison set as eBPF CCs (bpf/dctcp.bpf.c, hpcc.bpf.c,
timely.bpf.c): each registers, carries a real flow, reacts to its own signal in the right
direction and stops reacting when the signal is removed, takes its parameters, and is
unregistered on every exit path."""
from __future__ import annotations

import csv
import json
import signal
import statistics
import time
from pathlib import Path

import pytest

from testbed.bpf import cc as ccmod
from testbed.bpf.cc import CongestionControls

from conftest import run_cli
from test_cc import PY, assert_cc_gone_when_holder_dies, available, iperf, pair

FRAC = 1 << 16


def run_exp(tmp_path: Path, text: str, timeout: float = 240) -> Path:
    exp = tmp_path / "exp.yaml"
    exp.write_text(text)
    out = tmp_path / "out"
    r = run_cli("run", str(exp), "--out", str(out), "-q", timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return out


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def main_flow(trace: list[dict]) -> list[dict]:
    """The trace rows of the socket with the most updates (the data connection; not
    iperf3's control connection, nor a receiver's socket)."""
    by: dict[str, list[dict]] = {}
    for r in trace:
        by.setdefault(r["flow"], []).append(r)
    return max(by.values(), key=len) if by else []


def qlen(pdir: Path, after: float = 0.5) -> list[int]:
    return [int(r["qlen_pkts"]) for r in rows(pdir / "queue.csv") if float(r["time"]) > after]


DCTCP = """
name: tbtest_dctcp
topology: {builtin: incast, senders: 1, bw: 1000, bottleneck_bw: 100, bottleneck_queue: 100,
           ipv6: false}
hosts: {offloads: off, quickack: true}
duration: 2.5
cc: dctcp
workload:
  flows: [{name: long, src: h1, dst: h0, start: 0, duration: 2.5}]
instruments:
  queue: {interval: 1ms, ports: [s1-eth0]}
  iperf: {}
  cc_trace: {}
sweep:
  topology.bottleneck_ecn_mark: [20, 1000]   # 1000 > the 100-packet FIFO: never marks
"""


def test_dctcp_holds_the_queue_at_k_and_stops_reacting_without_marks(tmp_path):
    """Marking at K = 20 packets: the switch marks, the receiver echoes, α rises and the
    queue stays near K at full rate. Without marking (the signal removed) α decays to 0
    and DCTCP is Reno: the 100-packet FIFO fills (K = 1000 packets: never marked)."""
    out = run_exp(tmp_path, DCTCP)
    marked = out / "bottleneck_ecn_mark=20"
    plain = out / "bottleneck_ecn_mark=1000"
    meta = json.loads((marked / "meta.json").read_text())
    k = meta["cc_names"]["dctcp"]
    assert meta["receiver_cc"] == {"h0": k} and meta["ecn_senders"] == ["h1"]
    flow = rows(marked / "flows.csv")[0]
    assert flow["kernel_cc"] == k and float(flow["mean_bps"]) > 85e6, flow
    ecn = rows(marked / "ecn.csv")[0]
    assert int(ecn["marked_pkts"]) > 100, ecn
    tr = [r for r in main_flow(rows(marked / "cc_trace.csv")) if float(r["time"]) > 0.5]
    assert len(tr) > 100 and all(r["cc"] == "dctcp" for r in tr)
    alpha = statistics.median(float(r["p_smooth"]) for r in tr)
    frac = [float(r["p_norm"]) for r in tr]
    assert 0.02 < alpha < 0.9 and max(frac) > 0.1, (alpha, max(frac))
    q = qlen(marked)
    print("with marks: median queue", statistics.median(q), "alpha", alpha)
    assert 10 <= statistics.median(q) <= 35 and max(q) < 80, (statistics.median(q), max(q))
    # the signal removed
    assert int(rows(plain / "ecn.csv")[0]["marked_pkts"]) == 0
    tr = main_flow(rows(plain / "cc_trace.csv"))
    assert tr and float(tr[-1]["p_smooth"]) < 0.01 and max(float(r["p_norm"]) for r in tr) == 0
    q = qlen(plain)
    print("without marks: median queue", statistics.median(q), "max", max(q))
    assert max(q) >= 95 and statistics.median(q) > 40


def test_dctcp_parameters_reach_the_program():
    """No marks: each window's α = α·(1 − g), from α_init. Two parameter sets, two CCs."""
    with pair(bottleneck_mbps=100) as net:
        ccs = CongestionControls(net.tracker)
        found = {}
        for port, (a0, g) in enumerate(((0.5, 1 / 16), (0.5, 0.25)), start=5201):
            k = ccs.kernel_name("dctcp", {"alpha_init": a0, "g": g})
            rec = ccs.record()
            res = iperf(net, k, 1, port=port)
            sport = res["start"]["connected"][0]["local_port"]
            evs = [e for e in rec.stop() if e.sport == sport]
            assert len(evs) > 5
            found[g] = [e.p_smooth / FRAC for e in evs[:3]]
            assert all(e.p_norm == 0 for e in evs)  # no marks on this path
        assert found[1 / 16] == pytest.approx([0.5 * (15 / 16) ** n for n in (1, 2, 3)],
                                              abs=2e-3), found
        assert found[0.25] == pytest.approx([0.5 * 0.75 ** n for n in (1, 2, 3)],
                                            abs=2e-3), found


@pytest.mark.parametrize("params, match", [
    ({"g": 0}, r"congestion_control\.dctcp\.g: .*greater than 0"),
    ({"alpha_init": 1.5}, r"congestion_control\.dctcp\.alpha_init"),
    ({"gamma": 0.5}, r"congestion_control\.dctcp\.gamma: Extra inputs"),
])
def test_bad_parameters_are_config_errors(params, match):
    from testbed.errors import ConfigError
    from testbed.network.tracker import RunTracker

    with RunTracker() as t:
        with pytest.raises(ConfigError, match=match):
            CongestionControls(t, {"dctcp": params})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
@pytest.mark.parametrize("name", ["dctcp", "hpcc", "timely"])
def test_cc_gone_when_holder_dies(name, sig):
    assert_cc_gone_when_holder_dies(name, sig)


@pytest.mark.parametrize("name", ["dctcp", "hpcc", "timely"])
def test_registered_then_gone_after_the_run(name):
    with pair() as net:
        k = CongestionControls(net.tracker, require_int=False).kernel_name(name)
        assert k in available() and k.startswith(net.tracker.short)
    assert k not in available()
    assert name in ccmod.EBPF_CCS


def _flow_events(evs, res):
    port = res["start"]["connected"][0]["local_port"]
    return [e for e in evs if e.sport == port]


def test_hpcc_follows_int_and_stops_without_it():
    """With TCP-INT: U comes from the bottleneck's telemetry, sits near η alone and above
    it beside CUBIC's standing queue, where HPCC's window falls. Without TCP-INT (the
    signal removed): no update ever, the window stays at W_init."""
    from concurrent.futures import ThreadPoolExecutor

    from testbed.network.tcpint import IntOptions, TcpInt

    params = {"base_rtt_us": 200, "host_bw_mbps": 100, "hop_bw_mbps": 100}
    with pair(bottleneck_mbps=100, senders=2) as net:
        TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
        ccs = CongestionControls(net.tracker, {"hpcc": params})
        k = ccs.kernel_name("hpcc")
        rec = ccs.record()
        alone = iperf(net, k, 2)
        ev_alone = _flow_events(rec.stop(), alone)
        rec = ccs.record()
        with ThreadPoolExecutor(1) as ex:
            cubic = ex.submit(iperf, net, "cubic", 3, 5202, None, "h2")
            time.sleep(0.5)
            shared = iperf(net, k, 2)
            cubic.result()
        ev_shared = _flow_events(rec.stop(), shared)
    assert alone["end"]["sum_received"]["bits_per_second"] > 75e6
    assert len(ev_alone) > 200 and all(e.base_rtt_us == 200 for e in ev_alone)
    u_alone = statistics.median(e.p_smooth / FRAC for e in ev_alone[len(ev_alone) // 4:])
    assert 0.7 < u_alone < 1.1, u_alone
    queued = [e for e in ev_shared if e.qlen >= 8192]
    assert len(queued) > 20
    assert statistics.median(e.p_smooth / FRAC for e in queued) > 0.95   # U above η
    w_init = 100e6 / 8 * 200e-6 / 1448 * 1024                          # segments × 2^10
    assert statistics.median(e.cwnd for e in queued) < 0.5 * w_init
    # the signal removed: the same CC without TCP-INT never updates
    with pair(bottleneck_mbps=100) as net:
        ccs = CongestionControls(net.tracker, {"hpcc": params}, require_int=False)
        k = ccs.kernel_name("hpcc")
        rec = ccs.record()
        res = iperf(net, k, 1)
        assert not _flow_events(rec.stop(), res)
        assert res["end"]["sum_received"]["bits_per_second"] > 50e6  # paced at W_init/T


def test_hpcc_eta_reaches_the_program():
    """η is the utilization HPCC aims at: 0.5 leaves half the link idle."""
    from testbed.network.tcpint import IntOptions, TcpInt

    base = {"base_rtt_us": 200, "host_bw_mbps": 100, "hop_bw_mbps": 100}
    got = {}
    with pair(bottleneck_mbps=100) as net:
        TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
        ccs = CongestionControls(net.tracker)
        for port, eta in enumerate((0.95, 0.5), start=5201):
            k = ccs.kernel_name("hpcc", {**base, "eta": eta})
            got[eta] = iperf(net, k, 2, port=port)["end"]["sum_received"]["bits_per_second"]
    print("hpcc rate by eta:", got)
    assert got[0.5] < 0.7 * got[0.95] and got[0.5] > 20e6, got


def test_timely_cuts_on_rtt_and_stops_without_thresholds():
    """Alone, TIMELY's gradient keeps the queue small (RTTs far below the full FIFO's
    12 ms) at most of the link. Beside CUBIC's standing queue every update above T_high
    cuts the rate by β·(1 − T_high/rtt), exactly. With T_low above every RTT (the signal
    removed) no update ever lowers the rate."""
    from concurrent.futures import ThreadPoolExecutor

    params = {"base_rtt_us": 200, "host_bw_mbps": 100, "t_low_us": 300, "t_high_us": 1000,
              "beta": 0.5}
    with pair(bottleneck_mbps=100, senders=2) as net:
        ccs = CongestionControls(net.tracker, {"timely": params})
        k = ccs.kernel_name("timely")
        rec = ccs.record()
        res = iperf(net, k, 2)
        evs = _flow_events(rec.stop(), res)
        assert res["end"]["sum_received"]["bits_per_second"] > 60e6
        assert len(evs) > 100 and all(e.base_rtt_us == 200 for e in evs)
        rtt = statistics.median(e.rtt_us for e in evs[len(evs) // 4:])
        print("timely alone: median rtt", rtt)
        assert rtt < 2000, rtt

        def beside_cubic(kname: str, port: int):
            rec = ccs.record()
            with ThreadPoolExecutor(1) as ex:
                cubic = ex.submit(iperf, net, "cubic", 3, port + 10, None, "h2")
                time.sleep(0.5)
                res = iperf(net, kname, 2, port=port)
                cubic.result()
            return _flow_events(rec.stop(), res)
        evs = beside_cubic(k, 5202)
        cuts = 0
        for a, b in zip(evs, evs[1:]):
            if b.rtt_us > 1000 and b.rate > 125000 * 1.01:
                want = a.rate * (1 - 0.5 * (1 - 1000 / b.rtt_us))
                assert b.rate == pytest.approx(want, rel=0.01, abs=2000), (a, b)
                cuts += 1
        assert cuts > 5
        k2 = ccs.kernel_name("timely", {**params, "t_low_us": 1_000_000,
                                        "t_high_us": 2_000_000})
        evs = beside_cubic(k2, 5203)
        assert len(evs) > 20 and max(e.rtt_us for e in evs) > 2000   # a queue was there
        assert all(b.rate >= a.rate for a, b in zip(evs, evs[1:]))


SINK = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
        "socket.SO_REUSEADDR, 1); s.bind(('', {port})); s.listen()\nc, _ = s.accept()\n"
        "while c.recv(1 << 16): pass\n")
SOURCE = ("import socket, time\ns = socket.socket()\ncc = lambda: s.setsockopt("
          "socket.IPPROTO_TCP, socket.TCP_CONGESTION, b'{cc}')\n{before}cc()\n"
          "s.connect(('{dst}', {port}))\n{after}cc()\n"
          "end = time.monotonic() + {seconds}\nbuf = bytes(1 << 16)\n"
          "while time.monotonic() < end: s.send(buf)\ns.close()\n")


def test_dctcp_receiver_echoes_the_exact_ce_state():
    """DCTCP's receiver sets ECE on the ACKs of CE data only (RFC 8257 §3.2), where
    RFC 3168's (a Reno receiver) holds ECE from the first CE until the sender's CWR: the
    share of ECE ACKs follows the share of CE data with DCTCP at both ends, and is
    larger with a classic receiver. A DCTCP SYN is ECT (as Linux's DCTCP sends it), which
    only a listener that itself needs ECN accepts: the classic case negotiates RFC 3168
    ECN (tcp_ecn=1, the CC set after connect(), as iperf3 does) and then runs DCTCP."""
    from scapy.all import IP, TCP

    from test_tcp_int import Capture
    from testbed.testing import running_network

    topo = {"builtin": "incast", "senders": 1, "ipv6": False, "bottleneck_bw": 100,
            "bottleneck_queue": 100, "bottleneck_ecn_mark": 20}
    shares = {}
    with running_network(topo, hosts={"offloads": False, "quickack": True}) as net:
        k = CongestionControls(net.tracker).kernel_name("dctcp")
        for port, receiver in ((5301, k), (5302, "reno")):
            net.run("h0", f"sysctl -qw net.ipv4.tcp_congestion_control={receiver}")
            sink = net["h0"].popen([PY, "-c", SINK.format(port=port)])
            deadline = time.monotonic() + 5
            while f":{port} " not in net["h0"].cmd("ss -ltnH"):
                assert time.monotonic() < deadline, "sink did not listen"
                time.sleep(0.05)
            cap = Capture(net, "h0", "h0-eth0", f"tcp port {port}", count=30000)
            classic = receiver != k
            net.run("h1", f"sysctl -qw net.ipv4.tcp_ecn={int(classic)}")
            src = net["h1"].popen([PY, "-c", SOURCE.format(
                cc=k, dst=net.ip("h0"), port=port, seconds=1,
                before="#" if classic else "", after="" if classic else "#")])
            src.wait(timeout=20)
            sink.wait(timeout=20)
            pkts = cap.stop()
            data = [p for p in pkts if IP in p and p[IP].dst == net.ip("h0")
                    and len(p[TCP].payload)]
            acks = [p for p in pkts if IP in p and p[IP].src == net.ip("h0")
                    and not len(p[TCP].payload)]
            ce = sum(p[IP].tos & 3 == 3 for p in data) / max(1, len(data))
            ece = sum(bool(p[TCP].flags & 0x40) for p in acks) / max(1, len(acks))
            shares[receiver == k] = (ce, ece, len(data), len(acks))
    print("CE share, ECE share (dctcp receiver, classic receiver):", shares)
    ce, ece, nd, na = shares[True]
    assert nd > 1000 and na > 300 and ce > 0.02
    assert 0.5 * ce <= ece <= 1.5 * ce + 0.02, shares
    ce2, ece2, _, _ = shares[False]
    assert ece2 > 1.5 * ce2, shares
