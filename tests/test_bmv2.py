"""The bmv2 backend for real: simple_switch_grpc running p4/tcp_int.p4 in each forwarding
node's namespace, configured over P4Runtime; real packets checked on the wire with scapy.

Without BMv2 on the machine, every test that needs it is skipped with the reason
bmv2_available() gives, and the ones that check the refusal run instead.

Checks: routers and L2 switches forward (ping, TTL); hand-made tagged segments (the
option after NOP,NOP,timestamp and first in the list) come out with the rule applied
(HopID of the first idle hop, INTval, HopLat = serialization at each shaped hop, valid
checksum) and untagged ones unchanged — the same checks pass on the kernel backend;
parity with the kernel backend on the same congested experiment (HopID of the congested
router; reported queue depth within one quantum of the queueing delay each packet
measured, never above the FIFO; HopLat growing hop by hop); teardown leaves no
simple_switch_grpc.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from scapy.all import IP, TCP, IPv6

from testbed.errors import BAD_INPUT, ConfigError, MissingFeature
from testbed.network.backends.bmv2 import bmv2_available
from testbed.network.tcpint import (D, IntOptions, TcpInt, decode_qdepth, find_option,
                                    qdepth_shift)
from testbed import testing
from testbed.testing import Iperf, ping_all, running_network

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
HOPLAT_NS = 1 << D("HOPLAT_SHIFT")
FRAME = 1514

BMV2_OK, BMV2_WHY = bmv2_available()
needs_bmv2 = pytest.mark.skipif(not BMV2_OK, reason=f"bmv2 backend unavailable: {BMV2_WHY}")
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"), pytest.mark.bmv2]


# ------------------------------------------------------------------ helpers
def chain(backend: str, *bws, queue: int = 60, last_queue: int | None = None,
          names=("r1", "r2"), ipv6: bool = False) -> dict:
    """h1 - r1 - r2 - h2 (routers on `backend`); bws: rate of each link, left to right
    (None = unshaped); the FIFO limit of shaped links is `queue` packets (`last_queue`
    for the last link, the bottleneck of the congestion tests)."""
    nodes = ["h1", *names, "h2"]
    links = []
    pairs = list(zip(nodes, nodes[1:]))
    for k, ((a, b), bw) in enumerate(zip(pairs, bws)):
        link = {"ends": [a, b]}
        if bw:
            q = last_queue if last_queue and k == len(pairs) - 1 else queue
            link.update(bw=bw, queue={"packets": q})
        links.append(link)
    return {"ipv6": ipv6, "hosts": {"h1": None, "h2": None},
            "routers": {r: {"backend": backend} for r in names}, "links": links}


def l2_pair(backend: str) -> dict:
    """h1, h2 on s1; h3 on s2; s1 - s2: two L2 switches on `backend`."""
    return {"ipv6": False, "hosts": {"h1": None, "h2": None, "h3": None},
            "switches": {"s1": {"backend": backend}, "s2": {"backend": backend}},
            "links": [{"ends": ["h1", "s1"]}, {"ends": ["h2", "s1"]},
                      {"ends": ["s1", "s2"]}, {"ends": ["s2", "h3"]}]}


class KernelStampsOnly(TcpInt):
    """TCP-INT hosts everywhere, eBPF stamping only on kernel-backend nodes: BMv2 nodes
    stamp in P4 (until TcpInt itself leaves bmv2 nodes out)."""

    def stamping_nodes(self):
        return [g for g in super().stamping_nodes() if g.spec.backend == "kernel"]


INT = {"enabled": True}   # the experiment's `int:`: the bmv2 switches read it at start


def start_int(net) -> TcpInt:
    """The TCP-INT hosts (and eBPF stamping on kernel nodes) for the experiment's `int:`."""
    return KernelStampsOnly(IntOptions.model_validate(net.experiment.tcp_int), net).start()


def Capture(net, node: str, iface: str, filt: str = "tcp", count: int = 6000,
            snaplen: int = 200):
    return testing.Capture.in_run(net, node, iface, filt, direction="in", count=count,
                                  snaplen=snaplen, drain_s=0.5)


def int_option(pkt) -> bytes | None:
    """The 12 bytes of the TCP-INT option, wherever it is in the option list."""
    found = find_option(bytes(pkt[TCP])) if TCP in pkt else None
    return found[1] if found else None


def v04(opt: bytes) -> dict:
    return {"tfk": opt[2] >> 4, "ls": opt[2] & 0xf, "intval": opt[3], "hopid": opt[4],
            "hoplat": int.from_bytes(opt[5:8], "big"), "ecr": opt[8:]}


def checksum_ok(pkt) -> bool:
    """The TCP checksum over the pseudo-header of IPv4 or IPv6 (no extension headers)."""
    if IPv6 in pkt:
        ip = pkt[IPv6]
        seg = bytes(ip.payload)[: ip.plen]
        ph = socket.inet_pton(socket.AF_INET6, ip.src) + socket.inet_pton(socket.AF_INET6, ip.dst)
        ph += struct.pack("!I3xB", len(seg), 6)
    else:
        ip = pkt[IP]
        seg = bytes(ip.payload)[: ip.len - ip.ihl * 4]
        ph = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst)
        ph += struct.pack("!BBH", 0, 6, len(seg))
    b = ph + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s == 0xffff


def mac_of(net, node: str, iface: str) -> str:
    return net.run(node, f"cat /sys/class/net/{iface}/address").strip()


SENDER = r"""
import sys, time
from scapy.all import Ether, IP, TCP, Raw, sendp
iface, src_mac, dst_mac, src, dst, nbytes = sys.argv[1:7]
ts = ("Timestamp", (12345, 0))
intopt = (0x72, bytes([0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))  # TagFreqKey 0xf, rest 0
pre = (0x72, bytes([0xf0, 0x90, 7, 0, 0, 0, 0, 0, 0, 0]))   # INTval 0x90 by hop TTL 7
lists = {4001: [("NOP", None), ("NOP", None), ts, intopt],  # as Linux + the host tool
         4002: [intopt, ("NOP", None), ("NOP", None), ts],  # option first
         4003: [("NOP", None), ("NOP", None), ts, pre],     # already stamped upstream
         4004: [("NOP", None), ("NOP", None), ts]}          # untagged
pkts = [Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst, ttl=64) /
        TCP(sport=sport, dport=9, flags="PA", seq=1000 + sport, options=opts) /
        Raw(b"x" * int(nbytes)) for sport, opts in lists.items()]
for p in pkts:
    sendp(p, iface=iface, verbose=False)
    time.sleep(0.05)   # one at a time: each finds the queues empty
"""


def send_crafted(net, dst: str = "h2", nbytes: int = 200) -> dict[int, object]:
    """Hand-made segments h1 → dst (see SENDER); the copies dst receives, by source port."""
    script = net.tracker.workdir / "sender.py"
    script.write_text(SENDER)
    first = net.graph.nodes["h1"].intfs[0].peer
    if net.graph.nodes[first.node].kind == "switch":   # bridged: straight to dst's MAC
        to = net.graph.nodes[dst].intfs[0]
    else:                                              # routed: to the gateway
        to = first
    iface = net.graph.nodes[dst].intfs[0].name
    # one ping first: neighbours resolved and bridges past their first frames, so the
    # hand-made segments meet forwarding in its steady state on either backend
    net.run("h1", f"ping -c 1 -W 2 {net.ip(dst)}")
    cap = Capture(net, dst, iface, "tcp and dst port 9", snaplen=2000)
    net.run("h1", f"{PY} {script} h1-eth0 {mac_of(net, 'h1', 'h1-eth0')} "
                  f"{mac_of(net, to.node, to.name)} {net.ip('h1')} {net.ip(dst)} {nbytes}")
    return {p[TCP].sport: p for p in cap.stop()}


def bmv2_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "simple_switch_g"], capture_output=True, text=True)
    return {int(x) for x in out.stdout.split()}


def tagged_data(pkts, src: str) -> list[dict]:
    return [v04(o) for p in pkts
            if IP in p and p[IP].src == src and len(p[TCP].payload) and (o := int_option(p))]


def iperf(net, src: str, dst: str, seconds: float, extra: str = "", v6: bool = False) -> None:
    # cubic: bbr keeps the FIFO near empty (only its start-up overshoot filled it,
    # sometimes not to half on a slow BMv2)
    Iperf(net, src, dst, seconds, cc="cubic", extra=extra, v6=v6).wait()


# ------------------------------------------------------------------ without BMv2
@pytest.mark.skipif(BMV2_OK, reason="BMv2 is installed here: the refusal path is not taken")
def test_refused_before_any_state_without_bmv2():
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    with pytest.raises((MissingFeature, ConfigError), match="simple_switch_grpc") as e:
        with running_network(chain("bmv2", None, None, None)):
            pass
    assert e.value.exit_code == BAD_INPUT
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert before == after


def test_available_says_why():
    ok, why = bmv2_available()
    assert isinstance(ok, bool) and why


# ------------------------------------------------------------------ with BMv2
@needs_bmv2
def test_routers_forward_and_cleanup():
    before = bmv2_pids()
    with running_network(chain("bmv2", None, None, None)) as net:
        assert len(bmv2_pids() - before) == 2
        out = net.run("h1", f"ping -c 3 -i 0.2 -W 2 {net.ip('h2')}")
        assert " 0% packet loss" in out, out
        assert "ttl=62" in out, out          # two routers, each decrements
    assert bmv2_pids() <= before             # stopped by PID with the network


@needs_bmv2
def test_leafspine_ecmp_both_families():
    """Leaf-spine of BMv2 routers: every host reaches every other over IPv4 and IPv6,
    and 16 TCP flows h1 → h2 are spread over both spines by the 5-tuple hash in each
    family (all on one spine: p = 2⁻¹⁵)."""
    spec = {"builtin": "leafspine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2,
            "backend": "bmv2"}
    with running_network(spec) as net:
        for v6 in (False, True):
            res = ping_all(net, v6)
            assert len(res) == 12 and all(res.values()), [k for k, ok in res.items() if not ok]
        dst = net.graph.nodes["h1"].intfs[0].peer.node      # h1's leaf: leave it for h3's
        far = next(h.name for h in net.hosts
                   if net.graph.nodes[h.name].intfs[0].peer.node != dst)

        def spine_rx() -> list[int]:
            return [sum(int(net.run(sp, f"cat /sys/class/net/{i.name}/statistics/rx_packets"))
                        for i in net.graph.nodes[sp].intfs)
                    for sp in sorted(n for n in net.graph.nodes if n.startswith("sp"))]

        for v6 in (False, True):
            before = spine_rx()
            iperf(net, "h1", far, 1, "-P 16 -b 1M", v6)
            moved = [b - a for a, b in zip(before, spine_rx())]
            assert min(moved) > 100, (v6, moved)


@needs_bmv2
def test_l2_switches_forward():
    with running_network(l2_pair("bmv2")) as net:
        for dst in ("h2", "h3"):
            out = net.run("h1", f"ping -c 2 -i 0.2 -W 2 {net.ip(dst)}")
            assert " 0% packet loss" in out and "ttl=64" in out, out


BACKENDS = ["kernel", pytest.param("bmv2", marks=needs_bmv2)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_option_on_the_wire(backend):
    """Both routers shaped (40 and 20 Mb/s on the way to h2), queues empty. The same
    hand-made segments through either backend come out the same."""
    nbytes = 200
    with running_network(chain(backend, None, 40, 20), int=INT) as net:
        for h in ("h1", "h2"):
            net.run(h, f"ethtool -K {h}-eth0 tx off tso off gso off")
        start_int(net)
        got = send_crafted(net, "h2", nbytes)
    assert set(got) == {4001, 4002, 4003, 4004}, sorted(got)
    frame = len(got[4001])           # the whole frame (what both switches count)
    ser_ns = sum(frame * 8e9 / (bw * 1e6) for bw in (40, 20))
    for sport in (4001, 4002):
        p = got[sport]
        f = v04(int_option(p))
        assert checksum_ok(p)
        assert p[IP].ttl == 62
        # idle hops: public v0.4, links < 1 Gb/s have 0 Gb/s available → 0x7f; the first
        # router (TTL 63 after its decrement) stamps, the second does not beat it
        assert f["intval"] == 0x7f and f["hopid"] == 63 and f["tfk"] == 0xf, f
        # HopLat = serialization at 40 and 20 Mb/s (BMv2: + its µs in the queue)
        assert ser_ns * 0.99 <= f["hoplat"] * HOPLAT_NS <= ser_ns + 2e6, (f, ser_ns)
        assert f["ecr"] == bytes(4)                   # echo fields untouched
    f = v04(int_option(got[4003]))
    assert f["intval"] == 0x90 and f["hopid"] == 7   # a worse hop upstream is kept
    assert checksum_ok(got[4003])
    assert int_option(got[4004]) is None and checksum_ok(got[4004])
    assert bytes(got[4004][TCP].payload) == b"x" * nbytes


@pytest.mark.parametrize("backend", BACKENDS)
def test_option_on_the_wire_l2(backend):
    """h1 → h3 across s1 and s2: bridges leave the TTL, so the eBPF switch's HopID rule
    (64 - rank among the bridges) applies; the first idle bridge stamps."""
    with running_network(l2_pair(backend), int=INT) as net:
        for h in ("h1", "h3"):
            net.run(h, f"ethtool -K {h}-eth0 tx off tso off gso off")
        start_int(net)
        got = send_crafted(net, "h3")
    assert set(got) == {4001, 4002, 4003, 4004}, sorted(got)
    for sport in (4001, 4002):
        f = v04(int_option(got[sport]))
        assert checksum_ok(got[sport]) and got[sport][IP].ttl == 64
        assert f["hopid"] == 63 and f["intval"] == 0x7f, f
    assert int_option(got[4004]) is None and checksum_ok(got[4004])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6_flow_stamped_and_echoed(backend):
    """TCP over IPv6 through two routers of either backend: every data segment arrives
    with the option stamped (the first router names itself: hop limit 63 after its
    decrement; HopLat counts both hops) and a valid checksum over the IPv6
    pseudo-header; h2's echo reaches h1."""
    with running_network(chain(backend, 50, 50, 50, ipv6=True), int=INT) as net:
        for h in ("h1", "h2"):
            net.run(h, f"ethtool -K {h}-eth0 tx off tso off gso off gro off")
        start_int(net)
        data = Capture(net, "h2", "h2-eth0", "ip6 and tcp dst port 5201", snaplen=1600)
        acks = Capture(net, "h1", "h1-eth0", "ip6 and tcp src port 5201")
        iperf(net, "h1", "h2", 1, "-b 4M", v6=True)
        segs = [p for p in data.stop() if IPv6 in p and len(p[TCP].payload) > 1000]
        echoes = [v04(o)["ecr"] for p in acks.stop() if (o := int_option(p))]
    assert len(segs) > 200, len(segs)
    ser_ns = 2 * 1514 * 8e9 / 50e6
    for p in segs:
        f = v04(int_option(p))
        assert checksum_ok(p) and p[IPv6].hlim == 62
        assert f["hopid"] in (63, 62) and f["intval"] >= 0x7f, f
        assert f["hoplat"] * HOPLAT_NS >= 0.9 * ser_ns, f
    assert statistics.mode(v04(int_option(p))["hopid"] for p in segs) == 63
    assert sum(1 for e in echoes if e[0] >= 0x7f) > len(segs) // 4, echoes[:5]  # INTvalEcr


def hoplat_by_seq(pkts) -> dict[int, int]:
    """HopLat of each captured TCP-INT data segment, by sequence number: the same segment
    captured at two points tells what the hops between them added."""
    return {p[TCP].seq: v04(o)["hoplat"] for p in pkts
            if IP in p and len(p[TCP].payload) and (o := int_option(p))}


def congested_run(backend: str, seconds: float = 3.0, queue: int = 40) -> dict:
    """h1 - r1 - r2 - h2, bottleneck r2 → h2 at 10 Mb/s with a FIFO of `queue` packets
    (the other links' FIFOs are deep: the bottleneck is the only place that drops)."""
    with running_network(chain(backend, 50, 50, 10, queue=400, last_queue=queue),
                         int=INT) as net:
        for h in ("h1", "h2"):
            net.run(h, "ethtool -K " + net.graph.nodes[h].intfs[0].name +
                    " tso off gso off gro off tx off")
        start_int(net)
        # HopLat of each segment entering r2 (after r1) and reaching h2 (after r2)
        before = Capture(net, "r2", "r2-eth0", "tcp and dst port 5201")
        cap = Capture(net, "h2", "h2-eth0", "tcp and src port not 5201")
        iperf(net, "h1", "h2", seconds)
        at_r2 = hoplat_by_seq(before.stop())
        pkts = [p for p in cap.stop() if IP in p and p[IP].src == net.ip("h1")]
        opts = tagged_data(pkts, net.ip("h1"))
        seqs = [p[TCP].seq for p in pkts if len(p[TCP].payload) and int_option(p)]
    for f, seq in zip(opts, seqs):
        f["hoplat_r2"] = f["hoplat"] - at_r2[seq] if seq in at_r2 else None
    return {"opts": opts}


@needs_bmv2
def test_parity_with_kernel_under_congestion():
    """The same experiment on both backends: the congested router names itself (HopID);
    the queue depth it reports tracks the queue the packet really waited in — within one
    quantum (+ a frame either way) of the depth its queueing delay at r2 implies (what r2
    added to HopLat, from captures entering r2 and at h2; BMv2 measures that delay
    independently: deq_timedelta) — and never exceeds the FIFO."""
    queue, rate = 40, 10e6
    quantum = 1 << qdepth_shift("public")
    limit = queue * FRAME
    ser_ns = FRAME * 8e9 / 10e6                               # r2 serializes it
    modes = {}
    for backend in ("kernel", "bmv2"):
        opts = congested_run(backend, queue=queue)["opts"]
        queued = [f for f in opts if f["intval"] >= 0x80 and f["intval"] & 0x7f >= 1]
        assert len(queued) > 20, (backend, len(opts))
        hops = [f["hopid"] for f in queued]
        modes[backend] = statistics.mode(hops)
        assert modes[backend] == 62, (backend, hops[:20])      # r2 after its decrement
        # the FIFO bound and the delay model are r2's: a busy BMv2 r1 can queue too (its
        # FIFO is 400 packets), and then it is the worse hop and names itself (seen in CI);
        # r2's own HopLat is what it added (captured entering r2 and at h2)
        at_r2 = [f for f in queued if f["hopid"] == 62 and f["hoplat_r2"] is not None]
        depths = [decode_qdepth(f["intval"], "public") for f in at_r2]
        assert limit // 2 <= max(depths) <= limit + quantum, (backend, max(depths), limit)
        close = 0
        for f, depth in zip(at_r2, depths):
            waited = max(0.0, f["hoplat_r2"] * HOPLAT_NS - ser_ns) * rate / 8e9   # bytes
            close += depth - quantum - FRAME <= waited <= depth + quantum + 2 * FRAME
        # BMv2's deq_timedelta also holds its own scheduling stalls (2 shared cores, two
        # switch processes, tcpdump, iperf3): CI runs ranged 0.75-0.9 there
        assert close >= (0.8 if backend == "kernel" else 0.65) * len(at_r2), \
            (backend, close, len(at_r2))
    assert modes["kernel"] == modes["bmv2"]


@needs_bmv2
def test_hoplat_accumulates_like_kernel():
    """One segment seen after r1 and at h2: HopLat grows at each hop, on both backends."""
    for backend in ("kernel", "bmv2"):
        with running_network(chain(backend, 50, 50, 50), int=INT) as net:
            for h in ("h1", "h2"):
                net.run(h, "ethtool -K " + net.graph.nodes[h].intfs[0].name +
                        " tso off gso off gro off tx off")
            start_int(net)
            caps = [Capture(net, "r2", "r2-eth0", "tcp and dst port 5201"),
                    Capture(net, "h2", "h2-eth0", "tcp and dst port 5201")]
            iperf(net, "h1", "h2", 1.0, extra="-b 4M")
            per_hop = []
            for c in caps:
                per_hop.append(hoplat_by_seq(c.stop()))
        common = set(per_hop[0]) & set(per_hop[1])
        assert len(common) > 20, backend
        assert all(0 < per_hop[0][s] < per_hop[1][s] for s in common), backend
        # a full frame at 50 Mb/s: 242 µs per hop
        assert max(per_hop[1][s] for s in common) * HOPLAT_NS >= 2 * FRAME * 8e9 / 50e6 * 0.9


QUEUE_EXP = """\
name: bmv2queue
topology: {builtin: dumbbell, pairs: 1, bw: 1000, bottleneck_bw: 10, bottleneck_queue: 40,
           ipv6: false, backend: BACKEND}
hosts: {offloads: off}
duration: 4
workload:
  flows:
    - {name: a, src: h1, dst: h2, start: 0, duration: 4}
instruments: [queue, iperf]
"""


@needs_bmv2
def test_queue_ground_truth_on_both_backends(tmp_path):
    """The queue instrument sees the bottleneck's queue on either backend: a qdisc on the
    kernel one, the P4 program's registers on BMv2 (queues in packets of 1514 bytes).
    One CUBIC flow over a 10 Mb/s, 40-packet bottleneck: a queue up to the FIFO's limit,
    and the port's byte counter agreeing with what the flow delivered (frames of 1514
    bytes carry 1448 of payload), and the flow near the link's rate: reading BMv2's
    registers as fast as Thrift answers took the switch's CPU (the default period there is
    10 ms). Drops are not compared: iperf3 counts retransmissions
    only until its test ends, and BMv2, lagging on a busy CPU, can still be dropping the
    flow's last burst then (seen: 11 drops, 0 retransmissions counted)."""
    import csv
    limit = 40 * FRAME
    for backend in ("kernel", "bmv2"):
        exp = tmp_path / f"{backend}.yaml"
        exp.write_text(QUEUE_EXP.replace("BACKEND", backend))
        out = tmp_path / backend
        r = run_cli("run", str(exp), "--out", str(out), "-q", timeout=240)
        assert r.returncode == 0, (backend, r.stderr[-2000:])
        rows = [x for x in csv.DictReader(open(out / "default" / "queue.csv"))
                if (x["node"], x["iface"]) == ("s1", "s1-eth1")]
        assert len(rows) > 100, (backend, len(rows))
        backlog = [int(x["backlog_bytes"]) for x in rows]
        assert limit // 2 <= max(backlog) <= limit + FRAME, (backend, max(backlog))
        flow = next(x for x in csv.DictReader(open(out / "default" / "flows.csv"))
                    if x["flow"] == "a")
        sent = int(rows[-1]["sent_bytes"]) - int(rows[0]["sent_bytes"])
        ratio = sent / int(flow["bytes"])
        assert 1.0 <= ratio <= 1.15, (backend, sent, flow["bytes"])
        # sampling does not starve the switch (BMv2 polled every 2.5 ms: 5.2-6.1 Mb/s;
        # every 10 ms 7.2-9.3 in CI and here)
        assert int(flow["mean_bps"]) >= 0.65 * 10e6, (backend, flow["mean_bps"])
        meta = json.loads((out / "default" / "meta.json").read_text())
        raised = [n for n in meta.get("notes", []) if n.startswith("queue: bmv2 queues sampled")]
        assert len(raised) == (backend == "bmv2"), meta.get("notes")
        # the runner's link-or-CPU verdict reads the same rows (within the workload's window)
        in_window = [int(x["backlog_bytes"]) for x in rows if 0 <= float(x["time"]) <= 4]
        assert meta["bottleneck"]["ports"]["s1:s1-eth1"]["max_backlog_bytes"] == max(in_window)


@needs_bmv2
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_routers_answer_time_exceeded(v6):
    """BMv2 routers answer an expiring TTL (hop limit) as Linux routers do: ICMP
    (ICMPv6) time-exceeded from the address of the port the packet came in on, quoting
    its IP header and first 8 L4 bytes. h1's own stack accepts them (it checks the
    checksums): ping -t names each router; noobprobe, which matches the quote, finds both
    hops for TCP, UDP and ICMP."""
    from testbed.instruments.noobprobe import HostSettings, Prober
    with running_network(chain("bmv2", 50, 50, 50, ipv6=v6)) as net:
        h1, dst = net["h1"], net.ip("h2", v6)
        want = {1: net.graph.neighbor_addr("h1", "r1", v6)[0],      # r1's port towards h1
                2: net.graph.neighbor_addr("r1", "r2", v6)[0]}      # r2's port towards r1
        says = "Time exceeded: Hop limit" if v6 else "Time to live exceeded"
        for ttl, addr in want.items():
            out = h1.cmd(f"ping -c1 -W2 -t{ttl} {dst}")
            assert f"From {addr} icmp_seq=1 {says}" in out, (ttl, out)
        prober = Prober()
        try:
            h = prober.add_host("h1", "h1-eth0", [dst], HostSettings(hop_rate=400), h1.netns)
            try:
                h1.cmd(f"ping -c 40 -i 0.02 {dst}")
                iperf(net, "h1", "h2", 1, "-u -b 2M", v6)
                iperf(net, "h1", "h2", 1, "-b 5M", v6)
                got = {(s.protocol, s.outttl, s.responder) for s in prober.poll()
                       if s.recv_ns > 0 and s.outttl in want}
            finally:
                prober.remove_host(h)
        finally:
            prober.close()
    for proto in (58 if v6 else 1, 6, 17):
        assert {(ttl, a) for p, ttl, a in got if p == proto} == set(want.items()), (proto, got)
