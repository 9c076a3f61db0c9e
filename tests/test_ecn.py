"""ECN marking in the switches (network.ecn, bpf/ecn_mark.bpf.c): real flows, real
packets. Each segment's CE bit, captured at the receiver, against the queue it found at
the switch: its sojourn (captured entering the switch and at the receiver, one clock)
times the drain rate, minus its own size — the ground truth the TCP-INT tests use."""
from __future__ import annotations

import re
import subprocess
import time

import pytest
from scapy.all import IP, TCP

from testbed.config.models import EcnMark
from testbed.testing import running_network

from test_tcp_int import QDISC_PATHS, Capture, iperf, offloads, topo_line
from testbed.network.ecn import EcnMarking
from testbed.network.backends.bmv2 import bmv2_available

BMV2_OK, BMV2_WHY = bmv2_available()
needs_bmv2 = pytest.mark.skipif(not BMV2_OK, reason=f"bmv2 backend unavailable: {BMV2_WHY}")

RATE = 20e6
MTU_FRAME = 1514


def marks_vs_backlog(mark: dict, seconds: int = 2, qdisc: str | None = None):
    """(CE bit, backlog found in bytes) per data segment of one ECN flow h1 → s1 → h2
    through a 20 Mb/s port marking by `mark`; and the program's counters. qdisc: how the
    marker reads the egress qdisc (None: as the run chose)."""
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 20, "queue": {"bytes": 150000},
                      "ecn_mark": mark})
    with running_network(topo, hosts={"ecn": True}) as net:
        if qdisc is not None:  # the same ports, marked by the program built that way
            kernel = net.backends["kernel"]
            kernel.ecn.stop()
            kernel.ecn = EcnMarking(net, qdisc=qdisc).start()
        offloads(net, ["h1", "h2"], False)
        cin = Capture(net, "s1", "s1-eth0", "tcp", direction="in", count=6000)
        cout = Capture(net, "h2", "h2-eth0", "tcp", direction="in", count=6000)
        iperf(net, "h1", "h2", seconds)
        pin, pout = cin.stop(), cout.stop()
        src = net.ip("h1")
        counters = net.ecn_counters()
    t_in = {(p[TCP].seq, p[IP].id): float(p.time) for p in pin
            if p[IP].src == src and len(p[TCP].payload)}
    pairs = []
    for p in pout:
        k = (p[TCP].seq, p[IP].id)
        if p[IP].src == src and k in t_in:
            found = (float(p.time) - t_in[k]) * RATE / 8 - len(p)
            pairs.append((p[IP].tos & 3, found))
    return pairs, counters


@pytest.mark.parametrize("qdisc", QDISC_PATHS)
def test_marking_happens_exactly_above_k(qdisc):
    """K = 20 KB: every segment that found more than K queued is CE, none that found less
    (within the ground truth's noise: a packet or two of capture jitter and HTB burst),
    whichever way the marker reads the qdisc."""
    k = 20000
    pairs, counters = marks_vs_backlog({"k": "20000B"}, qdisc=qdisc)
    assert len(pairs) > 500
    # ECN negotiated: ECT or CE, but for retransmissions, which Linux sends Not-ECT
    # (RFC 3168 6.1.5; a loaded machine's flow loses a few): those are left out
    not_ect = sum(ecn == 0 for ecn, _ in pairs)
    assert not_ect <= 0.05 * len(pairs), (not_ect, len(pairs))
    pairs = [(ecn, f) for ecn, f in pairs if ecn != 0]
    ce = [f for ecn, f in pairs if ecn == 3]
    not_ce = [f for ecn, f in pairs if ecn != 3]
    assert len(ce) > 50 and len(not_ce) > 50, (len(ce), len(not_ce))
    # the queue hovered around K (CUBIC with ECN backs off on each mark), so both sides
    # of the threshold were exercised
    below = [f for f in not_ce if f < k - 2 * MTU_FRAME]
    assert len(below) > 20
    # a CE segment below K: the switch marked early (the measurement can only inflate
    # the backlog: a stall between the two captures lengthens the sojourn)
    early = [f for f in ce if f < k - 2 * MTU_FRAME]
    assert len(early) <= 0.02 * len(ce), sorted(early)[:20]
    # an unmarked segment well above K: missed (or a stall): rare
    late = [f for f in not_ce if f > k + 2 * MTU_FRAME]
    assert len(late) <= 0.1 * len(not_ce), (len(late), len(not_ce))
    c = counters[0]
    assert (c["node"], c["iface"], c["unit"], c["min"], c["max"]) == ("s1", "s1-eth1",
                                                                      "bytes", k, k)
    # the program's own count matches the wire (a few segments outside the captures)
    assert abs(c["marked_pkts"] - len(ce)) <= 0.05 * len(ce) + 5, (c, len(ce))


def test_ramp_marks_with_rising_probability():
    """min 3 KB, max 60 KB, p 0.2: nothing below min; in between, as many marks as the
    ramp p·(q − min)/(max − min) predicts for the backlogs the segments found."""
    lo, hi, pmax = 3000, 60000, 0.2
    pairs, counters = marks_vs_backlog({"min": f"{lo}B", "max": f"{hi}B", "p": pmax}, 3)
    assert len(pairs) > 500
    below = [ecn == 3 for ecn, f in pairs if f < lo - 2 * MTU_FRAME]
    assert below and sum(below) <= 0.02 * len(below) + 1
    ramp = [(ecn == 3, f) for ecn, f in pairs if lo + MTU_FRAME < f < hi - MTU_FRAME]
    expected = sum(pmax * (f - lo) / (hi - lo) for _, f in ramp)
    marked = sum(m for m, _ in ramp)
    print(f"ramp: {len(ramp)} segments, {marked} marked, {expected:.1f} expected")
    assert expected > 20
    assert abs(marked - expected) <= 0.3 * expected + 3 * expected ** 0.5
    # rising: the upper half of the backlogs seen is marked more often than the lower
    fs = sorted(f for _, f in ramp)
    mid = fs[len(fs) // 2]
    share = [sum(m for m, f in ramp if sel(f)) / max(1, sum(1 for _, f in ramp if sel(f)))
             for sel in (lambda f: f < mid, lambda f: f >= mid)]
    assert share[0] < share[1], share
    assert counters[0]["p"] == pytest.approx(pmax, abs=1e-4)


def test_not_ect_traffic_is_never_marked_and_counted():
    """A flow without ECN finds the queue above K: nothing changes on the wire; the
    program counts what it would have marked."""
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 20, "queue": 100, "ecn_mark": 5})
    with running_network(topo, hosts={"ecn": False}) as net:
        offloads(net, ["h1", "h2"], False)
        cout = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
        iperf(net, "h1", "h2", 1)
        pkts = cout.stop()
        c = net.ecn_counters()[0]
    assert pkts and not any(p[IP].tos & 3 for p in pkts if IP in p)
    assert c["marked_pkts"] == 0 and c["not_ect_over"] > 100 and c["unit"] == "packets"


def test_detached_on_teardown():
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 20, "queue": 100, "ecn_mark": 5})
    with running_network(topo) as net:
        pin = net.tracker.pin_dir() / "ecn_mark"
        assert pin.exists()
        show = subprocess.run(["nsenter", f"--net=/proc/{net['s1'].pid}/ns/net", "tc",
                               "filter", "show", "dev", "s1-eth1", "egress"],
                              capture_output=True, text=True).stdout
        assert "ecn_mark" in show
        # this run's program by id: other runs on the machine load programs of that name
        prog_id = re.search(r" id (\d+)", show).group(1)
        assert "ecn_mark" not in subprocess.run(
            ["nsenter", f"--net=/proc/{net['h2'].pid}/ns/net", "tc", "filter", "show", "dev",
             "h2-eth0", "egress"], capture_output=True, text=True).stdout  # hosts never mark
        net.backends["kernel"].stop()
        show = subprocess.run(["nsenter", f"--net=/proc/{net['s1'].pid}/ns/net", "tc",
                               "qdisc", "show", "dev", "s1-eth1"], capture_output=True,
                              text=True).stdout
        assert "clsact" not in show and not pin.exists()
    deadline = time.monotonic() + 3
    while subprocess.run(["bpftool", "prog", "show", "id", prog_id],
                         capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "ecn_mark program still loaded"
        time.sleep(0.1)


@pytest.mark.parametrize("value, match", [
    ({"k": 20, "min": 5, "max": 10}, "not both"),
    ({"min": 5}, "both min and max"),
    ({"min": "10KB", "max": 20}, "same unit"),
    ({"min": 20, "max": 10}, "min < max"),
    ({"k": 20, "p": 2}, "less than or equal to 1"),
])
def test_bad_marking_options(value, match):
    with pytest.raises(ValueError, match=match):
        EcnMark.model_validate(value)


def test_marking_needs_a_shaped_link(write, cli):
    f = write("x.yaml", "name: x\ntopology:\n  hosts: [h1, h2]\n  switches: [s1]\n"
              "  links:\n    - [h1, s1]\n    - {ends: [s1, h2], ecn_mark: 20}\n"
              "duration: 1\nworkload: {flows: [{src: h1, dst: h2}]}\n")
    r = cli("validate", str(f))
    assert r.returncode == 2 and "ecn_mark needs bw" in r.stderr and str(f) in r.stderr


def _int_depth_vs_ce(backend: str, k_bytes: int, bw: int, seconds: int):
    """(INT queue depth, CE) of each data segment of a CUBIC+ECN flow through one switch
    that both stamps TCP-INT (fine scale, 2 KiB quanta) and marks above k_bytes: the two
    rules read the same queue for the same packet."""
    from testbed.network.tcpint import decode_qdepth, find_option

    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": bw, "queue": 100,
                      "ecn_mark": f"{k_bytes}B"})
    topo["switches"] = {"s1": {"backend": backend}}
    with running_network(topo, hosts={"ecn": True, "offloads": False},
                         int={"enabled": True, "scale": "fine"}) as net:
        from testbed.network.tcpint import IntOptions, TcpInt
        TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
        cout = Capture(net, "h2", "h2-eth0", "tcp", direction="in", count=6000)
        iperf(net, "h1", "h2", seconds)
        pkts = cout.stop()
        src = net.ip("h1")
        counters = net.ecn_counters()
    out = []
    for p in pkts:
        if p[IP].src != src or not len(p[TCP].payload):
            continue
        o = find_option(bytes(p[TCP]))
        if o:
            out.append((decode_qdepth(o[1][3], "fine"), p[IP].tos & 3 == 3))
    return out, counters


@pytest.mark.parametrize("backend", ["kernel", pytest.param("bmv2", marks=needs_bmv2)])
def test_marks_agree_with_int_on_the_same_packet(backend):
    """Both backends, the same rule: each segment's CE bit against the queue TCP-INT
    wrote into the same segment at the same switch (kernel: both programs read the root
    qdisc's backlog at the egress hook; BMv2: both read the packet's enq_qdepth):
    CE ⇒ depth > K − one quantum; no CE ⇒ depth ≤ K."""
    k = 12000
    pairs, counters = _int_depth_vs_ce(backend, k, 20 if backend == "kernel" else 10, 3)
    assert len(pairs) > 300
    ce = [d for d, m in pairs if m]
    plain = [d for d, m in pairs if not m]
    assert len(ce) > 30 and len(plain) > 30
    bad = [d for d in ce if d <= k - 2048] + [d for d in plain if d > k]
    # another CPU may dequeue between the two programs' reads of the backlog: rare
    assert len(bad) <= 0.01 * len(pairs), (len(bad), sorted(bad)[:20])
    assert counters[0]["marked_pkts"] >= len(ce)
