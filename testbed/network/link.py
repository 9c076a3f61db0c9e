"""VethLink: a Mininet link whose veth pair is made by the Network, all links at once.

Mininet makes each veth with its own shell round-trip; the Network instead makes every
pair of the topology in one `ip -batch` (`Network._make_links`): each end created
straight in its node's namespace (`netns PID` on both ends), so nothing ever appears in
the root namespace. This class only gives Mininet its interface objects.

Both ends get their own interface index from the run (unique across the topology). The
kernel treats a carrier change as urgent (handled at once) for a device whose ifindex
differs from its link's (a veth's peer); when they are equal it waits for the next
linkwatch round, up to a second. ifindexes are per namespace, so both ends of a veth
between two fresh namespaces are often equal (h1-eth0 and s1-eth0: both 2), and the
switch port stayed down, its bridge port not forwarding, for ~1 s after the run said the
network was up: a run's first ARP was lost to it. The network waits for carrier anyway
(Network._wait_ready).
"""
from __future__ import annotations

from mininet.link import Link


class VethLink(Link):
    def __init__(self, node1, node2, index1: int, index2: int, **params):
        self.indexes = (index1, index2)
        super().__init__(node1, node2, **params)

    def batch_line(self) -> str:
        """The `ip -batch` line (run in the root namespace) that makes this pair."""
        (i1, i2), a, b = self.indexes, self.intf1, self.intf2
        return (f"link add name {a.name} index {i1} netns {a.node.pid} type veth "
                f"peer name {b.name} index {i2} netns {b.node.pid}")

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None,
                     node2=None, deleteIntfs=True):
        pass  # made with every other pair in one batch (see the module's docstring)
