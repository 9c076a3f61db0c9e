"""The network comes up as specified: real namespaces, links, addresses, routes, qdiscs."""
from __future__ import annotations

import re
import statistics
import time

import pytest

from testbed.network.backends.kernel import BR_NETFILTER, SWITCH_SYSCTLS
from testbed.config.units import FRAME_BYTES
from testbed.testing import Iperf, iperf_json as _iperf, ping_all, running_network

pytestmark = pytest.mark.needs_root


@pytest.mark.parametrize("spec", [
    {"builtin": "dumbbell", "pairs": 2},
    {"builtin": "incast", "senders": 4},
    {"builtin": "chain", "routers": 4},
    {"builtin": "leafspine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2},
], ids=lambda s: s["builtin"])
def test_builtin_topology_all_pairs_ping_v4_v6(spec):
    with running_network(spec) as net:
        for v6 in (False, True):
            res = ping_all(net, v6)
            n = len(net.hosts)
            assert len(res) == n * (n - 1)
            assert all(res.values()), [k for k, ok in res.items() if not ok]


@pytest.mark.parametrize("spec", [{"builtin": "dumbbell", "pairs": 2, "bw": 1000,
                                   "bottleneck_bw": 20},
                                  {"builtin": "chain", "routers": 2}], ids=["bridges", "routers"])
def test_first_packet_after_bringup_gets_through(spec):
    """When the network says it is up, its links carry traffic: the first ARP and ping of
    a run are answered at once (they were lost about every other run, the bridge port
    not yet forwarding: 1 s to the ARP retry). The mechanism: no two ends of a veth share
    an ifindex (the kernel then handles their carrier at once), and bring-up waits for
    carrier and forwarding state."""
    for _ in range(3):
        with running_network(spec) as net:
            far = net.hosts[-1].name
            t = time.monotonic()
            out = net["h1"].cmd(f"ping -c1 -W2 {net.ip(far)}")
            took = time.monotonic() - t
            assert " 0% packet loss" in out and took < 0.5, (took, out)
            for l in net.graph.links:
                idx = [int(net.run(i.node, f"cat /sys/class/net/{i.name}/ifindex"))
                       for i in (l.a, l.b)]
                assert idx[0] != idx[1], (l.a.name, l.b.name, idx)


def test_root_namespace_gets_nothing_of_the_topology():
    import subprocess
    before = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    with running_network({"builtin": "chain", "routers": 2}) as net:
        during = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        assert net.ip("h1") not in during and "10.0.0." not in routes
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "h1-eth0" not in links and "r1-eth0" not in links
    assert subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout == before


def test_switches_and_routers_live_in_their_own_namespaces():
    import os
    with running_network({"builtin": "chain", "routers": 2}) as net:
        root = os.readlink("/proc/self/ns/net")
        spaces = {n.name: os.readlink(f"/proc/{n.pid}/ns/net") for n in net.nodes()}
        assert root not in spaces.values()
        assert len(set(spaces.values())) == len(spaces)


def test_every_node_process_lives_in_the_nodes_cgroup():
    """Shells (they move themselves in before exec), what they start, and popen children:
    all in <run cgroup>/<node>, which is what teardown and `clean` end."""
    def cg(pid: int) -> str:
        return [ln.split("::", 1)[1] for ln in open(f"/proc/{pid}/cgroup").read().split("\n")
                if ln.startswith("0::")][0]
    with running_network({"builtin": "chain", "routers": 2}) as net:
        run = f"/{net.tracker.name}"
        for n in net.nodes():
            assert cg(n.pid) == f"{run}/{n.name}", n.name
        bg = int(net["h1"].cmd("sleep 30 & echo $!").split()[-1])
        child = net["r1"].popen(["sleep", "30"])
        try:
            assert cg(bg) == f"{run}/h1" and cg(child.pid) == f"{run}/r1"
        finally:
            child.kill()
            child.wait()


def test_routers_decrement_ttl_and_answer_time_exceeded():
    with running_network({"builtin": "chain", "routers": 3}) as net:
        out = net["h1"].cmd(f"traceroute -n -q1 -w1 -m6 {net.ip('h2')}")
        hops = re.findall(r"^\s*\d+\s+(\S+)", out, re.M)
        first = [net.graph.neighbor_addr("h1", "r1")[0]]
        assert hops[0] == first[0], out
        assert hops[-1] == net.ip("h2") and len(hops) == 4, out
        assert net["r2"].cmd("sysctl -n net.ipv4.icmp_ratelimit").strip() == "0"


def test_leafspine_has_ecmp_routes_with_l4_hash():
    with running_network({"builtin": "leafspine"}) as net:
        r = net["l1"].cmd("ip route show 10.0.2.0/24")
        assert r.count("nexthop") == 2, r
        for fam in ("ipv4", "ipv6"):
            got = net["l1"].cmd(f"sysctl -n net.{fam}.fib_multipath_hash_policy "
                                f"net.{fam}.fib_multipath_hash_fields").split()
            assert got == ["3", str(0x37)], (fam, got)


# One TCP connection per line of stdin, each from the port given on that line.
_CONNECTOR = """
import socket, sys
for line in sys.stdin:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    s.bind(("0.0.0.0", int(line)))
    s.connect((sys.argv[1], 5999))
    s.sendall(b"x" * 200000)
    s.shutdown(socket.SHUT_WR)   # the server closes first: no TIME_WAIT on our port
    s.recv(1)
    s.close()
    print("ok", flush=True)
"""
_SINK = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5999))
s.listen(64)
print("listening", flush=True)
for _ in range(64):
    c, _ = s.accept()
    while c.recv(65536):
        pass
    c.close()
"""


def test_ecmp_path_is_a_function_of_the_5_tuple(tmp_path):
    """A router's ECMP choice depends on the 5-tuple only, as on a hardware switch: new
    connections from one source port all take the same spine, and source ports spread
    over the spines. (With policy 1 a packet's socket txhash decided: the same 5-tuple
    took random spines, one N3 flow's probes named two.)"""
    import subprocess
    (tmp_path / "c.py").write_text(_CONNECTOR)
    (tmp_path / "s.py").write_text(_SINK)
    with running_network({"builtin": "leafspine"}) as net:
        src, dst = net["h1"], net["h3"]        # h1 on l1, h3 on l2: crossing a spine
        sink = dst.popen(["python3", str(tmp_path / "s.py")], stdout=subprocess.PIPE,
                         text=True)
        conn = src.popen(["python3", str(tmp_path / "c.py"), net.ip("h3")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout.readline().strip() == "listening"

            def rx() -> dict[str, int]:
                out = {}
                for sp in ("sp1", "sp2"):
                    lines = net[sp].cmd("cat /proc/net/dev").splitlines()[2:]
                    out[sp] = sum(int(ln.split(":", 1)[1].split()[0]) for ln in lines
                                  if "-eth" in ln)
                return out

            def spine(port: int) -> str:
                a = rx()
                conn.stdin.write(f"{port}\n")
                conn.stdin.flush()
                assert conn.stdout.readline().strip() == "ok"
                b = rx()
                return max(b, key=lambda k: b[k] - a[k])   # the 200 KB went there

            same = [spine(40123) for _ in range(8)]
            assert len(set(same)) == 1, same
            spread = {spine(41000 + 7 * i) for i in range(16)}
            assert spread == {"sp1", "sp2"}, spread
        finally:
            conn.kill()
            sink.kill()


def test_offloads_and_qdiscs_are_configured():
    spec = {"topology": {"builtin": "dumbbell", "pairs": 1, "bw": 100, "bottleneck_bw": 20,
                         "bottleneck_queue": 50},
            "hosts": {"offloads": {"tso": False, "gso": False, "gro": False}}}
    with running_network(spec) as net:
        k = net["h1"].cmd("ethtool -k h1-eth0")
        assert re.search(r"tcp-segmentation-offload: off", k)
        assert re.search(r"generic-segmentation-offload: off", k)
        q = net["s1"].cmd("tc qdisc show dev s1-eth1")
        assert "htb 1: root" in q and "pfifo 10:" in q and "limit 50p" in q, q
        c = net["s1"].cmd("tc class show dev s1-eth1")
        assert "rate 20Mbit" in c, c
        if BR_NETFILTER.exists():   # a switch is L2: bridged IP skips the netfilter hooks
            for k, v in SWITCH_SYSCTLS.items():
                assert net["s1"].cmd(f"sysctl -n {k}").strip() == str(v), k


def test_iperf3_through_bottleneck_gets_configured_rate_within_10pct():
    spec = {"topology": {"builtin": "dumbbell", "pairs": 1, "bw": 1000, "bottleneck_bw": 50,
                         "bottleneck_queue": 100}, "hosts": {"offloads": False}}
    with running_network(spec) as net:
        # CUBIC, its first second left out: the namespace's default CC (bbr on some hosts)
        # spent that second in start-up and probing (44.3 Mb/s over 3 s in one run)
        rep = _iperf(net, "h1", "h2", extra="-C cubic -O 1")
    # HTB shapes frames: the goodput's rate on the wire (1448 B of data per 1514 B frame)
    mss = rep["start"]["tcp_mss_default"]
    mbps = rep["end"]["sum_received"]["bits_per_second"] / 1e6 * FRAME_BYTES / mss
    assert abs(mbps - 50) <= 5, mbps


def test_queue_sampler_sees_standing_queue_near_fifo_limit(tmp_path):
    import sys
    limit = 50
    spec = {"topology": {"builtin": "dumbbell", "pairs": 2, "bw": 1000, "bottleneck_bw": 20,
                         "bottleneck_queue": limit}, "hosts": {"offloads": False}}
    with running_network(spec) as net:
        raw = tmp_path / "q.raw"
        samp = net["s1"].popen([sys.executable, "-m", "testbed.instruments.qsample", "-i",
                                "s1-eth2", "--interval-us", "1000", "-o", str(raw)])
        # UDP at 1.5x the bottleneck keeps the FIFO at its limit whatever the CPU does
        # (two CUBIC flows left it half full for seconds on a loaded machine); three
        # sockets, since one blocks on its send buffer once the FIFO holds its packets
        Iperf(net, "h1", "h3", 3, port=5401, extra="-u -b 10M -P 3").wait()
        samp.terminate()
        samp.wait(timeout=5)
    rows = [l.split(",") for l in raw.read_text().splitlines()]
    qlen = [int(r[3]) for r in rows]
    busy = sorted(qlen)[len(qlen) // 4:]  # skip the start and the tail
    assert max(qlen) <= limit
    assert statistics.median(busy) >= 0.7 * limit, statistics.median(busy)
    assert int(rows[-1][4]) > 0  # the FIFO overflowed: drops counted


def test_link_down_and_up_event():
    with running_network({"builtin": "chain", "routers": 2}) as net:
        dst = net.ip("h2")
        assert "1 received" in net["h1"].cmd(f"ping -c1 -W1 {dst}")
        net.set_link("r1", "r2", up=False)
        assert "0 received" in net["h1"].cmd(f"ping -c1 -W1 {dst}")
        net.set_link("r1", "r2", up=True)
        ok = any("1 received" in net["h1"].cmd(f"ping -c1 -W1 {dst}") for _ in range(3))
        assert ok


def test_emulation_rps_keeps_a_cpu_bound_flow_in_order():
    """`emulation: {rps: true}`: every interface of every node steers received packets by
    flow hash over all CPUs. A CPU-bound TCP flow through a switch (the sender's TSO/GSO
    off, unshaped veth) then arrives in order: its sender sees no reordering. (Without it
    the flow is processed on whichever CPU sent each packet: ~1000 reorderings and ~500
    spurious fast retransmits in 3 s on this machine, docs/tcp-int.md.)"""
    import os
    topo = {"ipv6": False, "hosts": {"h1": None, "h2": None}, "switches": {"s1": None},
            "links": [{"ends": ["h1", "s1"]}, {"ends": ["s1", "h2"]}]}
    mask = (1 << os.cpu_count()) - 1
    with running_network(topo, emulation={"rps": True}) as net:
        for n, ifs in (("h1", ["h1-eth0"]), ("s1", ["s1-eth0", "s1-eth1"]), ("h2", ["h2-eth0"])):
            for i in ifs:
                vals = net[n].cmd(f"cat /sys/class/net/{i}/queues/rx-*/rps_cpus").split()
                assert vals and all(int(v.replace(",", ""), 16) == mask for v in vals), (n, i, vals)
        net.run("h1", "ethtool -K h1-eth0 tso off gso off")
        before = _reorder_events(net["h1"])
        out = _iperf(net, "h1", "h2")
        reordered = _reorder_events(net["h1"]) - before
    assert out["end"]["sum_received"]["bits_per_second"] > 100e6
    # Reordering is what RPS removes. Retransmits alone don't tell: on a busy host the
    # sender's tail-loss probes fire before delayed ACKs arrive (100+ in 3 s, each one
    # DSACKed as spurious) with or without RPS; reorderings and fast retransmits do.
    assert reordered == 0, (reordered, out["end"]["sum_sent"])


def _reorder_events(node) -> int:
    """Reorderings the sender's TCP detected (by SACK, timestamps or Reno dupacks) and the
    fast retransmits they triggered, from the counters of the sender's namespace. Without
    RPS this flow has ~1000 and ~500 of them in 3 s here."""
    names = ("TcpExtTCPSACKReorder", "TcpExtTCPTSReorder", "TcpExtTCPRenoReorder",
             "TcpExtTCPFastRetrans")
    total = 0
    for line in node.cmd("nstat -az").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in names:
            total += int(parts[1])
    return total


_READ_ROOTS = """
import json, socket, sys
sys.path.insert(0, {repo!r})
from testbed.instruments.qsample import QdiscReader
names = {names!r}
idx = {{socket.if_nametoindex(n): n for n in names}}
r = QdiscReader()
few = r.read(set(list(idx)[:QdiscReader.GET_AT_MOST]))   # one RTM_GETQDISC each
every = r.read(set(idx))                                  # one dump
print(json.dumps({{"few": {{idx[i]: v for i, v in few.items()}},
                   "every": {{idx[i]: v for i, v in every.items()}}}}))
"""


def test_qsample_reads_root_qdiscs_by_get_and_by_dump(tmp_path):
    """The queue sampler reads a few ports one by one and many by one dump: both give each
    port's root qdisc (HTB) counters, the same as `tc -s qdisc`."""
    import json
    import sys
    from pathlib import Path
    spec = {"builtin": "incast", "senders": 6, "bw": 100, "bottleneck_bw": 20, "ipv6": False}
    with running_network(spec) as net:
        ping_all(net)     # some bytes through every port
        names = [i.name for i in net.graph.nodes["s1"].intfs]
        script = tmp_path / "read_roots.py"
        script.write_text(_READ_ROOTS.format(repo=str(Path(__file__).resolve().parents[1]),
                                             names=names))
        before = net["s1"].cmd("tc -s qdisc show")
        got = json.loads(net["s1"].cmd(f"{sys.executable} {script}").strip().splitlines()[-1])
        after = net["s1"].cmd("tc -s qdisc show")
    assert len(got["few"]) == 4 and len(got["every"]) == len(names) == 7, got

    def sent_by_tc(tc: str, name: str) -> int:
        root = re.search(rf"qdisc htb 1: dev {name} root.*?\n\s*Sent (\d+) bytes", tc, re.S)
        assert root, (name, tc[:300])
        return int(root.group(1))
    # counters only grow (a stray ARP may pass between reads): tc before ≤ one by one ≤
    # the dump ≤ tc after, and the queues are empty
    for name, (backlog, qlen, drops, sent) in got["every"].items():
        few = got["few"].get(name, [0, 0, 0, sent])
        assert backlog == qlen == drops == 0 and few[:3] == [0, 0, 0], (name, few)
        assert 0 < sent_by_tc(before, name) <= few[3] <= sent <= sent_by_tc(after, name), name
