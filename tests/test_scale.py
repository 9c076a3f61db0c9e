"""Built-ins at their largest (256 hosts): they come up, carry traffic at once, and leave
nothing behind. (How long they take: bench/bringup.py; where the time goes: docs/scale.md.)"""
from __future__ import annotations

import subprocess

import pytest

from testbed.config.models import HostDefaults
from testbed.network.net import Network
from testbed.network.tracker import RunTracker, cgroup_pids
from testbed.topology import builtins
from testbed.topology.graph import Graph

pytestmark = pytest.mark.needs_root


def _ours_in_root() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "-eth" in l and ("h255" in l or "h256" in l)]


@pytest.mark.parametrize("name,params,far", [
    ("incast", {"senders": 255}, "h255"),                             # one /23 segment
    ("leafspine", {"leaves": 8, "spines": 2, "hosts_per_leaf": 32}, "h256"),   # routed
], ids=["incast-256", "leafspine-256"])
def test_256_hosts_come_up_ready_and_go(name, params, far):
    g = Graph(builtins.build(name, params))
    assert len(g.hosts) == 256
    with RunTracker() as tr:
        net = Network(g, tr, HostDefaults()).start()
        # the first packet after bring-up gets through: carrier and forwarding were ready
        # (no retry: one echo, 1 s to answer)
        out = net[far].cmd(f"ping -c1 -W1 {net.ip('h1')}")
        assert "1 received" in out, out
        assert net[far].cmd("ip -o -4 addr show scope global").count("inet ") == 1
        assert _ours_in_root() == []          # nothing of the topology in the root namespace
        cg = tr.cgroup
        assert len(cgroup_pids(cg)) >= len(g.nodes)  # every node's shell in its cgroup
    assert not cg.exists()                    # teardown removed every node's cgroup


def test_more_than_256_hosts_is_refused_naming_the_fix():
    with pytest.raises(Exception, match="at most 256"):
        builtins.build("leafspine", {"leaves": 16, "hosts_per_leaf": 32})
    with pytest.raises(Exception, match="less than or equal to 255"):
        builtins.build("incast", {"senders": 256})
