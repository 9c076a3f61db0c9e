"""The pcap instrument on a real run: tcpdump in the nodes' namespaces, snap length, a
ring of size-capped files; the captures read back with scapy hold the run's packets."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli
from scapy.all import IP, TCP, PcapReader

pytestmark = pytest.mark.needs_root

EXP = """\
name: pcaptest
topology: {builtin: dumbbell, pairs: 1, bw: 1000, bottleneck_bw: 50, bottleneck_queue: 50, ipv6: false}
hosts: {offloads: off}
duration: 1.5
workload:
  flows:
    - {name: a, src: h1, dst: h2, start: 0, duration: 1.5}
instruments:
  queue: {}
  iperf: {}
  pcap: {nodes: [h1, s1], interfaces: [h1-eth0, s1-eth1], snaplen: 512, file_mb: 1, files: 2}
"""


def _tb(*args):
    return run_cli(*args, timeout=180)


def test_pcap_captures_the_runs_packets(write, tmp_path):
    out = tmp_path / "res"
    r = _tb("run", str(write("pcap.yaml", EXP)), "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    p = out / "default"
    meta = json.loads((p / "meta.json").read_text())
    files = sorted(f.name for f in (p / "pcap").iterdir())
    # ~9 MB crossed the bottleneck, 512 B kept of each packet: more than the 2 × 1 MB ring
    # holds, so both slots exist, capped, and no third file
    assert files == ["h1-eth0.pcap0", "h1-eth0.pcap1", "s1-eth1.pcap0", "s1-eth1.pcap1"], files
    for f in (p / "pcap").iterdir():
        assert f.stat().st_size <= 1_000_000 + 2000, f
        assert f"pcap/{f.name}" in meta["outputs"]
    h1, h2 = meta["addresses"]["h1"], meta["addresses"]["h2"]
    for iface in ("h1-eth0", "s1-eth1"):
        data = acks = 0
        for f in sorted((p / "pcap").glob(f"{iface}.pcap*")):
            with PcapReader(str(f)) as rd:
                for pkt in rd:
                    assert len(bytes(pkt)) <= 512          # the snap length held
                    t = float(pkt.time)                    # wall clock, during the point
                    assert meta["started"] - 1 < t < meta["ended"] + 1
                    if IP not in pkt or TCP not in pkt:
                        continue
                    ip, tcp = pkt[IP], pkt[TCP]
                    if (ip.src, ip.dst, tcp.dport) == (h1, h2, 5201) and pkt.wirelen >= 1500:
                        data += 1                          # full-size iperf3 data segments
                        assert len(bytes(pkt)) == 512
                    elif (ip.src, ip.dst, tcp.sport) == (h2, h1, 5201):
                        acks += 1
        # 2 MB of 512-byte records ≈ 3900 packets; most are data, the rest ACKs
        assert data > 1500 and acks > 300, (iface, data, acks)
    assert "pcap/h1-eth0.pcap0" in (out / "report.html").read_text()


def test_pcap_unknown_node_is_refused_before_anything(write):
    r = _tb("validate", str(write("bad.yaml", EXP.replace("nodes: [h1, s1]",
                                                          "nodes: [h1, s7]"))))
    assert r.returncode == 2 and "instruments.pcap.nodes[1]: unknown node 's7'" in r.stderr
    r = _tb("validate", str(write("bad2.yaml", EXP.replace("snaplen: 512", "snaplen: 10"))))
    assert r.returncode == 2 and "snaplen" in r.stderr, r.stderr
    r = _tb("validate", str(write("bad3.yaml", EXP.replace("s1-eth1]", "s1-eth5]"))))
    assert r.returncode == 2 and "instruments.pcap.interfaces[1]: no interface 's1-eth5'" \
        in r.stderr, r.stderr
