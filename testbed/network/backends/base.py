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
Egress queues: `queue_ports(gnode)` lists the interfaces with a shaped egress queue, and
`queue_source(gnode)` says where the queue sampler reads them (a qdisc, or BMv2's own).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ...topology.graph import Intf, Node
    from ..net import Network


@dataclass
class QueueSource:
    """Where a node's egress queues are read. `qdisc`: each port's root qdisc, by netlink
    in the node's namespace. `bmv2`: the P4 program's registers over BMv2's Thrift API
    (queues counted in packets of `pkt_bytes`), with `python`, `env` and `bm_path` to run
    its Thrift client. `min_interval`: the shortest default sampling period that does not
    disturb the switch (s)."""
    kind: str = "qdisc"
    thrift_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)    # interface → BMv2 port
    pkt_bytes: int = 0
    python: str = ""
    env: dict[str, str] | None = None
    bm_path: str = ""
    min_interval: float = 0.0


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

    def queue_source(self, gnode: "Node") -> QueueSource:
        return QueueSource()

    def ecn_counters(self) -> list[dict]:
        """Per port marking CE (links with `ecn_mark:`): node, iface, rule, counters."""
        return []
