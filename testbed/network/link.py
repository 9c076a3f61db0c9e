"""VethLink: a Mininet link whose two ends never share an interface index.

The kernel treats a carrier change as urgent (handled at once) for a device whose
ifindex differs from its link's (a veth's peer); when they are equal it waits for the
next linkwatch round, up to a second. ifindexes are per namespace, so both ends of a
veth between two fresh namespaces are often equal (h1-eth0 and s1-eth0: both 2), and
the switch port stayed down, its bridge port not forwarding, for ~1 s after the run
said the network was up: a run's first ARP was lost to it. Each end gets its own index
from the run (unique across the topology), and the network waits for carrier anyway
(Network._ready_wait).
"""
from __future__ import annotations

from mininet.link import Link

from ..errors import RunError


class VethLink(Link):
    def __init__(self, node1, node2, index1: int, index2: int, **params):
        self.indexes = (index1, index2)
        super().__init__(node1, node2, **params)

    def makeIntfPair(self, intfname1, intfname2, addr1=None, addr2=None, node1=None,
                     node2=None, deleteIntfs=True):
        # made inside node1's namespace, the peer moved straight into node2's
        i1, i2 = self.indexes
        out = node1.cmd(f"ip link add name {intfname1} index {i1} type veth "
                        f"peer name {intfname2} index {i2} netns {node2.pid}")
        if out.strip():
            raise RunError(f"creating veth {intfname1}/{intfname2}: {out.strip()}")
