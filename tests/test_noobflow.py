"""noobflow, for real: two namespaces joined by a veth, XDP on the receiving end, known
frames sent through AF_PACKET from two CPUs (built with scapy) and iperf3 traffic.

Checks: per-flow packets and bytes summed over intervals equal what was sent and the
interface counters, with a swap every 10 ms during the traffic (IPv4 and IPv6); a
filter change mid-run takes effect without losing the other flows' counts; the CLI
refuses bad input with exit 2 and nothing attached; Ctrl-C flushes the last interval;
teardown leaves no XDP program on the interface.
"""
from __future__ import annotations

import json
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ETH_HLEN = 14

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from testbed.instruments.noobflow import (  # noqa: E402
    Collector, FlowFilter, Noobflow, attached_prog_id, netns)


# ------------------------------------------------------------------ fixture

class Pair:
    """Two namespaces a (sender) and b (receiver, XDP attached) joined by a veth."""

    def __init__(self):
        tag = secrets.token_hex(2)
        self.pfx = f"tbnf{tag}"
        self.a, self.b = f"{self.pfx}a", f"{self.pfx}b"
        self.ia, self.ib = f"{self.pfx}0", f"{self.pfx}1"

    def sh(self, cmd: str) -> str:
        return subprocess.run(cmd, shell=True, check=True, capture_output=True,
                              text=True).stdout

    def up(self) -> "Pair":
        a, b, ia, ib = self.a, self.b, self.ia, self.ib
        self.sh(f"ip netns add {a}")
        self.sh(f"ip netns add {b}")
        self.sh(f"ip link add {ia} netns {a} type veth peer name {ib} netns {b}")
        for ns, i, v4, v6 in ((a, ia, "10.77.0.1", "fd77::1"), (b, ib, "10.77.0.2", "fd77::2")):
            # quiet IPv6: no DAD, no router solicitations, so only test traffic flows
            self.sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.{i}.accept_dad=0 "
                    f"net.ipv6.conf.{i}.router_solicitations=0")
            self.sh(f"ip -n {ns} addr add {v4}/24 dev {i}")
            self.sh(f"ip -n {ns} addr add {v6}/64 dev {i} nodad")
            self.sh(f"ip -n {ns} link set {i} up")
            self.sh(f"ip -n {ns} link set lo up")
        self.mac_a = self.sh(f"ip netns exec {a} cat /sys/class/net/{ia}/address").strip()
        self.mac_b = self.sh(f"ip netns exec {b} cat /sys/class/net/{ib}/address").strip()
        # static neighbours: no ARP/ND in the middle of the counts
        self.sh(f"ip -n {a} neigh replace 10.77.0.2 lladdr {self.mac_b} dev {ia}")
        self.sh(f"ip -n {b} neigh replace 10.77.0.1 lladdr {self.mac_a} dev {ib}")
        self.sh(f"ip -n {a} neigh replace fd77::2 lladdr {self.mac_b} dev {ia}")
        self.sh(f"ip -n {b} neigh replace fd77::1 lladdr {self.mac_a} dev {ib}")
        return self

    def down(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def counters(self) -> tuple[int, int, int]:
        """(a's tx packets, a's tx bytes, b's rx packets). Once XDP is attached, veth
        receives through NAPI and counts bytes after eth_type_trans(), i.e. without the
        14-byte Ethernet header, on both ends; noobflow counts whole frames."""
        tx = json.loads(self.sh(f"ip -n {self.a} -j -s link show {self.ia}"))[0]["stats64"]["tx"]
        rx = json.loads(self.sh(f"ip -n {self.b} -j -s link show {self.ib}"))[0]["stats64"]["rx"]
        return tx["packets"], tx["bytes"], rx["packets"]

    def xdp_prog(self) -> int:
        with netns(self.b):
            return attached_prog_id(self.ib)


@pytest.fixture
def pair():
    p = Pair().up()
    try:
        yield p
    finally:
        p.down()


@pytest.fixture(scope="module")
def nf():
    """One compiled object for the module's tests (compile costs ~4 s)."""
    n = Noobflow(points=2)
    try:
        yield n
    finally:
        n.close()


SENDER = r"""
import pickle, socket, sys, time
frames, iface, burst, pause = pickle.load(open(sys.argv[1], "rb"))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for i, f in enumerate(frames):
    while True:
        try:
            s.send(f)
            break
        except BlockingIOError:  # device queue full: retry, never drop silently
            time.sleep(0.0005)
    if burst and i % burst == burst - 1:
        time.sleep(pause)
"""


def send(pair: Pair, frames_per_cpu: list[list[bytes]], burst: int = 50,
         pause: float = 0.002) -> None:
    """Send frames from namespace a, one sender process pinned to each CPU listed."""
    procs, files = [], []
    ncpu = os.cpu_count() or 1
    for cpu, frames in enumerate(frames_per_cpu):
        f = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
        pickle.dump((frames, pair.ia, burst, pause), f)
        f.close()
        files.append(f.name)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", pair.a, "taskset", "-c", str(cpu % ncpu), PY, "-c",
             SENDER, f.name]))
    try:
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in files:
            os.unlink(f)


def flows_of_frames(frames: list[bytes]) -> dict[tuple, list[int]]:
    """Expected per-flow (packets, bytes) decoded by scapy from the frames themselves."""
    from scapy.all import IP, TCP, UDP, Ether, IPv6
    exp: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for raw in frames:
        p = Ether(raw)
        ip = p[IP] if IP in p else p[IPv6]
        proto = ip.proto if IP in p else ip.nh
        l4 = p[TCP] if TCP in p else (p[UDP] if UDP in p else None)
        key = (ip.src, ip.dst, l4.sport if l4 else 0, l4.dport if l4 else 0, proto)
        e = exp[key]
        e[0] += 1
        e[1] += len(raw)
        if TCP in p:
            e[2] |= int(p[TCP].flags)
    return exp


def make_frames(pair: Pair, n_per_flow: int) -> list[list[bytes]]:
    """Six known flows (v4/v6, UDP/TCP/ICMP, varied sizes), split over two CPUs so
    each flow has per-CPU values on both."""
    from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, Raw
    eth = Ether(src=pair.mac_a, dst=pair.mac_b)
    v4 = dict(src="10.77.0.1", dst="10.77.0.2")
    v6 = dict(src="fd77::1", dst="fd77::2")
    flows = [
        lambda i: eth / IP(**v4) / UDP(sport=4001, dport=9001) / Raw(b"a" * (i % 200)),
        lambda i: eth / IP(**v4) / UDP(sport=4002, dport=9002) / Raw(b"b" * 1000),
        lambda i: eth / IP(**v4) / TCP(sport=4003, dport=9003,
                                       flags="S" if i == 0 else "PA") / Raw(b"c" * (i % 50)),
        lambda i: eth / IPv6(**v6) / UDP(sport=4004, dport=9004) / Raw(b"d" * (i % 300)),
        lambda i: eth / IPv6(**v6) / TCP(sport=4005, dport=9005,
                                         flags="F" if i == 1 else "A") / Raw(b"e" * 10),
        lambda i: eth / IP(**v4) / ICMP(seq=i) / Raw(b"f" * 56),
    ]
    per_cpu: list[list[bytes]] = [[], []]
    for i in range(n_per_flow):
        for fl in flows:
            per_cpu[i % 2].append(bytes(fl(i)))
    return per_cpu


def settle(pair: Pair, nf: Noobflow, sink, label: str):
    """Counters, drained rows and noobflow counters at one quiet moment: a late packet
    (an IPv6 MLD report, say) between the reads would make exact equalities flaky, so
    read until the interface counters did not move across the drain."""
    for _ in range(20):
        c1 = pair.counters()
        Collector(nf, 1, sink).collect()
        st = nf.stats()[label]
        if pair.counters() == c1:
            return c1, st
        time.sleep(0.05)
    raise AssertionError("traffic never stopped on the test veth")


class Rows:
    """A Collector sink keeping every row and the interval count."""

    def __init__(self):
        self.rows = []
        self.intervals = 0

    def __call__(self, rows, t0, t1):
        self.rows += rows
        self.intervals += 1

    def totals(self) -> dict[tuple, list[int]]:
        tot: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for r in self.rows:
            t = tot[(r.src, r.dst, r.sport, r.dport, r.proto)]
            t[0] += r.packets
            t[1] += r.bytes
            t[2] |= r.tcp_flags
            t[3] += 1  # intervals the flow appeared in
        return tot


# ------------------------------------------------------------------ tests

def test_exact_counts_v4_v6_two_cpus_10ms_swaps(pair, nf):
    nf.clear()
    nf.set_filter(FlowFilter())
    pt = nf.attach(pair.ib, pair.b)
    assert pair.xdp_prog() == pt.prog_id != 0
    c0, st0 = settle(pair, nf, Rows(), pt.label)
    sink = Rows()
    col = Collector(nf, 0.01, sink).start()
    frames = make_frames(pair, 1500)  # 9000 frames, paced over ~0.3 s
    send(pair, frames)
    time.sleep(0.05)
    col.stop()
    c1, st1 = settle(pair, nf, sink, pt.label)
    stats = {k: st1[k] - st0[k] for k in st1}
    nf.detach(pt)
    assert pair.xdp_prog() == 0, "teardown left the XDP program attached"

    exp = flows_of_frames(frames[0] + frames[1])
    got = sink.totals()
    assert len(exp) == 6
    for key, (pk, by, fl) in exp.items():
        assert key in got, f"flow {key} not recorded"
        assert got[key][:3] == [pk, by, fl], f"{key}: got {got[key][:3]}, sent {[pk, by, fl]}"
        assert got[key][3] >= 5, f"{key}: only {got[key][3]} intervals; swaps did not " \
                                 f"happen during the traffic"
    assert sink.intervals >= 20
    for r in sink.rows:  # every CPU's slot got its own first timestamp
        assert 0 < r.first_ns <= r.last_ns, r
    # Everything received (test flows and anything else) equals the interface counters.
    rec_pk = sum(r.packets for r in sink.rows)
    rec_by = sum(r.bytes for r in sink.rows)
    assert stats["lost_pkts"] == 0 and stats["filtered_pkts"] == 0
    assert rec_pk == stats["recorded_pkts"]
    sent_pk, sent_by, rx_pk = (x1 - x0 for x0, x1 in zip(c0, c1))
    info = (c0, c1, stats, [r for r in sink.rows if r.sport not in range(4001, 4006)])
    assert sent_pk == rx_pk == stats["seen_pkts"] == rec_pk + stats["nonip_pkts"], info
    assert sent_by + ETH_HLEN * sent_pk == stats["seen_bytes"] == rec_by + stats["nonip_bytes"], info


def test_iperf3_tcp_counts_match_interface(pair, nf):
    nf.clear()
    nf.set_filter(FlowFilter())
    pt = nf.attach(pair.ib, pair.b)
    srv = subprocess.Popen(["ip", "netns", "exec", pair.b, "iperf3", "-s", "-1", "-p", "5299"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        c0, st0 = settle(pair, nf, Rows(), pt.label)
        sink = Rows()
        col = Collector(nf, 0.01, sink).start()
        cli = subprocess.run(["ip", "netns", "exec", pair.a, "iperf3", "-c", "fd77::2", "-p",
                              "5299", "-n", "200M", "-J"], capture_output=True, text=True,
                             timeout=30)
        assert cli.returncode == 0, cli.stderr
        srv.wait(timeout=10)
        time.sleep(0.05)
        col.stop()
        c1, st1 = settle(pair, nf, sink, pt.label)
        stats = {k: st1[k] - st0[k] for k in st1}
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    nf.detach(pt)
    assert pair.xdp_prog() == 0
    sent = json.loads(cli.stdout)["end"]["sum_received"]["bytes"]
    got = sink.totals()
    data = [v for k, v in got.items() if k[3] == 5299 and k[4] == 6]
    # the control connection and the data connection, both to port 5299
    assert sum(v[1] for v in data) > sent, "data flow's frame bytes below iperf3 payload"
    assert max(v[3] for v in data) >= 5
    assert stats["lost_pkts"] == 0
    rec_pk = sum(r.packets for r in sink.rows)
    sent_pk, sent_by, rx_pk = (x1 - x0 for x0, x1 in zip(c0, c1))
    assert sent_pk == rx_pk == stats["seen_pkts"] == rec_pk + stats["nonip_pkts"]
    assert sent_by + ETH_HLEN * sent_pk == stats["seen_bytes"] \
        == sum(r.bytes for r in sink.rows) + stats["nonip_bytes"]


def test_filter_change_mid_run(pair, nf):
    from scapy.all import IP, UDP, Ether, IPv6, Raw
    nf.clear()
    nf.set_filter(FlowFilter.parse("port=1111,port=2222,port=3333"))
    pt = nf.attach(pair.ib, pair.b)
    eth = Ether(src=pair.mac_a, dst=pair.mac_b)
    fa = bytes(eth / IP(src="10.77.0.1", dst="10.77.0.2") / UDP(sport=5000, dport=1111) / Raw(b"x" * 100))
    fb = bytes(eth / IP(src="10.77.0.1", dst="10.77.0.2") / UDP(sport=5000, dport=2222) / Raw(b"y" * 200))
    fc = bytes(eth / IPv6(src="fd77::1", dst="fd77::2") / UDP(sport=5000, dport=3333) / Raw(b"z" * 10))
    sink = Rows()
    col = Collector(nf, 0.01, sink).start()
    send(pair, [[fa, fb, fc] * 200])                       # all three pass
    nf.set_filter(FlowFilter.parse("port=1111,port=3333"))  # b out, while collecting
    send(pair, [[fa, fb, fc] * 300])
    nf.set_filter(FlowFilter.parse("net=fd77::/64"))         # only IPv6 (c)
    send(pair, [[fa, fb, fc] * 100])
    nf.set_filter(FlowFilter())                             # everything again
    send(pair, [[fa, fb, fc] * 50])
    time.sleep(0.05)
    col.stop()
    stats = nf.stats()[pt.label]
    nf.detach(pt)
    got = sink.totals()
    a = got[("10.77.0.1", "10.77.0.2", 5000, 1111, 17)]
    b = got[("10.77.0.1", "10.77.0.2", 5000, 2222, 17)]
    c = got[("fd77::1", "fd77::2", 5000, 3333, 17)]
    assert a[:2] == [200 + 300 + 50, (200 + 300 + 50) * len(fa)]
    assert b[:2] == [200 + 50, (200 + 50) * len(fb)]
    assert c[:2] == [200 + 300 + 100 + 50, (200 + 300 + 100 + 50) * len(fc)]
    assert stats["filtered_pkts"] >= 300 + 100 + 100  # b in phase 2, a and b in phase 3
    assert stats["lost_pkts"] == 0
    assert pair.xdp_prog() == 0


def test_two_points_share_one_object(pair, nf):
    """Both ends of the veth, each in its own namespace, served by one compile; the
    point index keeps their records apart."""
    from scapy.all import IP, UDP, Ether, Raw
    nf.clear()
    nf.set_filter(FlowFilter.parse("proto=udp"))
    pb = nf.attach(pair.ib, pair.b, label="b")
    pa = nf.attach(pair.ia, pair.a, label="a")
    eth_ab = Ether(src=pair.mac_a, dst=pair.mac_b)
    f = bytes(eth_ab / IP(src="10.77.0.1", dst="10.77.0.2") / UDP(sport=1, dport=2) / Raw(b"q" * 64))
    send(pair, [[f] * 123])
    # and the other way: a sender in b
    rev = Ether(src=pair.mac_b, dst=pair.mac_a) / IP(src="10.77.0.2", dst="10.77.0.1") / UDP(sport=3, dport=4)
    with netns(pair.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((pair.ib, 0))
    for _ in range(77):
        s.send(bytes(rev))
    s.close()
    time.sleep(0.05)
    rows = Rows()
    Collector(nf, 1, rows).collect()
    per = {(r.point, r.sport): r.packets for r in rows.rows}
    assert per == {("b", 1): 123, ("a", 3): 77}
    nf.detach_all()
    assert pair.xdp_prog() == 0
    with netns(pair.a):
        assert attached_prog_id(pair.ia) == 0


def _cli(*args, user=None, **kw):
    cmd = [PY, "-m", "testbed.tools.flows", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60, **kw)


@pytest.mark.parametrize("args,user,words", [
    (["-i", "nosuchif0"], None, "no interface"),
    (["-i", "{ib}", "--filter", "port=99999"], None, "port must be"),
    (["-i", "{ib}", "--filter", "net=10.0.0.300/8"], None, "not an address prefix"),
    (["-i", "{ib}", "--filter", "color=red"], None, "unknown filter kind"),
    (["-i", "lo"], None, "no native XDP support"),
    (["-i", "{ib}"], "65534", "needs root"),
])
def test_cli_bad_input_exit2_nothing_attached(pair, args, user, words):
    args = [a.format(ib=pair.ib) for a in args] + ["--netns", pair.b]
    r = _cli(*args, user=user)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert r.stdout == ""
    assert pair.xdp_prog() == 0
    with netns(pair.b):
        from testbed.instruments.noobflow import attached_prog_id as apid
        assert apid("lo") == 0


def test_cli_ctrl_c_flushes_last_interval_and_detaches(pair):
    from scapy.all import IP, UDP, Ether, Raw
    out = tempfile.NamedTemporaryFile(suffix=".csv", delete=False)
    out.close()
    p = subprocess.Popen([PY, "-m", "testbed.tools.flows", "-i", pair.ib, "--netns", pair.b,
                          "--interval", "60", "--csv", out.name, "-q"], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while pair.xdp_prog() == 0:
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline, "flows never attached"
            time.sleep(0.1)
        f = bytes(Ether(src=pair.mac_a, dst=pair.mac_b) / IP(src="10.77.0.1", dst="10.77.0.2")
                  / UDP(sport=7777, dport=8888) / Raw(b"k" * 33))
        send(pair, [[f] * 321])
        time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 0, p.stderr.read()
        assert pair.xdp_prog() == 0
        import csv
        rows = list(csv.DictReader(open(out.name)))
        mine = [r for r in rows if r["sport"] == "7777"]
        assert len(mine) == 1
        assert int(mine[0]["packets"]) == 321 and int(mine[0]["bytes"]) == 321 * len(f)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.unlink(out.name)


def test_instrument_on_host_and_router_port(tmp_path):
    """The `noobflow` instrument on a testbed network (h1 - r1 - h2): one compile for a
    host and a router port in different namespaces; the iperf3 data flow has the same
    packet and byte counts at both points; throughput rows name the hosts; stop()
    detaches everything."""
    import csv
    from testbed.instruments.base import InstrumentContext, load_all
    from testbed.testing import iperf_server, running_network
    reg = load_all()
    Inst = reg["noobflow"]
    with running_network({"builtin": "chain", "routers": 1}) as net:
        # the router port facing h1: the one on h1's subnet
        h1_ip = net.ip("h1")
        r1_in = next(i for i in net["r1"].intfNames() if i != "lo" and
                     h1_ip.rsplit(".", 1)[0] in net["r1"].cmd(f"ip -4 -o addr show dev {i}"))
        opts = Inst.Options(hosts=["h2"], ports=[f"r1:{r1_in}"], interval=0.02)
        ctx = InstrumentContext(net=net, outdir=tmp_path, tracker=net.tracker)
        inst = Inst(opts, ctx)
        inst.start()
        ctx.t0_ns = time.monotonic_ns()  # as the runner does: t0 fixed after start()
        h2_if = [i for i in net["h2"].intfNames() if i != "lo"]
        with netns(net["h2"].pid):
            assert all(attached_prog_id(i) for i in h2_if)
        srv = iperf_server(net["h2"], 5201)
        try:
            out = net["h1"].cmd(f"iperf3 -c {net.ip('h2')} -p 5201 -n 20M -J")
            srv.wait(timeout=20)
        finally:
            if srv.poll() is None:
                srv.kill()
        time.sleep(0.05)
        inst.stop()
        paths = inst.write()
        with netns(net["h2"].pid):
            assert not any(attached_prog_id(i) for i in h2_if)
        with netns(net["r1"].pid):
            assert attached_prog_id(r1_in) == 0
    sent = json.loads(out)["end"]["sum_received"]["bytes"]
    assert [p.name for p in paths] == ["flows_noobflow.csv", "throughput_noobflow.csv"]
    rows = list(csv.DictReader(open(tmp_path / "flows_noobflow.csv")))
    per: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        if r["dport"] == "5201" and r["dst"] == net.ip("h2"):
            k = (r["point"], r["sport"])
            per[k][0] += int(r["packets"])
            per[k][1] += int(r["bytes"])
            per[k][2] += 1
    sports = {k[1] for k in per}
    assert len(sports) == 2  # iperf3's control and data connections
    for sp in sports:
        at_h2, at_r1 = per[(f"h2:{h2_if[0]}", sp)], per[(f"r1:{r1_in}", sp)]
        assert at_h2[:2] == at_r1[:2], f"sport {sp}: h2 {at_h2} vs r1 {at_r1}"
    data = max(sports, key=lambda sp: per[(f"h2:{h2_if[0]}", sp)][1])
    end = json.loads(out)["end"]
    assert per[(f"h2:{h2_if[0]}", data)][1] > sent, (dict(per), end["sum_sent"], end["sum_received"])
    tp = [r for r in csv.DictReader(open(tmp_path / "throughput_noobflow.csv"))
          if r["flow"].endswith(f"->{net.ip('h2')}:5201") and f":{data}->" in r["flow"]]
    assert tp and {(r["src"], r["dst"]) for r in tp} == {("h1", "h2")}
    assert max(float(r["bps"]) for r in tp) > 0
    times = [float(r["time"]) for r in tp]
    assert times == sorted(times) and len(times) == len(set(times))
    assert 0 < times[0] and times[-1] < 60, "times not relative to the runner's t0"


def test_filter_parse_and_header_limits(nf):
    from testbed.instruments.noobflow import H
    f = FlowFilter.parse(["proto=tcp,port=5201", "net=10.0.0.0/8 net=fd00::/64", "proto=17"])
    assert f.protos == (6, 17) and f.ports == (5201,) and len(f.prefixes) == 2
    assert f.flags == H["NF_F_PREFIX"] | H["NF_F_PORT"] | H["NF_F_PROTO"]
    assert FlowFilter.parse("").flags == 0
    for bad in ("port", "port=-1", "proto=bogus", "net=1.2.3", "x=1", "proto=256"):
        with pytest.raises(ValueError):
            FlowFilter.parse(bad)
    # the loaded maps have the header's limits (one definition, read by both sides)
    assert nf.bpf["nf_buf0"].max_entries == H["NF_MAX_FLOWS"]
    assert nf.bpf["nf_prefixes"].max_entries == H["NF_MAX_PREFIXES"]
    assert nf.bpf["nf_ports"].max_entries == H["NF_MAX_PORTS"]
    assert nf.bpf["nf_stats"].max_entries == H["NF_MAX_POINTS"]


def test_buffer_full_is_counted_not_silent(pair):
    """More flows than a buffer holds: the overflow is counted in lost_pkts, exactly."""
    from scapy.all import IP, UDP, Ether
    small = Noobflow(points=1, max_flows=16)
    try:
        pt = small.attach(pair.ib, pair.b)
        eth = Ether(src=pair.mac_a, dst=pair.mac_b)
        frames = [bytes(eth / IP(src="10.77.0.1", dst="10.77.0.2") / UDP(sport=6000 + i, dport=1))
                  for i in range(20) for _ in range(5)]
        small.set_filter(FlowFilter.parse("port=1"))  # keep stray traffic out of the 16
        send(pair, [frames], burst=0)
        time.sleep(0.05)
        rows = Rows()
        Collector(small, 1, rows).collect()
        st = small.stats()[pt.label]
        small.detach(pt)
        assert len(rows.rows) == 16 and all(r.packets == 5 for r in rows.rows)
        assert st["lost_pkts"] == 4 * 5
        assert st["seen_pkts"] == st["recorded_pkts"] + st["lost_pkts"] + \
            st["filtered_pkts"] + st["nonip_pkts"]
    finally:
        small.close()
    assert pair.xdp_prog() == 0
