"""The interface every switch backend implements.

A backend owns the forwarding nodes (switches and routers) given to it: which Mininet
class they are, how they are configured once links exist, and how they stop. The
Network calls, in order:

    available()                       before anything exists (doctor, validation)
    backend = Cls(net)
    backend.node_params(gnode)        extra Mininet params for the node's constructor
    backend.configure(gnode, mnode)   after all links exist: shell lines for the node
    backend.start()                   after every node is configured (start daemons)
    backend.stop()                    on teardown (also via the run tracker)

`net.graph` has the topology (links, addresses, routes); `net.tracker` the run tracker.
Egress queues: `queue_ports(gnode)` lists the interfaces whose qdisc holds the queue
(what the queue sampler and the TCP-INT switch program attach to).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ...topology.graph import Intf, Node
    from ..net import Network


class SwitchBackend(ABC):
    name: ClassVar[str]

    def __init__(self, net: "Network"):
        self.net = net

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def node_params(self, gnode: "Node") -> dict:
        return {}

    @abstractmethod
    def configure(self, gnode: "Node", mnode) -> list[str]:
        """Shell lines that make the node forward (run in its namespace)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def queue_ports(self, gnode: "Node") -> list["Intf"]:
        """Interfaces of this node with a shaped egress queue."""
        return [i for i in gnode.intfs if i.link.params.bw is not None]
