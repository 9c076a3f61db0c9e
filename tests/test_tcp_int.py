"""TCP-INT end to end: real namespaces (testbed.testing.running_network), the real switch
and host eBPF programs, real TCP traffic, packets checked on the wire with scapy.

Each test brings up a small network (hosts h*, kernel switches s* / routers r*), starts
TcpInt, sends a few seconds of traffic at most and captures with tcpdump.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP

from testbed.network.tcpint import (IntOptions, TcpInt, D, decode_qdepth, find_option, layout,
                                    qdepth_shift)
from testbed import testing
from testbed.network.tcports import QDISC_READS, qdisc_read
from testbed.testing import Iperf, running_network

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
MTU_FRAME = 1514
# the ways a port program can read the egress qdisc on this kernel (both from 6.2 on,
# bpf_probe_read_kernel alone before): each is checked against the wire
QDISC_PATHS = [q for q in QDISC_READS if q == "probe-read" or qdisc_read() == q]


# ------------------------------------------------------------------ helpers
def topo_line(*links, hosts=("h1", "h2"), switches=("s1",), routers=()):
    return {"hosts": {h: None for h in hosts}, "switches": {s: None for s in switches},
            "routers": {r: None for r in routers}, "links": list(links)}


def Capture(net, node: str, iface: str, filt: str = "ip", count: int = 4000,
            direction: str | None = None):
    return testing.Capture.in_run(net, node, iface, filt, count=count, direction=direction,
                                  snaplen=1600, drain_s=0.2)


def int_option(pkt) -> tuple[int, bytes] | None:
    """(offset in the TCP header, the 12 option bytes) of the TCP-INT option, or None."""
    return find_option(bytes(pkt[TCP])) if TCP in pkt else None


def v04(opt: bytes) -> dict:
    return {"tfk": opt[2] >> 4, "ls": opt[2] & 0xf, "intval": opt[3], "hopid": opt[4],
            "hoplat": int.from_bytes(opt[5:8], "big"), "intvalecr": opt[8],
            "idecr": opt[9] >> 4, "lsecr": opt[9] & 0xf,
            "hoplatecr": int.from_bytes(opt[10:12], "little")}


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def _sum16(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def tcp_checksum_state(pkt) -> str:
    """'full' if the checksum is valid, 'partial' if it holds the pseudo-header sum the
    kernel leaves for CHECKSUM_PARTIAL (offloads on), else 'bad'."""
    ip = pkt[IP]
    tcp_len = ip.len - ip.ihl * 4
    seg = bytes(ip.payload)[:tcp_len]
    pseudo = ip.src.split(".") + ip.dst.split(".")
    ph = bytes(int(x) for x in pseudo) + struct.pack("!BBH", 0, 6, tcp_len)
    check = struct.unpack("!H", seg[16:18])[0]
    if len(seg) == tcp_len and _fold(_sum16(ph) + _sum16(seg)) == 0xffff:
        return "full"
    if check == _fold(_sum16(ph)):
        return "partial"
    return "bad"


def iperf(net, src: str, dst: str, seconds: float = 1, extra: str = "", port: int = 5201):
    # cubic: these tests need a loss-based flow that fills the bottleneck's FIFO
    return Iperf(net, src, dst, seconds, port=port, cc="cubic", extra=extra).wait()


def offloads(net, hosts, on: bool):
    """TSO/GSO/GRO and TX checksumming of the hosts' interfaces (tx off: full checksums)."""
    v = "on" if on else "off"
    for h in hosts:
        for i in net.graph.nodes[h].intfs:
            net.run(h, f"ethtool -K {i.name} tso {v} gso {v} gro {v} tx {v}")


# ------------------------------------------------------------------ tests
def test_header_is_parsed_not_copied():
    """Python reads tcp_int_defs.h / tcp_int.h: the values are the public wire format."""
    assert (D("OPT_KIND"), D("OPT_LEN")) == (0x72, 12)
    assert D("QDEPTH_SHIFT_PUBLIC") == 13 and D("HOPLAT_SHIFT") == 8
    assert D("TFK_SWITCH_DEFAULT") == 0xf and D("LS_MBPS_7") == 400000
    st = layout("tcp_int_state")
    assert st.size == 72  # what the CC side maps, 8-byte aligned
    assert layout("tcp_int_event").size % 8 == 0


def test_check_passes_here():
    from testbed.network.tcpint import checks
    TcpInt.check()
    rows = checks()
    assert rows and all(c.ok for c in rows), [c.name for c in rows if not c.ok]


@pytest.mark.parametrize("offl", ["on", "off"])
def test_wellformed_option_valid_checksums(offl):
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 50, "queue": {"packets": 100}})
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], offl == "on")
        TcpInt(IntOptions(enabled=True), net).start()
        cap = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
        res = iperf(net, "h1", "h2", 1.0)
        pkts = cap.stop()
    assert res["end"]["sum_received"]["bytes"] > 1_000_000
    data = [p for p in pkts if p[IP].src.endswith(".1") and len(p[TCP].payload) > 0]
    tagged = [(p, int_option(p)) for p in data if int_option(p)]
    assert len(tagged) >= 0.9 * len(data) > 20  # tag_every=1: all data segments
    syns = [p for p in pkts if p[TCP].flags & 0x02]
    assert syns and not any(int_option(p) for p in syns)  # SYN/SYN-ACK carry none
    states = {tcp_checksum_state(p) for p, _ in tagged}
    assert "bad" not in states
    assert states == ({"full"} if offl == "off" else {"partial"}), states
    for p, (off, opt) in tagged:
        f = v04(opt)
        assert opt[0] == 0x72 and opt[1] == 12
        assert f["tfk"] == 0xf  # switch default frequency requested by our host
        assert f["hopid"] == 63  # the one bridge: 64 - 1
        assert f["hoplat"] > 0  # serialization at 50 Mb/s at least
        # scapy parses the whole option list: the option sits well-formed among the others
        assert [o for o in p[TCP].options if o[0] == 114] == [(114, opt[2:])]


def tagged_flow_options(net) -> list[dict]:
    """A 1.5 s flow h1 → h2 with TCP-INT (fine scale, offloads off): the decoded v0.4
    options of the data segments h2 received."""
    offloads(net, ["h1", "h2"], False)
    TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
    cap = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
    iperf(net, "h1", "h2", 1.5)
    pkts = cap.stop()
    return [v04(o[1]) for p in pkts if (o := int_option(p)) and len(p[TCP].payload)]


def test_hopid_names_the_more_congested_router():
    """chain h1 - r1 - r2 - r3 - h2: the bottleneck hop's TTL is the HopID."""
    for bn, ttl in ((1, 63), (2, 62)):
        with running_network({"builtin": "chain", "routers": 3, "bw": 200, "bottleneck": bn,
                              "bottleneck_bw": 20, "bottleneck_queue": {"packets": 60},
                              "ipv6": False}) as net:
            opts = tagged_flow_options(net)
        queued = [f for f in opts if f["intval"] >= 0x80 and (f["intval"] & 0x7f) >= 2]
        assert len(queued) > 20, f"no standing queue seen (bottleneck {bn})"
        hops = [f["hopid"] for f in queued]
        assert statistics.mode(hops) == ttl
        assert sum(h == ttl for h in hops) >= 0.9 * len(hops)


def test_hopid_names_the_more_congested_bridge():
    """h1 - s1 - s2 - h2 with bridges: HopID is 64 - n for the n-th bridge (TTL unchanged)."""
    for fast_slow, want in (((20, 200), 63), ((200, 20), 62)):
        a, b = fast_slow
        topo = topo_line({"ends": ["h1", "s1"], "bw": 500},
                         {"ends": ["s1", "s2"], "bw": a, "queue": {"packets": 60}},
                         {"ends": ["s2", "h2"], "bw": b, "queue": {"packets": 60}},
                         switches=("s1", "s2"))
        with running_network(topo) as net:
            opts = tagged_flow_options(net)
        queued = [f["hopid"] for f in opts if f["intval"] >= 0x82]
        assert len(queued) > 20
        assert sum(h == want for h in queued) >= 0.9 * len(queued), (want, queued[:20])


def test_hoplat_grows_with_each_hop():
    """The same segment captured after router 1, 2 and 3 carries a strictly larger HopLat."""
    with running_network({"builtin": "chain", "routers": 3, "bw": 100,
                          "ipv6": False}) as net:
        offloads(net, ["h1", "h2"], False)
        TcpInt(IntOptions(enabled=True), net).start()
        caps = [Capture(net, "r2", "r2-eth0", "tcp", direction="in"),
                Capture(net, "r3", "r3-eth0", "tcp", direction="in"),
                Capture(net, "h2", "h2-eth0", "tcp", direction="in")]
        iperf(net, "h1", "h2", 1.0, extra="-b 5M")
        per_hop = []
        for c in caps:
            seen = {}
            for p in c.stop():
                o = int_option(p)
                if o and len(p[TCP].payload) and p[IP].src == net.ip("h1"):
                    seen[p[TCP].seq] = v04(o[1])["hoplat"]
            per_hop.append(seen)
    common = set(per_hop[0]) & set(per_hop[1]) & set(per_hop[2])
    assert len(common) > 20
    for s in common:
        a, b, c = per_hop[0][s], per_hop[1][s], per_hop[2][s]
        assert 0 < a < b < c, (a, b, c)
    # a 1500-byte segment at 100 Mb/s takes 120 us to serialize: ~470 units of 256 ns/hop
    full = [per_hop[2][s] for s in common]
    assert max(full) * 256 >= 3 * 100e-6 * 1e9 * 0.9


ECHO_CLIENT = r"""
import json, socket, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from testbed.network.tcpint import sk_state
s = socket.create_connection(({dst!r}, 5301))
buf = b"x" * 65536
# 4 MB (1.6 s at 20 Mb/s): a count, not a time — under the VM's emulation far fewer
# segments leave in a given time (94 echoes in 1.5 s)
t_end = time.monotonic() + 30
for _ in range(64):
    s.sendall(buf)
    if time.monotonic() > t_end:
        break
time.sleep(0.2)
print(json.dumps(sk_state(s, Path({pins!r}))))
s.close()
"""

ECHO_SERVER = r"""
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 5301)); l.listen(1); print("ready", flush=True)
c, _ = l.accept()
while c.recv(1 << 16):
    pass
"""


@pytest.mark.parametrize("version", ["v04", "v02"])
def test_echo_reaches_the_senders_sk_storage(version):
    # the FIFO must fill: in the stock-kernel VM (TCG) a flow with offloads off is
    # CPU-bound near 10 Mb/s beside other load (9.6 Mb/s measured, 8.2 with TCP-INT on 6.1)
    bw = 10 if os.environ.get("TESTBED_VM") == "1" else 20
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": bw, "queue": {"packets": 80}})
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], False)
        ti = TcpInt(IntOptions(enabled=True, version=version, scale="fine"), net).start()
        srv = net["h2"].popen([PY, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().startswith("ready")
        code = ECHO_CLIENT.format(repo=str(REPO), dst=net.ip("h2"),
                                  pins=str(net.tracker.pin_dir()))
        # h1's network namespace and cgroup, but our mount namespace: nodes remount /sys,
        # which hides bpffs (the pinned map)
        cl = subprocess.Popen(["nsenter", f"--net={net['h1'].netns}", PY, "-c", code],
                              stdout=subprocess.PIPE, text=True,
                              preexec_fn=net.tracker.enter_fn(net.tracker.node_cgroup("h1")))
        out, _ = cl.communicate(timeout=30)
        srv.wait(timeout=10)
        ports = {p["iface"]: p for p in ti.port_states()}
    st = json.loads(out.strip().splitlines()[-1])
    assert st is not None, "no tcp_int_state for the sender's socket"
    assert st["n_tx"] > 100 and st["n_echo"] > 50 and st["seq"] == st["n_echo"]
    assert st["hop_id"] == 1  # first (only) bridge
    assert st["ts_ns"] > 0 and st["hoplat_ns"] > 0
    # the FIFO fills: the echoed queue is non-zero, in whole fine quanta
    assert st["qdepth_bytes"] > 0 and st["qdepth_bytes"] % (1 << qdepth_shift("fine")) == 0
    assert st["util"] == D("UTIL_ONE")  # queueing means fully used
    # v0.4 carries the hop's LinkSpeed (fine code for 10 or 20 Mb/s: the largest not
    # above, 10 Mb/s); v0.2 has no such field
    assert st["link_mbps"] == (10 if version == "v04" else 0)
    assert ports["s1-eth1"]["n_stamped"] > 0


@pytest.mark.parametrize("qdisc", QDISC_PATHS)
def test_int_queue_depth_follows_real_backlog(qdisc):
    """INT's queue depth on each segment vs the backlog that segment really found: its
    sojourn through the switch (tcpdump at the switch's ingress and at the receiver, one
    clock) times the 20 Mb/s drain rate, minus its own size. Within one quantum, whichever
    way the switch program reads the qdisc."""
    rate = 20e6
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 20, "queue": {"bytes": 100000}})
    for scale in ("fine", "public"):
        with running_network(topo) as net:
            offloads(net, ["h1", "h2"], False)
            TcpInt(IntOptions(enabled=True, scale=scale), net, qdisc=qdisc).start()
            cin = Capture(net, "s1", "s1-eth0", "tcp", direction="in")
            cout = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
            iperf(net, "h1", "h2", 1.5)
            pin, pout = cin.stop(), cout.stop()
            src = net.ip("h1")
        t_in = {(p[TCP].seq, p[IP].id): float(p.time) for p in pin
                if p[IP].src == src and len(p[TCP].payload)}
        q = 1 << qdepth_shift(scale)
        pairs = []
        for p in pout:
            o = int_option(p)
            k = (p[TCP].seq, p[IP].id)
            if o and k in t_in and p[IP].src == src:
                sojourn = float(p.time) - t_in[k]
                truth = sojourn * rate / 8 - len(p)
                pairs.append((decode_qdepth(v04(o[1])["intval"], scale), truth))
        assert len(pairs) > 100
        assert max(t for _, t in pairs) > 4 * q  # a real queue was there to report
        # INT truncates to whole quanta: truth - q < INT <= truth, so the typical error is
        # -q/2. The truth itself is noisy: capture timestamps on a shared 2-core machine
        # and HTB's burst (~4 KB at 20 Mb/s) move it by a packet or two.
        errs = sorted(i - t for i, t in pairs)
        med = statistics.median(errs)
        assert -q - MTU_FRAME / 2 <= med <= MTU_FRAME / 2, (scale, med)
        # INT above the backlog the segment found: no noise of the measurement makes that
        over = [i for i, t in pairs if i > t + MTU_FRAME]
        assert len(over) <= 0.02 * len(pairs), (scale, len(over), len(pairs))
        # Below it by more than a quantum: a stall between the capture at the switch's
        # ingress and its egress hook (the queue drains meanwhile) inflates the measured
        # sojourn, never INT. Locally 97-100 % of segments are within the band, also beside
        # a CPU hog; one CI run had a stall-ridden second with 84 % (median error still
        # -1.5 KB): the band is asked of 80 %, the median and the upper side carry the rest.
        ok = [i for i, t in pairs if t - q - 2 * MTU_FRAME <= i <= t + MTU_FRAME]
        assert len(ok) >= 0.8 * len(pairs), (scale, med, errs[:: max(1, len(errs) // 20)])


def tc_backlog(net, node: str, iface: str) -> int:
    """The root qdisc's backlog in bytes as tc reports it (netlink: the qdisc's own count)."""
    out = net.run(node, f"tc -s qdisc show dev {iface}")
    b = out.split(" backlog ")[1].split()[0].rstrip("b")  # tc: 512b, 60Kb, 1Mb
    return int(float(b.rstrip("KM")) * {"K": 1024, "M": 1 << 20}.get(b[-1], 1))


KNOWN_QUEUE_CLIENT = r"""
import socket, sys, time
s = socket.create_connection(({dst!r}, 5301))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("connected", flush=True)
sys.stdin.readline()
u.sendto(b"u", ({dst!r}, 9))  # spends the paused port's credit (see the test)
time.sleep(0.1)
for _ in range({n_udp}):
    u.sendto(b"u" * 1000, ({dst!r}, 9))
print("udp", flush=True)
sys.stdin.readline()
s.sendall(b"t" * {tcp_bytes})
print("tcp", flush=True)
sys.stdin.readline()
s.close()
"""


def _settled_backlog(net, node: str, iface: str, timeout: float = 30) -> int:
    """tc's backlog once two readings 0.3 s apart agree (the paused queue filled)."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = tc_backlog(net, node, iface)
        if b == last:
            return b
        last = b
        time.sleep(0.3)
    raise AssertionError(f"{node}:{iface} backlog never settled (last {last})")


@pytest.mark.parametrize("qdisc", QDISC_PATHS)
def test_int_and_ecn_marker_read_a_known_standing_queue(qdisc):
    """A known queue, independent of timing: the 5 Mb/s port is paused, 40 UDP datagrams
    wait in it, then TCP segments join them; tc reads the backlog before and after the
    TCP segments (nothing left meanwhile: checked). Segment k found exactly the final
    backlog minus its own frame and those behind it. After the port resumes, each captured segment's INT queue depth is that, truncated to a quantum; and
    the ECN marker found the same (every segment above K, K between the UDP-only queue and
    it). Holds whichever way the programs read the qdisc (on 6.1: bpf_probe_read_kernel)."""
    from testbed.network.ecn import EcnMarking
    scale, n_udp, n_tcp = "fine", 40, 10  # 10 segments: the initial window
    q = 1 << qdepth_shift(scale)
    k = 20000  # below the UDP-only queue (40 × 1042 B)
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 5, "queue": {"bytes": 400000},
                      "ecn_mark": {"k": f"{k}B"}})
    # Pause: HTB at 24 bit/s (3 B/s) with a 1-byte burst. The first frame (a 43-byte datagram)
    # leaves on the credit left and puts the class 14 s in debt, which no rate change
    # forgives: the port holds everything for those 14 s, then resumes at 5 Mb/s.
    htb = "tc class change dev s1-eth1 parent 1: classid 1:1 htb rate {0} ceil {0} {1}"
    pause = htb.format("24bit", "burst 1b cburst 1b quantum 1514")
    resume = htb.format("5Mbit", "quantum 60000")
    with running_network(topo, hosts={"ecn": False}) as net:
        kernel = net.backends["kernel"]  # the marker built to read the qdisc this way
        kernel.ecn.stop()
        kernel.ecn = EcnMarking(net, qdisc=qdisc).start()
        offloads(net, ["h1", "h2"], False)
        TcpInt(IntOptions(enabled=True, scale=scale), net, qdisc=qdisc).start()
        # no retransmission while paused: the queue holds exactly what was sent once
        net.run("h1", f"ip route add {net.ip('h2')}/32 dev h1-eth0 rto_min 10s")
        srv = net["h2"].popen([PY, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().startswith("ready")
        cl = net["h1"].popen([PY, "-c", KNOWN_QUEUE_CLIENT.format(
            dst=net.ip("h2"), n_udp=n_udp, tcp_bytes=n_tcp * 1448)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert cl.stdout.readline().startswith("connected")
            cap = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
            out = net.run("s1", pause)
            assert "24bit" in net.run("s1", "tc class show dev s1-eth1"), out
            cl.stdin.write("go\n"); cl.stdin.flush()
            assert cl.stdout.readline().startswith("udp")
            b_udp = _settled_backlog(net, "s1", "s1-eth1")
            cl.stdin.write("go\n"); cl.stdin.flush()
            assert cl.stdout.readline().startswith("tcp")
            b_end = _settled_backlog(net, "s1", "s1-eth1")
            out = net.run("s1", resume)
            assert "5Mbit" in net.run("s1", "tc class show dev s1-eth1"), out
            deadline = time.monotonic() + 40
            while tc_backlog(net, "s1", "s1-eth1") and time.monotonic() < deadline:
                time.sleep(0.2)
            cl.stdin.write("go\n"); cl.stdin.flush()
            cl.wait(timeout=30)
        finally:
            if cl.poll() is None:
                cl.kill()
        pkts = cap.stop()
        srv.kill()
        ecn = net.ecn_counters()[0]
        src = net.ip("h1")
    first = {}
    for p in pkts:
        if IP in p and p[IP].src == src and len(p[TCP].payload) and p[TCP].seq not in first:
            first[p[TCP].seq] = p
    segs = [first[s] for s in sorted(first)]
    lens = [len(p) for p in segs]
    print(f"{qdisc}: backlog with UDP {b_udp}, then {b_end}; {len(segs)} segments {lens}; "
          f"ECN {ecn}")
    assert b_udp > k, "the UDP datagrams did not queue: the test's premise"
    # The segments the paused queue held: the first n, whose frames make up what tc saw
    # added (TCP small queues may hold the rest in the sender until the queue moves: 4 of
    # 10 were queued on 6.1, all on 6.18). Those sent after the port resumed are not judged.
    # Besides them the queue may hold a small frame of the host's own (the guest's IPv6
    # router solicitation, 70 B, was seen): less than one segment left over, and each
    # segment found the backlog with or without it.
    delta = b_end - b_udp
    n = max(i for i in range(len(lens) + 1) if sum(lens[:i]) <= delta)
    other = delta - sum(lens[:n])
    assert n >= 2 and other < min(lens), ("the queue did not hold the TCP segments",
                                          b_udp, b_end, lens)
    for i, p in enumerate(segs[:n]):
        found = b_end - sum(lens[i:n])
        got = decode_qdepth(v04(int_option(p)[1])["intval"], scale)
        assert got in {found // q * q, (found - other) // q * q}, (i, got, found, other,
                                                                   b_udp, b_end)
    # every TCP segment, and the datagrams queued above K (1042-byte frames), found more
    # than K
    assert ecn["over_pkts"] >= n + (b_udp - k) // 1042 - 1, (ecn, b_udp)
    assert ecn["marked_pkts"] == 0


def test_untagged_and_non_tcp_pass_byte_identical_and_outside_cgroup_untouched():
    """h1 is in the experiment (host program), h3 not; a process in h1's namespace but not
    in its cgroup is not either. Their TCP, and all UDP/ICMP, cross the switch unchanged."""
    topo = topo_line({"ends": ["h1", "s1"]}, {"ends": ["h3", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 50, "queue": {"packets": 100}},
                     hosts=("h1", "h2", "h3"))
    with running_network(topo) as net:
        offloads(net, ["h1", "h2", "h3"], False)
        TcpInt(IntOptions(enabled=True, hosts=["h1"]), net).start()
        ins = [Capture(net, "s1", "s1-eth0", "ip", direction="in"),
               Capture(net, "s1", "s1-eth1", "ip", direction="in")]
        out = Capture(net, "h2", "h2-eth0", "ip", direction="in")
        iperf(net, "h1", "h2", 1, extra="-u -b 2M", port=5204)  # UDP from h1
        net.run("h1", f"ping -c 5 -i 0.05 {net.ip('h2')}")    # ICMP
        iperf(net, "h3", "h2", 1, extra="-b 5M", port=5203)   # h3: outside the experiment
        # TCP from h1's namespace, but a process outside h1's cgroup (the test's own)
        pid = net["h1"].pid
        srv = testing.iperf_server(net["h2"], 5205)
        subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "iperf3", "-c", net.ip("h2"),
                        "-p", "5205", "-t", "1", "-b", "5M"], check=True, capture_output=True, timeout=20)
        srv.wait(timeout=10)
        iperf(net, "h1", "h2", 1, extra="-b 5M", port=5206)  # tagged control
        before = [p for c in ins for p in c.stop()]
        after = out.stop()
        h2_ip = net.ip("h2")
    from scapy.all import Ether

    def key(p):
        ip = p[IP]
        return (ip.src, ip.dst, ip.id, ip.proto, bytes(ip.payload)[:8])
    b = {key(p): bytes(p) for p in before}
    a = {key(p): bytes(p) for p in after}
    common = set(a) & set(b)
    assert len(common) > 200
    tagged = {k: bool(int_option(Ether(b[k]))) for k in common}
    untagged = [k for k in common if not tagged[k]]
    assert len(untagged) > 150
    for k in untagged:
        assert a[k] == b[k], k  # byte-identical across the switch
    assert {1, 6, 17} <= {k[3] for k in untagged}

    def tcp_to(port: int) -> list[bool]:
        return [tagged[k] for k in common if k[3] == 6 and k[1] == ip_h2
                and int.from_bytes(k[4][2:4], "big") == port]
    ip_h2 = h2_ip
    assert tcp_to(5203) and not any(tcp_to(5203))  # h3: not in the experiment
    assert tcp_to(5205) and not any(tcp_to(5205))  # h1's netns, outside its cgroup
    assert any(tcp_to(5206))                        # h1's own processes: tagged
    assert not any(tagged[k] for k in common if k[3] != 6)


def before_pkt(raw: bytes):
    from scapy.all import Ether
    return Ether(raw)


def test_everything_detaches_on_stop_and_teardown():
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 50, "queue": {"packets": 100}})
    with running_network(topo) as net:
        ti = TcpInt(IntOptions(enabled=True), net).start()
        pins = net.tracker.pin_dir()
        ids = our_prog_ids(ti)
        assert len(ids) == 2
        assert "tcp_int_switch" in net.run("s1", "tc filter show dev s1-eth1 egress") or \
            subprocess.run(["nsenter", f"--net=/proc/{net['s1'].pid}/ns/net", "tc", "filter",
                            "show", "dev", "s1-eth1", "egress"], capture_output=True,
                           text=True).stdout
        cg = net.tracker.node_cgroup("h1")
        assert "sock_ops" in subprocess.run(["bpftool", "cgroup", "show", str(cg)],
                                            capture_output=True, text=True).stdout
        assert not programs_gone(ids, timeout=0)
        ti.stop()
        for s, intf in (("s1", "s1-eth0"), ("s1", "s1-eth1")):
            show = subprocess.run(["nsenter", f"--net=/proc/{net[s].pid}/ns/net", "tc",
                                   "qdisc", "show", "dev", intf], capture_output=True,
                                  text=True).stdout
            assert "clsact" not in show
        assert "sock_ops" not in subprocess.run(["bpftool", "cgroup", "show", str(cg)],
                                                capture_output=True, text=True).stdout
        assert not any((pins / n).exists() for n in ("tcp_int_switch", "tcp_int_state",
                                                     "tcp_int_ports", "tcp_int_events"))
        # a new connection carries no option
        cap = Capture(net, "h2", "h2-eth0", "tcp", direction="in")
        iperf(net, "h1", "h2", 0.3)
        assert not any(int_option(p) for p in cap.stop())
    assert programs_gone(ids)


def our_prog_ids(ti: TcpInt) -> set[int]:
    """The kernel ids of this run's two TCP-INT programs (other runs on the machine load
    programs of the same names): read off their fds' fdinfo."""
    ids = set()
    for fd in (ti.switch_obj.prog_fd("tcp_int_switch"), ti.host_obj.prog_fd("tcp_int_host")):
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        ids.add(int(re.search(r"^prog_id:\s*(\d+)", info, re.M).group(1)))
    return ids


def programs_gone(ids: set[int], timeout: float = 3.0) -> bool:
    """None of these programs left in the kernel (freed after an RCU grace period: poll)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [i for i in ids if subprocess.run(["bpftool", "prog", "show", "id", str(i)],
                                                 capture_output=True).returncode == 0]
        if not left:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_teardown_through_tracker_without_stop():
    """An exception inside the run: the tracker's undo detaches TCP-INT."""
    topo = topo_line({"ends": ["h1", "s1"]}, {"ends": ["s1", "h2"], "bw": 50})
    with pytest.raises(RuntimeError):
        with running_network(topo) as net:
            ids = our_prog_ids(TcpInt(IntOptions(enabled=True), net).start())
            pins = net.tracker.pin_dir()
            raise RuntimeError("boom")
    assert not pins.exists()
    assert len(ids) == 2 and programs_gone(ids)


@pytest.mark.parametrize("echo", [False, True], ids=["no-echo", "echo"])
def test_tag_every_n_tags_one_in_n_segments(echo):
    """1 in 16 data segments on the wire carry the option. TCP hands down whole sends (GSO,
    even with gso off on the device) and each wire segment cut from a tagged send carries
    it, so they come in runs: tagging counts wire segments, not sends (counting sends
    tagged 4-7 % here). With echo on, every run is echoed, and the echo ends there (an
    echoed ACK's own telemetry is not echoed back: that chain had tagged 96 % of the
    data segments)."""
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 50, "queue": {"packets": 100}})
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], False)
        TcpInt(IntOptions(enabled=True, tag_every=16, echo=echo), net).start()
        cap = Capture(net, "h2", "h2-eth0", "tcp")
        iperf(net, "h1", "h2", 1.0)
        pkts = cap.stop()
    sender = net_ip(pkts)
    n_data, runs = tagged_runs(pkts, sender)
    tagged = sum(length for length, _ in runs)
    longest = max((length for length, _ in runs), default=0)
    acks = [int_option(p) for p in pkts if p[IP].dst == sender and not len(p[TCP].payload)]
    echoes = [o for o in acks if o and v04(o[1])["idecr"]]   # naming a hop of the data path
    assert n_data > 500
    # a send is tagged when the tagged share has fallen below 1/16: off by one send at most
    # (+ 0.5 % for what the switch dropped before the capture); counting sends missed by 45
    assert abs(tagged - n_data / 16) <= longest + 0.005 * n_data, (tagged, n_data, longest)
    assert len(runs) >= 3, runs
    if echo:
        # the receiver ACKs every other segment: a run of k gets about k/2 echoes, at least
        # one before the next run (the capture may end inside the last)
        assert all(e for _, e in runs[:-1]), runs
        assert len(echoes) <= sum(1 for o in acks if o) <= tagged + 2, (len(echoes), tagged)
    else:
        assert not any(acks), sum(1 for o in acks if o)


def tagged_runs(pkts, sender: str) -> tuple[int, list[list[int]]]:
    """The sender's data segments, counted, and each run of consecutive tagged ones as
    [its length, the ACKs naming a hop that the receiver sent before the next run]."""
    n_data, runs, prev = 0, [], False
    for p in pkts:
        if p[IP].src == sender and len(p[TCP].payload) > 100:
            n_data += 1
            tagged = bool(int_option(p))
            if tagged and not prev:
                runs.append([0, 0])
            if tagged:
                runs[-1][0] += 1
            prev = tagged
        elif p[IP].dst == sender and runs:
            o = int_option(p)
            runs[-1][1] += bool(o and v04(o[1])["idecr"])
    return n_data, runs


def net_ip(pkts) -> str:
    """The sender of the most data bytes in a capture."""
    by = {}
    for p in pkts:
        by[p[IP].src] = by.get(p[IP].src, 0) + len(p[TCP].payload)
    return max(by, key=by.get)


def test_bad_node_names_are_config_errors():
    """`int.hosts`/`int.switches` naming no host/switch: refused by the loader (the one
    check `validate` and `run` share, config.checks), before anything exists."""
    from testbed.preflight import load_experiment
    from testbed.errors import ConfigError
    from testbed.testing import experiment_text
    topo = topo_line({"ends": ["h1", "s1"]}, {"ends": ["s1", "h2"]})
    for key, names, words in (("hosts", ["nope"], "unknown host 'nope'"),
                              ("hosts", ["s1"], "s1 is a switch"),
                              ("switches", ["h1"], "h1 is a host")):
        text = experiment_text(topo, int={"enabled": True, key: names})
        with pytest.raises(ConfigError, match=f"int.{key}\\[0\\]: {words}"):
            load_experiment("<test>", text=text)
    with pytest.raises(Exception, match="extra|forbid|not permitted"):
        IntOptions(enabled=True, bogus=1)


def test_int_trace_instrument_writes_csv_and_plot(tmp_path):
    import csv

    from testbed.instruments.base import InstrumentContext, load_all
    from testbed.instruments.int_trace import IntTrace

    assert load_all()["int_trace"] is IntTrace
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 20, "queue": {"packets": 80}})
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], False)
        ti = TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
        t0 = time.monotonic_ns()
        ctx = InstrumentContext(net=net, outdir=tmp_path, tracker=net.tracker, t0_ns=t0,
                                tcp_int=ti)
        inst = IntTrace(IntTrace.Options(), ctx)
        inst.start()
        flow = Iperf(net, "h1", "h2", 2, cc="cubic")
        # a coarse ground truth in the queue sampler's format, for the plot
        with open(tmp_path / "queue.csv", "w") as f:
            f.write("time,node,iface,backlog_bytes,qlen_pkts,drops,sent_bytes\n")
            while flow.running():
                out = net.run("s1", "tc -s qdisc show dev s1-eth1")
                b = out.split(" backlog ")[1].split()[0].rstrip("b")  # tc: 512b, 60Kb, 1Mb
                b = int(float(b.rstrip("KM")) * {"K": 1024, "M": 1 << 20}.get(b[-1], 1))
                f.write(f"{(time.monotonic_ns() - t0) / 1e9},s1,s1-eth1,{b},0,0,0\n")
                time.sleep(0.05)
        flow.wait()
        inst.stop()
        paths = inst.write()
    rows = list(csv.DictReader(open(tmp_path / "int_trace.csv")))
    assert list(rows[0]) == ["time", "flow", "queue_bytes", "util", "hop_id",
                             "hop_latency_ns", "srtt_us", "cwnd", "intval", "link_mbps", "mss",
                             "retrans", "bytes_acked"]
    assert len(rows) > 100
    assert {r["hop_id"] for r in rows} == {"1"}
    assert max(int(r["queue_bytes"]) for r in rows) > 4 * 2048
    assert all(int(r["srtt_us"]) > 0 and int(r["cwnd"]) > 0 for r in rows)
    ts = [float(r["time"]) for r in rows]
    assert 0 < ts[0] <= ts[-1] < 10
    assert (tmp_path / "int_trace.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "int_trace.meta.json").read_text())["lost_in_ring"] == 0
    assert len(paths) == 3


# Built outside the repo (docs/tcp-int.md): TCP_INT_PUBLIC_TOOL, else where the docs build it.
PUBLIC_TOOL_AT = "/opt/tcp-int-public/code/src/tools/tcp_int"
PUBLIC_TOOL = os.environ.get("TCP_INT_PUBLIC_TOOL") or \
    (PUBLIC_TOOL_AT if os.access(PUBLIC_TOOL_AT, os.X_OK) else None)
PUBLIC_PINS = Path("/sys/fs/bpf/tcp-int")   # the public tool's fixed pin dir


@pytest.mark.skipif(not PUBLIC_TOOL, reason=f"p4app-TCP-INT's tools/tcp_int is not built at "
                    f"{PUBLIC_TOOL_AT} and TCP_INT_PUBLIC_TOOL is unset (docs/tcp-int.md)")
def test_public_host_tool_reads_our_switch():
    """p4lang/p4app-TCP-INT's host program instead of ours: its trace shows our switch's
    queue depth (8 KiB quanta) and hop id (bridge 1)."""
    if PUBLIC_PINS.exists():   # its names are not per run: never touch another user's
        pytest.skip(f"the public tool is loaded already ({PUBLIC_PINS} exists)")
    topo = topo_line({"ends": ["h1", "s1"]},
                     {"ends": ["s1", "h2"], "bw": 100, "queue": {"packets": 200}})
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], False)
        TcpInt(IntOptions(enabled=True, hosts=[]), net).start()  # switch side only
        r = subprocess.run([PUBLIC_TOOL, "load", "-c", str(net.tracker.cgroup)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        tr = subprocess.Popen([PUBLIC_TOOL, "trace"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(0.5)
            iperf(net, "h1", "h2", 2)
        finally:
            tr.terminate()
            out = tr.communicate(timeout=5)[0]
            subprocess.run([PUBLIC_TOOL, "unload"], capture_output=True, timeout=30)
            # its unload leaves its program pin and pin dir behind (ours: it was absent)
            for pin in PUBLIC_PINS.glob("*") if PUBLIC_PINS.exists() else []:
                pin.unlink()
            if PUBLIC_PINS.exists():
                PUBLIC_PINS.rmdir()
    # whole records of h1's flow (the last line may be cut off by the terminate)
    src = f"{net.ip('h1')}:"
    rows = [cols for cols in ([c.strip() for c in l.split(",")] for l in out.splitlines())
            if len(cols) >= 11 and cols[0][:1].isdigit() and cols[1].startswith(src)]
    assert len(rows) > 20
    qdepth = [int(r[8]) for r in rows]
    assert max(qdepth) >= 4 * 8192 and all(q % 8192 == 0 for q in qdepth)
    assert {int(r[10]) for r in rows} == {1}          # HID: the first bridge
    assert max(float(r[9]) for r in rows) > 100       # HLAT (us): a queue at 100 Mb/s


def test_ipv6_segments_are_stamped_with_valid_checksums():
    from scapy.all import IPv6

    topo = {**topo_line({"ends": ["h1", "s1"]},
                        {"ends": ["s1", "h2"], "bw": 50, "queue": {"packets": 100}}),
            "ipv6": True}
    with running_network(topo) as net:
        offloads(net, ["h1", "h2"], False)
        TcpInt(IntOptions(enabled=True, scale="fine"), net).start()
        cap = Capture(net, "h2", "h2-eth0", "ip6 and tcp", direction="in")
        dst = net.ip("h2", v6=True).split("/")[0]
        srv = testing.iperf_server(net["h2"], 5207)
        net.run("h1", f"iperf3 -6 -c {dst} -p 5207 -t 1")
        srv.wait(timeout=10)
        pkts = cap.stop()
    data = [p for p in pkts if IPv6 in p and len(p[TCP].payload)]
    tagged = [(p, int_option(p)) for p in data if int_option(p)]
    assert len(tagged) > 50 and len(tagged) >= 0.9 * len(data)
    assert {v04(o[1])["hopid"] for _, o in tagged} == {63}
    assert any(v04(o[1])["intval"] > 0 for _, o in tagged)
    for p, _ in tagged[:200]:
        raw = bytes(p[IPv6])
        seg = raw[40:40 + p[IPv6].plen]
        ph = raw[8:40] + struct.pack("!IxxxB", len(seg), 6)
        assert _fold(_sum16(ph) + _sum16(seg)) == 0xffff  # full checksum valid
