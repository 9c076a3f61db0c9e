"""`validate` is the whole check: each refusal `run` could reach before traffic starts is
made by the loader (config.checks), with the line of the offending key. Files written
here; the CLI's behaviour (exit 2, one line, nothing started) is shown in
test_hostile_input.py and, for `run`, at the end of this file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from testbed.preflight import validate_file
from testbed.errors import ConfigError

HEAD = "name: t\nduration: 2\n"
INC = HEAD + "topology: {builtin: incast, senders: 2}\n"   # h0 (receiver), h1, h2, s1


def _inline(hosts: str, links: str, extra: str = "", more: str = "") -> str:
    """An experiment with an inline topology; `hosts` and `links` are YAML lines."""
    return (HEAD + "topology:\n  ipv6: false\n" + more + "  hosts:\n" + hosts +
            "  switches: [s1, s2, s3]\n  links:\n" + links + extra)


# name → (experiment text, the line the error must name, words the message must hold)
CASES = {
    # -- the topology as a graph
    "l2_loop": (_inline("    h1: {}\n", "    - [h1, s1]\n    - [s1, s2]\n    - [s2, s3]\n"
                        "    - [s3, s1]\n"), 12, ["loop", "routers"]),
    "same_address": (_inline("    h1: {ip: 10.1.0.1/24}\n    h2: {ip: 10.1.0.1/24}\n",
                             "    - [h1, s1]\n    - [h2, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
                     7, ["10.1.0.1", "both"]),
    "same_address_two_segments": (
        HEAD + "topology:\n  ipv6: false\n  hosts:\n    h1: {ip: 10.1.0.1/24}\n"
        "    h2: {ip: 10.1.0.1/16}\n  routers: [r1]\n  links: [[h1, r1], [h2, r1]]\n",
        7, ["overlaps"]),
    "overlapping_subnets": (
        HEAD + "topology:\n  ipv6: false\n  hosts:\n    h1: {ip: 10.1.0.1/24}\n"
        "    h2: {ip: 10.1.0.9/16}\n  routers: [r1]\n  links: [[h1, r1], [h2, r1]]\n",
        7, ["overlaps", "own subnet"]),
    "subnets_differ_on_segment": (
        _inline("    h1: {ip: 10.1.0.1/24}\n    h2: {ip: 10.2.0.1/24}\n",
                "    - [h1, s1]\n    - [h2, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
        7, ["share a segment but not a subnet"]),
    "network_address": (_inline("    h1: {ip: 10.1.0.0/24}\n    h2: {}\n",
                                "    - [h1, s1]\n    - [h2, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
                        6, ["network address", "10.1.0.1/24"]),
    "broadcast_address": (_inline("    h1: {}\n    h2: {ip: 10.1.0.255/24}\n",
                                  "    - [h1, s1]\n    - [h2, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
                          7, ["broadcast"]),
    "loopback_address": (_inline("    h1: {ip: 127.0.0.2/8}\n",
                                 "    - [h1, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
                         6, ["not a unicast"]),
    "ip_on_two_links": (HEAD + "topology:\n  ipv6: false\n  hosts:\n    h1: {ip: 10.1.0.1/24}\n"
                        "    h2: {}\n  switches: [s1, s2]\n  links: [[h1, s1], [h1, s2], [h2, s1],"
                        " [h2, s2]]\n", 6, ["2 links"]),
    "ip6_without_ipv6": (_inline("    h1: {ip6: 'fd01::1/64'}\n",
                                 "    - [h1, s1]\n    - [s1, s2]\n    - [s2, s3]\n"),
                         6, ["ipv6: false"]),
    "interface_name_too_long": (
        HEAD + "topology:\n  hosts: [" + ", ".join(f"h{i}" for i in range(11)) + "]\n"
        "  switches: [swabcdefgh]\n  links:\n" +
        "".join(f"    - [h{i}, swabcdefgh]\n" for i in range(11)), 17, ["15 characters"]),
    # -- names in the workload, instruments and int: unknown, or of the wrong kind
    "flow_from_switch": (INC + "workload:\n  flows:\n    - {src: s1, dst: h0}\n", 6,
                         ["s1 is a switch", "host"]),
    "incast_unknown_sender": (INC + "workload:\n  incast:\n    - {senders: [h1, h7], dst: h0,"
                              " start: 0, bytes: 10KB}\n", 6, ["unknown host 'h7'"]),
    "command_unknown_node": (INC + "workload:\n  commands:\n    - {host: r1, cmd: 'true'}\n", 6,
                             ["unknown node 'r1'"]),
    "event_node_is_switch": (INC + "workload:\n  events:\n    - {at: 1, action: route, "
                             "node: s1, dst: h1, via: [h2]}\n", 6, ["s1 is a switch"]),
    "queue_on_host": (INC + "instruments:\n  queue:\n    nodes: [h1]\n", 6,
                      ["h1 is a host", "switch or router"]),
    "queue_unknown_node": (INC + "instruments:\n  queue: {nodes: [s9]}\n", 5,
                           ["unknown node 's9'", "s1"]),
    "queue_unknown_port": (INC + "instruments:\n  queue:\n    ports: [s1-eth9]\n", 6,
                           ["s1-eth9", "port"]),
    "noobprobe_on_switch": (INC + "instruments:\n  noobprobe:\n    hosts: [s1]\n", 6,
                            ["s1 is a switch"]),
    "noobprobe_bad_dest": (INC + "instruments:\n  noobprobe:\n    hosts: [h1]\n"
                           "    dests: [h9]\n", 7, ["unknown host 'h9'", "IP address"]),
    "noobflow_host_port": (INC + "instruments:\n  noobflow:\n    ports: [h1-eth0]\n", 6,
                           ["h1-eth0", "port"]),
    "int_switches_names_host": (INC + "int:\n  enabled: true\n  switches: [h1]\n", 6,
                                ["h1 is a host"]),
    "int_hosts_names_switch": (INC + "int:\n  enabled: true\n  hosts: [h1, s1]\n", 6,
                               ["s1 is a switch"]),
    "int_trace_without_int": (INC + "instruments:\n  int_trace: {}\n", 5, ["TCP-INT"]),
    # -- reachability, timing, ports
    "unreachable": (HEAD + "topology:\n  hosts: [h1, h2, h3, h4]\n  switches: [s1, s2]\n"
                    "  links: [[h1, s1], [h2, s1], [h3, s2], [h4, s2]]\nworkload:\n  flows:\n"
                    "    - {src: h1, dst: h2}\n    - {src: h1, dst: h3}\n", 10,
                    ["h1 cannot reach h3"]),
    "route_via_non_neighbour": (
        HEAD + "topology: {builtin: chain, routers: 3}\nworkload:\n  events:\n"
        "    - {at: 1, action: route, node: r1, dst: h2,\n       via: [r3]}\n", 7,
        ["r3 is not a neighbour of r1"]),
    "route_via_bad_address": (
        HEAD + "topology: {builtin: chain, routers: 3}\nworkload:\n  events:\n"
        "    - {at: 1, action: route, node: r1, dst: h2, via: [10.0.0.0/8]}\n", 6,
        ["neither a node nor an address"]),
    "event_after_end": (INC + "workload:\n  events:\n    - {at: 5, action: link_down, "
                        "link: [h1, s1]}\n", 6, ["not before the experiment's end"]),
    "command_after_end": (INC + "workload:\n  commands:\n    - {host: h1, at: 3, cmd: 'true'}\n",
                          6, ["not before the experiment's end"]),
    "incast_after_end": (INC + "workload:\n  incast:\n    - {senders: h1..h2, dst: h0, start: 2,"
                         " bytes: 1KB}\n", 6, ["past the experiment's duration"]),
    "ports_collide": (HEAD + "topology: {builtin: incast, senders: 2}\nworkload:\n  flows:\n" +
                      "    - {src: h1, dst: h0, protocol: udp, rate: 1}\n" * 800 +
                      "  incast:\n    - {senders: h1..h2, dst: h0, start: 1, bytes: 1KB}\n",
                      805, ["6000"]),
    # -- congestion control
    "unknown_cc": (INC + "workload:\n  flows:\n    - {src: h1, dst: h0,\n       cc: vegasx}\n", 7,
                   ["unknown congestion control 'vegasx'"]),
    "unknown_cc_swept": (INC + "sweep:\n  cc: [cubic, bbrr]\n", 5, ["bbrr", "bbr"]),
    "powertcp_without_int": (INC + "cc: powertcp\nworkload:\n  flows:\n    - {src: h1, dst: h0}\n",
                             4, ["TCP-INT", "int: {enabled: true}"]),
    "ebpf_param_out_of_range": (INC + "congestion_control:\n  powertcp:\n    gamma: 1.5\n", 6,
                                ["less than or equal to 1"]),
    "ebpf_param_unknown": (INC + "congestion_control:\n  powertcp: {gama: 0.5}\n", 5,
                           ["gama", "gamma"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validate_refuses_with_the_line(tmp_path, name):
    text, line, words = CASES[name]
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        validate_file(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)


def test_topology_file_errors_name_that_file(tmp_path):
    t = tmp_path / "topo.yaml"
    t.write_text("hosts:\n  h1: {ip: 10.1.0.1/24}\n  h2: {ip: 10.1.0.1/24}\nswitches: [s1]\n"
                 "links: [[h1, s1], [h2, s1]]\n")
    e = tmp_path / "exp.yaml"
    e.write_text(HEAD + "topology: topo.yaml\n")
    for f in (t, e):
        with pytest.raises(ConfigError) as ei:
            validate_file(f)
        assert str(ei.value).startswith(f"{t}:3:"), str(ei.value)


def test_addresses_stay_as_before_and_avoid_explicit_subnets(tmp_path):
    """Automatic subnets skip any that overlaps an explicit one (they took 10.0.0.0/24
    beside an explicit 10.0.0.0/16 before), and go on past 256 segments."""
    from testbed.config.load import load_topology
    from testbed.topology.graph import Graph
    t = tmp_path / "topo.yaml"
    t.write_text("hosts:\n  h1: {ip: 10.0.5.1/16}\n  h2: {}\nrouters: [r1]\n"
                 "links: [[h1, r1], [h2, r1]]\n")
    g = Graph(load_topology(t))
    assert str(g.nodes["h1"].intfs[0].ip4) == "10.0.5.1/16"
    assert str(g.nodes["h2"].intfs[0].ip4) == "10.1.0.1/24"
    assert str(g.nodes["r1"].intfs[0].ip4) == "10.0.255.254/16"
    from testbed.topology import builtins
    big = Graph(builtins.build("leafspine", {"leaves": 16, "spines": 16, "hosts_per_leaf": 1}))
    nets = [s.net4 for s in big.segments]
    assert len(nets) == 272 and len(set(nets)) == 272 and str(nets[-1]).startswith("10.1.")


def test_validate_is_fast_and_needs_no_root(tmp_path):
    """Every shipped file, as an unprivileged user would check it (nobody), in one call."""
    import glob
    import os
    import time
    repo = Path(__file__).resolve().parents[1]
    files = sorted(glob.glob(str(repo / "experiments/*.yaml")) +
                   glob.glob(str(repo / "topologies/*.yaml")))
    t = time.monotonic()
    for f in files:
        validate_file(f)
    per_file = (time.monotonic() - t) / len(files)
    assert per_file < 1.0, per_file  # the budget is "well under a second"; typical: ~10 ms
    if os.geteuid() == 0:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "testbed", "validate", *files],
                           capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.needs_root
@pytest.mark.parametrize("name", ["same_address", "l2_loop", "queue_on_host",
                                  "powertcp_without_int", "unreachable"])
def test_run_refuses_what_validate_refuses(tmp_path, name):
    """The cases the issue saw pass `validate` and fail in (or silently pass) `run`: both
    refuse now, with the same line, and run starts nothing."""
    text, line, words = CASES[name]
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    out = []
    for cmd in ("validate", "run"):
        r = run_cli(cmd, str(p), timeout=120, cwd=tmp_path)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"{p}:{line}:" in lines[0], lines[0]
        out.append(lines[0])
    assert out[0] == out[1]
    assert not (tmp_path / "results").exists()
