"""Cross-checks of one sweep point: the experiment against its topology's graph — what
the configuration alone can refuse, for `validate` and `run` alike (config.load calls
run()). What depends on this machine or on a component (the kernel's qdiscs and CCs, a
switch backend, an instrument's limits) is checked by testbed.preflight, with the same
PointCheck, so that configuration imports nothing above it.

Each check is a function of a PointCheck registered with @check and run in order; the
first refusal is one ConfigError naming the line of the key it is about. Options that
name nodes or ports are checked from their types (config.models.Ref: `list[HostRef]`);
an instrument adds its own checks in `Instrument.validate(options, point)`.

Adding a check: write `@check def _my_check(p: PointCheck) -> None` raising
`p.fail(key_path, "what is wrong: the fix")` (or `p.fail_topo` for a topology key).
"""
from __future__ import annotations

import difflib
import ipaddress
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pydantic import BaseModel

from ..errors import ConfigError
from ..topology.graph import Graph
from .models import EBPF_CC_KINDS, Experiment, Ref, TopologySpec
from .yamlsrc import Source


@dataclass
class PointCheck:
    """What a check sees: the point's experiment and topology, its graph, and where
    their keys are written (to name lines)."""

    exp: Experiment
    topo: TopologySpec
    graph: Graph
    src: Source                       # the point's experiment
    topo_src: Source                  # the source holding the topology's keys
    topo_prefix: tuple | None         # their path in topo_src; None: a built-in
    kernel: bool = True               # check this kernel's qdiscs and CCs (not for --vm)

    def fail(self, loc: tuple, msg: str) -> ConfigError:
        from .load import error_at
        return error_at(self.src, tuple(loc), msg)

    def fail_topo(self, loc: tuple, msg: str) -> ConfigError:
        """An error about a topology key: its line in the topology file or inline
        topology; for a built-in, the experiment's `topology:` line."""
        from .load import error_at
        if self.topo_prefix is None:
            return error_at(self.src, ("topology",), msg)
        return error_at(self.topo_src, self.topo_prefix + tuple(loc), msg)


class Checks:
    """Checks of a point, run in the order they were registered (`@checks` on each);
    the first refusal raises."""

    def __init__(self) -> None:
        self.fns: list[Callable[[PointCheck], None]] = []

    def __call__(self, fn: Callable[[PointCheck], None]) -> Callable[[PointCheck], None]:
        self.fns.append(fn)
        return fn

    def run(self, point: PointCheck) -> None:
        for fn in self.fns:
            fn(point)


check = Checks()   # this module's: what the configuration alone can refuse
run = check.run


# --- names of nodes and ports, from the option types -------------------------------------

def refs(value: Any, ann: Any, loc: tuple) -> Iterator[tuple[tuple, str, Ref]]:
    """(key path, value, Ref) of every value whose type carries a Ref, in a validated
    model tree (instrument options and `int:` are found by their values' types)."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(ann)
        for m in meta:
            if isinstance(m, Ref) and isinstance(value, str):
                yield loc, value, m
        yield from refs(value, base, loc)
        return
    if isinstance(value, BaseModel):
        for name, f in type(value).model_fields.items():
            fa = f.annotation
            if f.metadata:
                fa = typing.Annotated[(fa, *f.metadata)]
            yield from refs(getattr(value, name, None), fa, loc + (f.alias or name,))
        return
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(ann):
            if a is not type(None):
                yield from refs(value, a, loc)
        return
    args = typing.get_args(ann)
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if origin is tuple and args and args[-1] is not Ellipsis:
                a = args[i] if i < len(args) else Any
            else:
                a = args[0] if args else Any
            yield from refs(v, a, loc + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from refs(v, args[1] if len(args) == 2 else Any, loc + (k,))


def _unknown(value: str, names: list[str], what: str) -> str:
    close = difflib.get_close_matches(value, names, n=1)
    return f"unknown {what} {value!r}" + (f"; did you mean {close[0]!r}?" if close else
                                          f" ({what}s: {', '.join(names) or 'none'})")


def _ports(g: Graph) -> dict[str, str]:
    """Interface name → its switch or router."""
    return {i.name: n.name for n in g.switches for i in n.intfs}


@check
def _node_refs(p: PointCheck) -> None:
    g = p.graph
    for loc, value, ref in refs(p.exp, Experiment, ()):
        if ref.kinds == ("port",):
            ports = _ports(g)
            node, sep, ifn = value.partition(":")
            if not sep:
                node, ifn = ports.get(value, ""), value
            if ports.get(ifn) != node:
                raise p.fail(loc, _unknown(value, sorted(ports), "switch or router port") +
                             " (write s1-eth0 or s1:s1-eth0)")
            continue
        if value in g.nodes:
            kind = g.nodes[value].kind
            if kind not in ref.kinds:
                raise p.fail(loc, f"{value} is a {kind}; this key names a "
                                  f"{' or '.join(ref.kinds)}")
            continue
        if ref.address:
            try:
                ipaddress.ip_network(value, strict=False)
                continue
            except ValueError:
                pass
        names = [n for n in g.nodes if g.nodes[n].kind in ref.kinds]
        what = ref.kinds[0] if len(ref.kinds) == 1 else "node"
        msg = _unknown(value, names, what)
        raise p.fail(loc, msg + ("; or give an IP address" if ref.address else ""))


# --- the topology ------------------------------------------------------------------------

@check
def _links(p: PointCheck) -> None:
    for i, link in enumerate(p.topo.links):
        lp = p.topo.link_params(link)
        name = f"link {link.ends[0]}-{link.ends[1]}"
        if getattr(lp, "ecn_mark", None) is not None and lp.bw is None:
            raise p.fail_topo(("links", i), f"{name}: ecn_mark needs bw (marking reads the "
                                            f"shaped egress queue; an unshaped veth never "
                                            f"queues)")
        if getattr(lp, "ecn_mark", None) is not None and lp.aqm is not None:
            raise p.fail_topo(("links", i), f"{name}: ecn_mark (our switches' marking) and "
                                            f"aqm (a kernel qdisc) both mark this queue: "
                                            f"choose one")


# --- the workload ------------------------------------------------------------------------

@check
def _timing(p: PointCheck) -> None:
    w, d = p.exp.workload, p.exp.duration
    for i, f in enumerate(w.flows):
        if f.start >= d or f.start + (f.duration or 0) > d + 1e-9:
            raise p.fail(("workload", "flows", i),
                         f"flow runs past the experiment's duration ({d:g} s)")
    for i, b in enumerate(w.incast):
        if b.start >= d or b.start + (b.duration or 0) > d + 1e-9:
            raise p.fail(("workload", "incast", i, "start"),
                         f"incast runs past the experiment's duration ({d:g} s)")
    for key, items in (("commands", w.commands), ("events", w.events)):
        for i, c in enumerate(items):
            if c.at >= d:
                raise p.fail(("workload", key, i, "at"),
                             f"at {c.at:g} s is not before the experiment's end ({d:g} s): "
                             f"it would never happen; lower `at` or raise `duration`")


@check
def _reachability(p: PointCheck) -> None:
    g, w = p.graph, p.exp.workload
    pairs = [(("workload", "flows", i), f.src, f.dst, f.ipv6) for i, f in enumerate(w.flows)]
    pairs += [(("workload", "incast", i), s, b.dst, b.ipv6)
              for i, b in enumerate(w.incast) for s in b.senders]
    for loc, a, b, v6 in pairs:
        if v6 and not p.topo.ipv6:
            raise p.fail(loc + ("ipv6",), "the topology has no IPv6 addresses: set the "
                                          "topology's `ipv6: true` or drop the flow's `ipv6`")
        if not g.reachable(a, b, v6) or not g.reachable(b, a, v6):
            raise p.fail(loc, f"{a} cannot reach {b}: no path between them (hosts do not "
                              f"forward; join them through switches or routers)")


@check
def _events(p: PointCheck) -> None:
    g = p.graph
    links = {frozenset(l.ends) for l in p.topo.links}
    for i, ev in enumerate(p.exp.workload.events):
        loc = ("workload", "events", i)
        if ev.link and frozenset(ev.link) not in links:
            raise p.fail(loc + ("link",), f"no link {ev.link[0]}-{ev.link[1]} in the topology")
        if ev.action != "route":
            continue
        if ev.dst in g.nodes:
            v6 = False
        else:
            v6 = ipaddress.ip_network(ev.dst, strict=False).version == 6
            if v6 and not p.topo.ipv6:
                raise p.fail(loc + ("dst",), "an IPv6 route in a topology without IPv6: "
                                             "set the topology's `ipv6: true`")
        for k, via in enumerate(ev.via):
            if via not in g.nodes:
                addr = ipaddress.ip_address(via) if _is_addr(via) else None
                if addr is None:
                    raise p.fail(loc + ("via", k), f"{via!r} is neither a node nor an address "
                                                   f"(a next hop is one address, no prefix)")
                if (addr.version == 6) != v6:
                    raise p.fail(loc + ("via", k), f"next hop {via} is not of the route's "
                                                   f"address family")
                continue
            try:
                g.neighbor_addr(ev.node, via, v6)
            except (KeyError, AttributeError):
                raise p.fail(loc + ("via", k), f"{via} is not a neighbour of {ev.node} (a "
                                               f"next hop shares a link or switch with it)") \
                    from None


def _is_addr(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


# --- congestion control -----------------------------------------------------------------

def _ccs_used(exp: Experiment) -> list[tuple[tuple, str, str | None, bool]]:
    """(key path, cc, receiver, tcp) of every flow, and the experiment's default."""
    out = [(("cc",), exp.cc, None, True)]
    for i, f in enumerate(exp.workload.flows):
        out.append((("workload", "flows", i, "cc") if f.cc else ("cc",), f.cc or exp.cc,
                    f.dst, f.protocol == "tcp"))
    for i, b in enumerate(exp.workload.incast):
        out.append((("workload", "incast", i, "cc") if b.cc else ("cc",), b.cc or exp.cc,
                    b.dst, True))
    return out


@check
def _congestion_control(p: PointCheck) -> None:
    receivers: dict[str, str] = {}
    for loc, cc, dst, tcp in _ccs_used(p.exp):
        kind = EBPF_CC_KINDS.get(cc)
        if kind is None or not tcp or dst is None:
            continue
        if kind.needs_int and not p.exp.tcp_int.enabled:
            raise p.fail(loc, f"{cc} reads TCP-INT telemetry: set `int: {{enabled: true}}` "
                              f"(or use theta_powertcp, which needs none)")
        if kind.receiver:
            if receivers.setdefault(dst, cc) != cc:
                raise p.fail(loc, f"{dst} receives flows of {receivers[dst]} and {cc}, which "
                                  f"each need the receiver to run them: give them different "
                                  f"receivers")
