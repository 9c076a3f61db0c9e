"""Typed configuration: what a topology file and an experiment file may say.

Every model forbids unknown keys. Units are parsed at the edge (config.units), so the
rest of the code sees Mb/s, bytes and seconds only.

Topology: TopologySpec (hosts, switches, routers, links, defaults) and its parts
LinkParams/LinkSpec, HostSpec, SwitchSpec, RouterSpec, Offloads, QueueLimit.
Experiment: Experiment (topology reference, workload, instruments, sweep) and its parts
FlowSpec, IncastSpec, CommandSpec, EventSpec, Workload, HostDefaults.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field,
                      field_validator, model_validator)

from . import units

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
MAX_RANGE = 4096   # nodes named by one `h1..hN` range


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _name(v: object) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ValueError(f"node names are 1-10 lowercase letters/digits starting with a "
                         f"letter (they become interface names like h1-eth0), got {v!r}")
    return v


NodeName = Annotated[str, BeforeValidator(_name)]


@dataclass(frozen=True)
class Ref:
    """Marks an option that names something of the topology, so the loader checks it
    against the point's graph (config.checks) with the option's own line: the kinds of
    node it may name (host, switch, router), or "port" (an interface of a switch or
    router, `s1-eth1` or `s1:s1-eth1`); `address`: an IP address or prefix is accepted
    instead of a name. Use through the aliases below: `hosts: list[HostRef]`."""

    kinds: tuple[str, ...]
    address: bool = False


HostRef = Annotated[str, BeforeValidator(_name), Ref(("host",))]
ForwarderRef = Annotated[str, BeforeValidator(_name), Ref(("switch", "router"))]
NodeRef = Annotated[str, BeforeValidator(_name), Ref(("host", "switch", "router"))]
PortRef = Annotated[str, Ref(("port",))]
Rate = Annotated[float, BeforeValidator(units.rate_mbps)]
Size = Annotated[int, BeforeValidator(units.size_bytes)]
Duration = Annotated[float, BeforeValidator(units.duration_s)]


class QueueLimit(Model):
    """A FIFO limit: packets (pfifo) or bytes (bfifo). `100` = 100 packets, '64KB' = bytes."""

    packets: int | None = Field(None, gt=0, le=1_000_000)
    bytes: int | None = Field(None, gt=0, le=1 << 30)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected a packet count (100) or a size ('64KB')")
        if isinstance(v, int):
            return {"packets": v}
        if isinstance(v, str):
            s = v.strip().lower()
            if s.endswith(("p", "pkts", "packets")):
                return {"packets": int(re.sub(r"[a-z]+$", "", s))}
            return {"bytes": units.size_bytes(v)}
        return v

    @model_validator(mode="after")
    def _one(self) -> "QueueLimit":
        if (self.packets is None) == (self.bytes is None):
            raise ValueError("give exactly one of packets or bytes")
        return self


class Offloads(Model):
    """NIC offloads of a host's interfaces; None leaves the kernel's default."""

    tso: bool | None = None
    gso: bool | None = None
    gro: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _all(cls, v: Any) -> Any:
        if isinstance(v, bool):  # `offloads: off` turns all three off
            return {"tso": v, "gso": v, "gro": v}
        return v


class EcnMark(Model):
    """ECN marking at a forwarding node's shaped egress (the switch sets CE on ECT packets).

    `k`: DCTCP's rule, mark when the queue a packet finds is above K. Or a RED-like ramp on
    the instantaneous queue: no mark up to `min`, probability rising linearly to `p` at
    `max`, every packet above `max`. Thresholds in packets (`20`) or bytes (`30KB`), all
    of one unit. `ecn_mark: 30KB` is short for `{k: 30KB}`."""

    k: QueueLimit | None = None
    min: QueueLimit | None = None
    max: QueueLimit | None = None
    p: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, (int, str)) and not isinstance(v, bool):
            return {"k": v}
        return v

    @model_validator(mode="after")
    def _one(self) -> "EcnMark":
        if self.k is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give k (a step at K) or min and max (a ramp), not both")
        elif self.min is None or self.max is None:
            raise ValueError("give k (mark above K) or both min and max (a RED-like ramp)")
        elif self.unit != ("packets" if self.max.packets is not None else "bytes") or \
                self.threshold(self.min) >= self.threshold(self.max):
            raise ValueError("min and max need the same unit (packets or bytes) and min < max")
        return self

    @property
    def unit(self) -> str:
        q = self.k if self.k is not None else self.min
        return "packets" if q.packets is not None else "bytes"

    @staticmethod
    def threshold(q: QueueLimit) -> int:
        return q.packets if q.packets is not None else q.bytes

    def bounds(self) -> tuple[int, int]:
        """(min, max) in the unit: a step at K is min = max = K."""
        if self.k is not None:
            return self.threshold(self.k), self.threshold(self.k)
        return self.threshold(self.min), self.threshold(self.max)


AQM_KINDS = ("red", "codel", "fq_codel", "pie", "fq")


class Aqm(Model):
    """An active queue manager in place of a shaped link's FIFO (`aqm: fq_codel` or
    `aqm: {kind: red, ecn: true, min: 30KB, max: 90KB}`). Its packet limit is the link's
    `queue`. Each kind is a kernel qdisc (sch_<kind>): refused where the kernel lacks it."""

    kind: Literal["red", "codel", "fq_codel", "pie", "fq"]
    ecn: bool = False                      # mark CE instead of dropping (not fq)
    target: Duration | None = None         # codel, fq_codel, pie: target queueing delay
    interval: Duration | None = None       # codel, fq_codel: the window target is held over
    min: Size | None = None                # red: average backlog where marking starts
    max: Size | None = None                # red: where it reaches `probability`
    probability: float | None = Field(None, gt=0, le=1)   # red: marking probability at max
    maxrate: Rate | None = None            # fq: per-flow pacing cap, Mb/s

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fits(self) -> "Aqm":
        own = {"red": {"min", "max", "probability"}, "codel": {"target", "interval"},
               "fq_codel": {"target", "interval"}, "pie": {"target"}, "fq": {"maxrate"}}
        stray = [k for k in ("target", "interval", "min", "max", "probability", "maxrate")
                 if getattr(self, k) is not None and k not in own[self.kind]]
        if stray:
            raise ValueError(f"{', '.join(stray)} is not an option of {self.kind} "
                             f"(it takes: {', '.join(sorted(own[self.kind])) or 'none'})")
        if self.kind == "fq" and self.ecn:
            raise ValueError("fq does not mark ECN; choose red, codel, fq_codel or pie")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("red: min must not exceed max")
        return self


class LinkParams(Model):
    bw: Rate | None = None           # Mb/s; None = not shaped
    queue: QueueLimit | None = None  # FIFO at each shaped egress (the AQM's limit)
    ecn_mark: EcnMark | None = None  # CE marking at forwarding nodes' egress (needs bw)
    delay: Duration | None = None    # needs netem
    jitter: Duration | None = None   # needs netem
    loss: float | None = Field(None, ge=0, le=100)  # percent; needs netem
    aqm: Aqm | None = None           # in place of the FIFO; needs sch_<kind>

    def needs_netem(self) -> list[str]:
        return [k for k in ("delay", "jitter", "loss") if getattr(self, k)]

    def needs_qdiscs(self) -> dict[str, str]:
        """qdisc → the option asking for it (netem for delay/jitter/loss, the AQM's)."""
        out = {"netem": "/".join(self.needs_netem())} if self.needs_netem() else {}
        if self.aqm is not None:
            out[self.aqm.kind] = f"aqm: {self.aqm.kind}"
        return out


class LinkSpec(LinkParams):
    ends: tuple[NodeName, NodeName]

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {"ends": v}
        return v

    @model_validator(mode="after")
    def _distinct(self) -> "LinkSpec":
        if self.ends[0] == self.ends[1]:
            raise ValueError(f"a link needs two different ends, got {self.ends[0]} twice")
        return self


class HostSpec(Model):
    ip: ipaddress.IPv4Interface | None = None
    ip6: ipaddress.IPv6Interface | None = None
    offloads: Offloads | None = None


class SwitchSpec(Model):
    backend: Literal["kernel", "bmv2"] = "kernel"


class RouterSpec(SwitchSpec):
    ecmp_hash: Literal["l3", "l4"] = "l4"   # addresses / 5-tuple (backends.kernel.ECMP_HASH)


class TopologyDefaults(Model):
    link: LinkParams = LinkParams()
    host: HostSpec = HostSpec()


class TopologySpec(Model):
    name: str = "topology"
    ipv6: bool = True
    defaults: TopologyDefaults = TopologyDefaults()
    hosts: dict[NodeName, HostSpec | None] = {}
    switches: dict[NodeName, SwitchSpec | None] = {}
    routers: dict[NodeName, RouterSpec | None] = {}
    links: list[LinkSpec] = []

    @field_validator("hosts", "switches", "routers", mode="before")
    @classmethod
    def _listed(cls, v: Any) -> Any:
        if isinstance(v, list):  # `hosts: [h1, h2]`
            for n in v:
                _name(n)
            dup = next((n for i, n in enumerate(v) if n in v[:i]), None)
            if dup:
                raise ValueError(f"{dup} is listed twice")
            return {n: None for n in v}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TopologySpec":
        self.hosts = {k: v or HostSpec() for k, v in self.hosts.items()}
        self.switches = {k: v or SwitchSpec() for k, v in self.switches.items()}
        self.routers = {k: v or RouterSpec() for k, v in self.routers.items()}
        seen: dict[str, str] = {}
        for kind in ("hosts", "switches", "routers"):
            for n in getattr(self, kind):
                if n in seen:
                    raise ValueError(f"{n} is both in {seen[n]} and {kind}")
                seen[n] = kind
        if not self.hosts:
            raise ValueError("a topology needs at least one host")
        pairs = set()
        for i, l in enumerate(self.links):
            for e in l.ends:
                if e not in seen:
                    raise ValueError(f"links[{i}]: unknown node {e!r}; "
                                     f"declare it under hosts, switches or routers")
            key = frozenset(l.ends)
            if key in pairs:
                raise ValueError(f"links[{i}]: {l.ends[0]}-{l.ends[1]} is listed twice")
            pairs.add(key)
        linked = {e for l in self.links for e in l.ends}
        for n in seen:
            if n not in linked:
                raise ValueError(f"{n} has no link")
        return self

    def kind(self, name: str) -> str:
        return "host" if name in self.hosts else "switch" if name in self.switches else "router"

    def link_params(self, link: LinkSpec) -> LinkParams:
        """A link's parameters with the topology defaults filled in."""
        merged = self.defaults.link.model_dump()
        merged.update({k: v for k, v in link.model_dump(exclude={"ends"}).items()
                       if v is not None})
        return LinkParams.model_validate(merged)


# --- experiments -------------------------------------------------------------------

def _expand_names(v: Any) -> Any:
    """'h2..h11' → [h2, …, h11]; lists pass through."""
    if isinstance(v, str):
        m = re.fullmatch(r"([a-z]+)(\d+)\.\.([a-z]+)?(\d+)", v.strip())
        if not m:
            return [v]
        if m.group(3) and m.group(3) != m.group(1):
            raise ValueError(f"a range needs one prefix, got {v!r}")
        lo, hi = int(m.group(2)), int(m.group(4))
        if hi < lo:
            raise ValueError(f"empty range {v!r}")
        if hi - lo >= MAX_RANGE:
            raise ValueError(f"range {v!r} names {hi - lo + 1} nodes, more than {MAX_RANGE}")
        return [f"{m.group(1)}{i}" for i in range(lo, hi + 1)]
    return v


HostList = Annotated[list[HostRef], BeforeValidator(_expand_names)]


class FlowSpec(Model):
    """One iperf3 flow (with `parallel` streams)."""

    src: HostRef
    dst: HostRef
    start: Duration = 0.0
    duration: Duration | None = None   # default: until the experiment's end
    bytes: Size | None = None          # send this much instead of a duration
    rate: Rate | None = None           # iperf3 -b (Mb/s); default unlimited for TCP
    cc: str | None = None              # default: the experiment's `cc`
    parallel: int = Field(1, ge=1, le=128)
    protocol: Literal["tcp", "udp"] = "tcp"
    ipv6: bool = False                 # to the destination's IPv6 address
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "FlowSpec":
        if self.src == self.dst:
            raise ValueError("src and dst are the same host")
        if self.bytes is not None and self.duration is not None:
            raise ValueError("give bytes or duration, not both")
        return self


class IncastSpec(Model):
    """N senders start at once towards one receiver: the burst of an incast."""

    senders: HostList
    dst: HostRef
    start: Duration
    bytes: Size | None = None
    duration: Duration | None = None
    cc: str | None = None
    ipv6: bool = False
    name: str = "incast"
    # Connect before the clock starts and only send at `start`: the burst measures the
    # burst, not whether a SYN got through a full queue (its handshake is on an idle net).
    warm: bool = False

    @model_validator(mode="after")
    def _check(self) -> "IncastSpec":
        if (self.bytes is None) == (self.duration is None):
            raise ValueError("give exactly one of bytes (per sender) or duration")
        if self.warm and self.bytes is None:
            raise ValueError("warm: true needs bytes: (our burst sender holds a connection "
                             "open until its start; iperf3, used for duration:, cannot)")
        if self.dst in self.senders:
            raise ValueError(f"{self.dst} is both a sender and the receiver")
        return self


class CommandSpec(Model):
    """A shell command on a host at a time; its output goes to logs/."""

    host: NodeRef
    at: Duration = 0.0
    cmd: str = Field(min_length=1)


class EventSpec(Model):
    """Something that happens to the network at a time: link down/up, route change."""

    at: Duration
    action: Literal["link_down", "link_up", "route"]
    link: tuple[NodeName, NodeName] | None = None  # link_down / link_up
    node: Annotated[str, BeforeValidator(_name), Ref(("router", "host"))] | None = None
    #                                                route: where
    dst: Annotated[str, Ref(("host",), address=True)] | None = None
    #                                                route: prefix or host name
    via: list[Annotated[str, Ref(("router", "host"), address=True)]] = []
    #                                                route: next-hop node names or addresses

    @model_validator(mode="after")
    def _check(self) -> "EventSpec":
        if self.action in ("link_down", "link_up") and not self.link:
            raise ValueError(f"{self.action} needs link: [a, b]")
        if self.action == "route" and not (self.node and self.dst and self.via):
            raise ValueError("route needs node, dst and via")
        return self


class Workload(Model):
    flows: list[FlowSpec] = []
    incast: list[IncastSpec] = []
    commands: list[CommandSpec] = []
    events: list[EventSpec] = []


class HostDefaults(Model):
    """Settings applied to every host of the experiment (override the topology's)."""

    offloads: Offloads | None = None
    quickack: bool = False   # `ip route … quickack 1`: no delayed ACKs (see powertcp.md)
    # net.ipv4.tcp_ecn: true requests ECN on every connection (for kernel CCs); None keeps
    # the kernel's 2 (accept when asked). CCs that need ECN (dctcp) request it themselves.
    ecn: bool | None = None


class EmulationOptions(Model):
    """How the emulation itself behaves (not part of the emulated network)."""

    # Receive packet steering on every interface of every node, by flow hash over all
    # CPUs: a flow's packets stay on one CPU, in order. Without it TCP sends from the
    # app's CPU and from whichever CPU handled an ACK, and veth hands each packet to the
    # sending CPU: a CPU-bound flow gets reordered (spurious fast retransmits).
    rps: bool = False


class TopologyRef(Model):
    """`topology:` — a file, a built-in with parameters, or a whole inline topology."""

    file: str | None = None
    builtin: str | None = None
    overrides: dict[str, Any] = {}   # with file: dotted keys → values
    params: dict[str, Any] = {}      # with builtin: its parameters
    inline: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"file": v}
        if isinstance(v, dict):
            if "builtin" in v:
                return {"builtin": v["builtin"],
                        "params": {k: x for k, x in v.items() if k != "builtin"}}
            if "file" in v:
                return v
            return {"inline": v}
        return v

    @model_validator(mode="after")
    def _one(self) -> "TopologyRef":
        if not (self.file or self.builtin or self.inline is not None):
            raise ValueError("give a topology: a file (topology: x.yaml), a built-in "
                             "(topology: {builtin: incast}) or hosts/links inline")
        return self


class IntOptions(BaseModel):
    """Experiment key `int:`. Off unless enabled; the public v0.4 wire format by default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    version: Literal["v04", "v02"] = "v04"
    scale: Literal["public", "fine"] = "public"   # fine: see docs/tcp-int.md "Scales"
    # Two samplings, named apart: a host puts the option on 1 in N of its data segments;
    # a switch stamps 1 in N of the option-carrying packets it forwards. `tag_every`
    # (the host's, by its older name) is still read.
    host_tag_every: int = Field(1, ge=1, le=65536,
                                validation_alias=AliasChoices("host_tag_every", "tag_every"))
    switch_tag_every: int = Field(1, ge=1, le=255)  # switches: stamp 1 in N (TagFreqKey 0xf)
    dynamic_tagging: bool = False                 # hosts send TagFreqKey by flow state (v04)
    congested_every: int = Field(1, ge=1, le=255)    # switch frequency for CONGESTED
    uncongested_every: int = Field(16, ge=1, le=255)  # … UNCONGESTED
    applimited_every: int = Field(1, ge=1, le=255)   # … APPLIMITED
    echo: bool = True                             # receivers echo telemetry to senders
    util_window: Duration = Field(0.001, gt=0, le=10)  # utilization averaging window
    hop_mbps: Rate | None = Field(None, gt=0)     # CC decode: link speed if no code says
    hosts: list[HostRef] | None = None            # hosts with the host program (None: all)
    switches: list[ForwarderRef] | None = None    # forwarding nodes that stamp (None: all)
    trace: bool = True                            # ring-buffer events for int_trace


class Experiment(Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    scale: str = ""          # the emulated scale, stated on every plot
    topology: TopologyRef
    duration: Duration = Field(gt=0, le=3600)
    settle: Duration = 0.5   # wait after the workload ends, for late reports
    cc: str = "cubic"
    congestion_control: dict[str, dict[str, Any]] = {}  # eBPF CC parameters, by CC
    tcp_int: IntOptions = Field(default_factory=IntOptions, alias="int")  # docs/tcp-int.md
    hosts: HostDefaults = HostDefaults()
    emulation: EmulationOptions = EmulationOptions()
    workload: Workload = Workload()
    instruments: dict[str, Any] = {}
    sweep: dict[str, list[Any]] = {}
    repetitions: int = Field(1, ge=1, le=1000)
    expect: list[dict[str, Any]] = []
    # needs a stock kernel (netem, AQMs, dctcp): `run` boots the stock-kernel VM for it
    # (python -m testbed vm), `validate` leaves the kernel's features to the guest
    vm: bool = False

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"sweep {k!r} has no values")
            if k.split(".")[0] in ("sweep", "repetitions", "name"):
                raise ValueError(f"cannot sweep over {k!r}")
        return v

    @field_validator("instruments", mode="before")
    @classmethod
    def _instr(cls, v: Any) -> Any:
        if isinstance(v, list):  # `instruments: [queue, iperf]`
            if not all(isinstance(n, str) for n in v):
                raise ValueError("a list of instrument names, or a mapping name → options")
            return {n: {} for n in v}
        return {k: ({} if x is None else x) for k, x in v.items()} if isinstance(v, dict) else v
