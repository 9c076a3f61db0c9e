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
    """A topology that cannot be built; `loc` is the key path in the topology it is about
    (e.g. ("links", 3) or ("hosts", "h1", "ip")), so the loader can name its line."""

    def __init__(self, message: str, loc: tuple = ()):
        super().__init__(message)
        self.message, self.loc = message, tuple(loc)


IFNAMSIZ = 15   # longest interface name the kernel takes


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
            for n in (a, b):
                if len(f"{n.name}-eth{len(n.intfs)}") > IFNAMSIZ:
                    raise TopologyError(f"{n.name}'s interface {n.name}-eth{len(n.intfs)} "
                                        f"is longer than the kernel's {IFNAMSIZ} characters: "
                                        f"give {n.name} a shorter name", ("links", i))
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
                                        f"run without STP: use routers for redundant paths",
                                        ("links", l.index))
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
        """IPv4 /24 (IPv6 /64) per segment: the one its hosts' explicit addresses name, else
        the next free one of 10.0.0.0/8 (fd00::/48). Refused: an explicit address on a
        host with several links (it could not say which), explicit addresses of one
        segment in different subnets, overlapping subnets of two segments, an address
        that is its subnet's network or broadcast address, one address twice."""
        explicit4: dict[Segment, IPv4Net] = {}
        explicit6: dict[Segment, IPv6Net] = {}
        for s in self.segments:
            for v6, table in ((False, explicit4), (True, explicit6)):
                nets: dict = {}
                for i in s.members:
                    a = self._explicit(i, v6)
                    if a is not None:
                        nets.setdefault(a.network, i.node)
                if len(nets) > 1:
                    (n1, h1), (n2, h2) = list(nets.items())[:2]
                    raise TopologyError(
                        f"{h1} ({n1}) and {h2} ({n2}) share a segment but not a subnet: "
                        f"give the hosts of one segment addresses of one subnet",
                        ("hosts", h2, "ip6" if v6 else "ip"))
                if nets:
                    table[s] = next(iter(nets))
        for v6, table in ((False, explicit4), (True, explicit6)):
            segs = list(table.items())
            for k, (s1, n1) in enumerate(segs):
                for s2, n2 in segs[:k]:
                    if n1.overlaps(n2):
                        h = next(i.node for i in s1.members if self._explicit(i, v6))
                        raise TopologyError(f"{h}'s subnet {n1} overlaps {n2} of another "
                                            f"segment: give each segment its own subnet",
                                            ("hosts", h, "ip6" if v6 else "ip"))
        # the /24s taken (a wider net takes each /24 in it, a narrower one its /24): a
        # candidate is free when none of its /24s is taken (a set lookup, not a scan)
        taken24: set[IPv4Net] = set()

        def take(n: IPv4Net) -> None:
            taken24.update(n.subnets(new_prefix=24) if n.prefixlen <= 24
                           else [n.supernet(new_prefix=24)])
        for n in explicit4.values():
            take(n)
        used6 = list(explicit6.values())   # automatic /64s never overlap each other
        k4 = k6 = 0
        for s in self.segments:
            if s in explicit4:
                s.net4 = explicit4[s]
            else:
                # a /24 per segment; wider (aligned) where more than 254 members share one
                plen = 24
                while 2 ** (32 - plen) - 2 < len(s.members) and plen > 16:
                    plen -= 1
                while True:
                    if k4 >= 1 << 16:
                        raise TopologyError("more than 65536 segments")
                    cand = IPv4Net(f"10.{k4 >> 8}.{k4 & 255}.0/24").supernet(new_prefix=plen)
                    k4 += 1
                    if not any(c in taken24 for c in cand.subnets(new_prefix=24)):
                        break
                s.net4 = cand
                take(cand)
            if not self.spec.ipv6:
                s.net6 = None
            elif s in explicit6:
                s.net6 = explicit6[s]
            else:
                while True:
                    cand6 = IPv6Net(f"fd00:0:0:{k6:x}::/64")
                    k6 += 1
                    if not any(cand6.overlaps(u) for u in used6):
                        break
                s.net6 = cand6
                used6.append(cand6)
            self._assign(s)
        seen: dict = {}
        for n in self.nodes.values():
            for i in n.intfs:
                for a in (i.ip4, i.ip6):
                    if a is None:
                        continue
                    if a.ip in seen and seen[a.ip] != i.node:
                        raise TopologyError(f"{i.node} and {seen[a.ip]} both have address "
                                            f"{a.ip}: give each interface its own address",
                                            ("hosts", i.node, "ip6" if a.version == 6
                                             else "ip"))
                    seen[a.ip] = i.node

    def _explicit(self, i: Intf, v6: bool):
        """The address a host's spec gives this interface (its only one), checked."""
        g = self.nodes[i.node]
        if g.kind != "host":
            return None
        spec = self.host_spec(i.node)
        a = spec.ip6 if v6 else spec.ip
        if a is None:
            return None
        key = ("hosts", i.node, "ip6" if v6 else "ip")
        if v6 and not self.spec.ipv6:
            raise TopologyError(f"{i.node} has ip6 but the topology has `ipv6: false`: drop "
                                f"ip6 or set ipv6: true", key)
        if len(g.intfs) != 1:
            raise TopologyError(f"{i.node} has {len(g.intfs)} links; `ip`/`ip6` address a "
                                f"host of one link: remove it (addresses are then automatic)",
                                key)
        net = a.network
        if net.num_addresses > 2 and a.ip == net.network_address:
            raise TopologyError(f"{a} is the network address of {net}: use a host address "
                                f"such as {net[1]}/{net.prefixlen}", key)
        if not v6 and net.num_addresses > 2 and a.ip == net.broadcast_address:
            raise TopologyError(f"{a} is the broadcast address of {net}: use a host address "
                                f"such as {net[1]}/{net.prefixlen}", key)
        if a.ip.is_loopback or a.ip.is_multicast or a.ip.is_unspecified or \
                (not v6 and a.ip.is_reserved) or a.ip.is_link_local:
            raise TopologyError(f"{a.ip} is not a unicast host address (loopback, "
                                f"multicast, link-local or reserved): use e.g. 10.1.0.1/24", key)
        return a

    def _assign(self, s: Segment) -> None:
        """Addresses of a segment's members: explicit ones kept; hosts count up from the
        first address, routers down from the last."""
        for v6, net in ((False, s.net4), (True, s.net6)):
            if net is None:
                continue
            taken = {a.ip for a in (self._explicit(i, v6) for i in s.members) if a}
            room = net.num_addresses - (2 if net.num_addresses > 2 else 0)
            if len(s.members) > room:
                raise TopologyError(f"segment {net} has {len(s.members)} members, room for "
                                    f"{room}: widen the subnet of its hosts' addresses",
                                    ("hosts", s.members[0].node, "ip6" if v6 else "ip"))
            first = 1 if net.num_addresses > 2 else 0
            up, down = first, net.num_addresses - 1 - first
            for i in s.members:
                a = self._explicit(i, v6)
                if a is None:
                    if v6 or self.nodes[i.node].kind == "host":
                        while net[up] in taken:
                            up += 1
                        addr, up = net[up], up + 1
                    else:
                        while net[down] in taken:
                            down -= 1
                        addr, down = net[down], down - 1
                    taken.add(addr)
                    a = ipaddress.ip_interface(f"{addr}/{net.prefixlen}")
                if v6:
                    i.ip6 = a
                else:
                    i.ip4 = a

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

    def reachable(self, a: str, b: str, v6: bool = False) -> bool:
        """Do packets of node a reach node b's address (IPv6: its IPv6 one)? Through
        segments joined by routers (hosts forward nothing): what the routes follow."""
        if not any((i.ip6 if v6 else i.ip4) is not None for i in self.nodes[b].intfs):
            return False
        seen = {id(i.segment): i.segment for i in self.nodes[a].intfs if i.segment}
        todo = list(seen.values())
        while todo:
            s = todo.pop()
            for m in s.members:
                if self.nodes[m.node].kind != "router":
                    continue
                for i in self.nodes[m.node].intfs:
                    if i.segment is not None and id(i.segment) not in seen:
                        seen[id(i.segment)] = i.segment
                        todo.append(i.segment)
        # the address flows go to: b's first of that family (ip())
        dst = next(i for i in self.nodes[b].intfs if (i.ip6 if v6 else i.ip4) is not None)
        return dst.segment is not None and id(dst.segment) in seen

    def resolve(self, name_or_addr: str) -> str:
        return self.ip(name_or_addr) if name_or_addr in self.nodes else name_or_addr
