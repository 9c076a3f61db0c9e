"""The network as a graph with everything needed to build it: pure, no kernel calls.

Classes:
- Intf: one end of a link on a node (name like h1-eth0, its addresses).
- Link: two Intfs and the link's parameters (rate, queue, …).
- Node: a host, an L2 switch or an L3 router, with its interfaces.
- Segment: one L2 broadcast domain (hosts and router ports joined by links and switches),
  with an IPv4 /24 (wider where more than 254 members share it) and an IPv6 /64.
- Route: a destination prefix on a node, with one next hop or several (ECMP).
- Graph: built from a TopologySpec: names, segments, addresses, shortest-path routes.
"""
from __future__ import annotations

import ipaddress
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field

from ..config.models import HostSpec, LinkParams, TopologySpec

IPv4Net, IPv6Net = ipaddress.IPv4Network, ipaddress.IPv6Network


class TopologyError(ValueError):
    pass


@dataclass(eq=False)
class Intf:
    node: str
    name: str
    link: "Link" = field(repr=False, default=None)
    ip4: ipaddress.IPv4Interface | None = None
    ip6: ipaddress.IPv6Interface | None = None
    segment: "Segment | None" = field(repr=False, default=None)

    @property
    def peer(self) -> "Intf":
        return self.link.b if self.link.a is self else self.link.a


@dataclass(eq=False)
class Link:
    index: int
    a: Intf
    b: Intf
    params: LinkParams

    @property
    def ends(self) -> tuple[str, str]:
        return self.a.node, self.b.node


@dataclass(eq=False)
class Node:
    name: str
    kind: str                  # host | switch | router
    spec: object
    intfs: list[Intf] = field(default_factory=list)

    @property
    def is_l3(self) -> bool:
        return self.kind in ("host", "router")


@dataclass(eq=False)
class Segment:
    index: int
    net4: IPv4Net
    net6: IPv6Net | None
    members: list[Intf]        # L3 interfaces (hosts and routers)


@dataclass
class Route:
    dst: IPv4Net | IPv6Net
    via: list[str]             # next-hop addresses; several = ECMP
    dev: list[str]             # the interface for each next hop


def natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


class Graph:
    def __init__(self, spec: TopologySpec):
        self.spec = spec
        self.nodes: dict[str, Node] = {}
        for kind, table in (("host", spec.hosts), ("switch", spec.switches),
                            ("router", spec.routers)):
            for name in sorted(table, key=natural_key):
                self.nodes[name] = Node(name, kind, table[name])
        self.links: list[Link] = []
        for i, ls in enumerate(spec.links):
            a, b = (self.nodes[n] for n in ls.ends)
            ia = Intf(a.name, f"{a.name}-eth{len(a.intfs)}")
            a.intfs.append(ia)
            ib = Intf(b.name, f"{b.name}-eth{len(b.intfs)}")
            b.intfs.append(ib)
            link = Link(i, ia, ib, spec.link_params(ls))
            ia.link = ib.link = link
            self.links.append(link)
        self._check_l2_loops()
        self.segments = self._segments()
        self._address()
        self.routes: dict[str, list[Route]] = self._routes()

    # -- structure -----------------------------------------------------------------
    @property
    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "host"]

    @property
    def switches(self) -> list[Node]:
        """Switches and routers: every node that forwards."""
        return [n for n in self.nodes.values() if n.kind != "host"]

    def link_between(self, a: str, b: str) -> Link:
        for l in self.links:
            if {a, b} == set(l.ends):
                return l
        raise KeyError(f"no link {a}-{b}")

    def host_spec(self, name: str) -> HostSpec:
        """A host's settings with the topology's host defaults filled in."""
        merged = self.spec.defaults.host.model_dump(exclude_none=True)
        merged.update(self.nodes[name].spec.model_dump(exclude_none=True))
        return HostSpec.model_validate(merged)

    def _check_l2_loops(self) -> None:
        # Bridges run without STP: a loop of switches would storm. Refuse it.
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x
        for l in self.links:
            a, b = l.ends
            if self.nodes[a].kind == "switch" and self.nodes[b].kind == "switch":
                ra, rb = find(a), find(b)
                if ra == rb:
                    raise TopologyError(f"switches form a loop through {a}-{b}; L2 switches "
                                        f"run without STP: use routers for redundant paths")
                parent[ra] = rb

    def _segments(self) -> list[Segment]:
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        def union(x: int, y: int) -> None:
            parent[find(x)] = find(y)
        intfs = [i for n in self.nodes.values() for i in n.intfs]
        for l in self.links:
            union(id(l.a), id(l.b))
        for n in self.nodes.values():
            if n.kind == "switch":
                for i in n.intfs[1:]:
                    union(id(n.intfs[0]), id(i))
        groups: dict[int, list[Intf]] = defaultdict(list)
        for i in intfs:
            if self.nodes[i.node].is_l3:
                groups[find(id(i))].append(i)
        segs = []
        for members in groups.values():
            members.sort(key=lambda i: (self.nodes[i.node].kind != "host", natural_key(i.name)))
            segs.append(members)
        segs.sort(key=lambda m: natural_key(m[0].name))
        out = []
        for k, members in enumerate(segs):
            s = Segment(k, None, None, members)  # type: ignore[arg-type]
            for i in members:
                i.segment = s
            out.append(s)
        return out

    def _address(self) -> None:
        used4: set[IPv4Net] = set()
        explicit: dict[Segment, IPv4Net] = {}
        for s in self.segments:
            nets = {self.host_spec(i.node).ip.network for i in s.members
                    if self.nodes[i.node].kind == "host" and self.host_spec(i.node).ip}
            if len(nets) > 1:
                raise TopologyError(f"hosts of one segment have addresses in different "
                                    f"subnets: {', '.join(map(str, nets))}")
            if nets:
                explicit[s] = nets.pop()
                used4.add(explicit[s])
        k = 0
        wide = [n for n in used4 if n.prefixlen != 24]
        for s in self.segments:
            if s in explicit:
                s.net4 = explicit[s]
            else:
                # a /24 per segment; wider (aligned) where more than 254 members share one
                plen = 24
                while 2 ** (32 - plen) - 2 < len(s.members) and plen > 16:
                    plen -= 1
                while True:
                    cand = IPv4Net(f"10.{k // 256}.{k % 256}.0/24").supernet(new_prefix=plen)
                    if cand not in used4 and not any(cand.overlaps(w) for w in wide) and \
                            (plen == 24 or not any(cand.overlaps(u) for u in used4)):
                        break
                    k += 1
                s.net4 = cand
                used4.add(s.net4)
                if plen != 24:
                    wide.append(s.net4)
            s.net6 = IPv6Net(f"fd00:0:0:{s.index:x}::/64") if self.spec.ipv6 else None
            taken = {self.host_spec(i.node).ip.ip for i in s.members
                     if self.nodes[i.node].kind == "host" and self.host_spec(i.node).ip}
            hosts_iter = (a for a in s.net4.hosts() if a not in taken)
            routers_iter = (a for a in reversed(list(s.net4.hosts())) if a not in taken)
            n6 = 1
            for i in s.members:
                spec = self.host_spec(i.node) if self.nodes[i.node].kind == "host" else None
                if spec and spec.ip and len(self.nodes[i.node].intfs) == 1:
                    i.ip4 = spec.ip
                else:
                    try:
                        addr = next(hosts_iter) if spec else next(routers_iter)
                    except StopIteration:
                        raise TopologyError(f"segment {s.net4} has too many members") from None
                    taken.add(addr)
                    i.ip4 = ipaddress.IPv4Interface(f"{addr}/{s.net4.prefixlen}")
                if s.net6 is not None:
                    if spec and spec.ip6 and len(self.nodes[i.node].intfs) == 1:
                        i.ip6 = spec.ip6
                    else:
                        i.ip6 = ipaddress.IPv6Interface(f"{s.net6[n6]}/64")
                        n6 += 1

    def _routes(self) -> dict[str, list[Route]]:
        """Shortest paths in segment hops; every equal-cost next hop is kept (ECMP).

        A host with one interface and one router on its segment gets one default route
        (v4, v6) through it: every path leaves that way, and a route per segment made the
        routing tables, and their computation, grow with hosts × segments."""
        l3 = [n for n in self.nodes.values() if n.is_l3]
        # node → (its interface, a router's interface on the same segment)
        adj: dict[str, list[tuple[Intf, Intf]]] = defaultdict(list)
        for s in self.segments:
            rts = [i for i in s.members if self.nodes[i.node].kind == "router"]
            if rts:
                for a in s.members:
                    adj[a.node] += [(a, b) for b in rts if b.node != a.node]
        routes: dict[str, list[Route]] = {n.name: [] for n in l3}
        per_segment = []
        for n in l3:
            if not adj[n.name]:
                continue  # nothing beyond its own segments
            gws = {t.node for _, t in adj[n.name]}
            if n.kind == "host" and len(n.intfs) == 1 and len(gws) == 1:
                (mine, t), = adj[n.name][:1]
                routes[n.name].append(Route(IPv4Net("0.0.0.0/0"), [str(t.ip4.ip)], [mine.name]))
                if t.ip6 is not None and mine.ip6 is not None:
                    routes[n.name].append(Route(IPv6Net("::/0"), [str(t.ip6.ip)], [mine.name]))
            else:
                per_segment.append(n)
        for s in self.segments:
            # distance of every router to s (routers pass packets on, hosts do not)
            dist = {i.node: 0 for i in s.members}
            q = deque(i.node for i in s.members if self.nodes[i.node].kind == "router")
            while q:
                r = q.popleft()
                for _, theirs in adj[r]:
                    if theirs.node not in dist:
                        dist[theirs.node] = dist[r] + 1
                        q.append(theirs.node)
            for n in per_segment:
                if dist.get(n.name) == 0:
                    continue
                near = [dist[t.node] for _, t in adj[n.name] if t.node in dist]
                if not near:
                    continue
                d = min(near) + 1
                hops = sorted({(m.name, t.ip4, t.ip6) for m, t in adj[n.name]
                               if dist.get(t.node) == d - 1},
                              key=lambda h: natural_key(h[0]) + (str(h[1]),))
                routes[n.name].append(Route(s.net4, [str(h[1].ip) for h in hops],
                                            [h[0] for h in hops]))
                if s.net6 is not None:
                    routes[n.name].append(Route(s.net6, [str(h[2].ip) for h in hops],
                                                [h[0] for h in hops]))
        return routes

    # -- addresses -----------------------------------------------------------------
    def ip(self, node: str, v6: bool = False) -> str:
        """A node's first address (what you would ping)."""
        for i in self.nodes[node].intfs:
            a = i.ip6 if v6 else i.ip4
            if a is not None:
                return str(a.ip)
        raise KeyError(f"{node} has no {'IPv6' if v6 else 'IPv4'} address")

    def neighbor_addr(self, node: str, neighbor: str, v6: bool = False) -> tuple[str, str]:
        """(address of `neighbor` on a segment shared with `node`, `node`'s interface there)."""
        for mine in self.nodes[node].intfs:
            if mine.segment is None:
                continue
            for other in mine.segment.members:
                if other.node == neighbor:
                    a = other.ip6 if v6 else other.ip4
                    return str(a.ip), mine.name
        raise KeyError(f"{neighbor} is not a neighbour of {node}")

    def resolve(self, name_or_addr: str) -> str:
        return self.ip(name_or_addr) if name_or_addr in self.nodes else name_or_addr
