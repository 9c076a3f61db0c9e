"""Typed configuration: what a topology file and an experiment file may say.

Every model forbids unknown keys. Units are parsed at the edge (config.units), so the
rest of the code sees Mb/s, bytes and seconds only.

Topology: TopologySpec (hosts, switches, routers, links, defaults) and its parts
LinkParams/LinkSpec, HostSpec, SwitchSpec, RouterSpec, Offloads, QueueLimit.
Experiment: Experiment (topology reference, workload, instruments, sweep) and its parts
FlowSpec, IncastSpec, CommandSpec, EventSpec, Workload, HostDefaults.
Options of the plug-ins, owned here so that config imports nothing above it:
- TCP-INT: IntOptions (`int:`).
- instruments: one `*Options` model each, INSTRUMENT_OPTIONS (name → model) and the
  Instruments section (`instruments:`); the classes are in testbed/instruments/.
- eBPF CCs: one `*Params` model each, EBPF_CC_KINDS (name → params and needs) and the
  CongestionControl section (`congestion_control:`); the programs are in testbed/bpf/cc.py.
- claims: one model per kind (`claim:` selects it), CLAIMS, MetricTolerance and
  Expectation (an `expect:` entry); their judges are in testbed/claims.py.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (AliasChoices, BaseModel, BeforeValidator, ConfigDict, Discriminator,
                      Field, PrivateAttr, Tag, create_model, field_validator, model_validator)

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


class VmSpec(Model):
    """`vm:` as a mapping: the experiment runs in the stock-kernel VM, with these settings.
    icount (software emulation only): the guest's clock counts executed instructions,
    2^icount ns each, instead of following the host's; the host taking its CPU away then
    pauses the guest's time instead of delaying its timers and forwards (qemu -icount;
    one vCPU)."""
    icount: int | None = Field(None, ge=0, le=10)


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


# --- sections with one key per plug-in ----------------------------------------------------

class Section(Model):
    """A mapping whose keys are plug-in names (instruments, eBPF CCs), each validated by
    its own model (one field per name, declared in the table that builds the section).
    `chosen()` gives the names the file sets, in the file's order. `what` names the key
    kind in an unknown-key error ("unknown instrument 'queu'")."""

    what: ClassVar[str] = "key"
    _order: list[str] = PrivateAttr(default_factory=list)
    _aliased: dict[str, str] = PrivateAttr(default_factory=dict)   # former name → name

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, v: Any, handler: Any) -> Any:
        m = handler(v)
        if isinstance(v, dict):
            by_alias = {c: n for n, f in cls.model_fields.items()
                        if isinstance(f.validation_alias, AliasChoices)
                        for c in f.validation_alias.choices}
            names = []
            for k in v:
                name = by_alias.get(k, k)
                names.append(name)
                if name != k:
                    m._aliased[k] = name
            m._order = names
        return m

    def notes(self, key: str) -> list[str]:
        """What the file says by a former name (`key`: this section's key)."""
        return [f"{key}.{old}: renamed {new} (`{old}` is still read; write `{new}`)"
                for old, new in self._aliased.items()]

    def chosen(self) -> dict[str, Any]:
        """name → options of every name the file sets (its order), defaults filled in."""
        order = self._order or list(type(self).model_fields)
        return {n: getattr(self, n) for n in order if getattr(self, n, None) is not None}

    def get(self, name: str) -> Any:
        return getattr(self, name, None) if name in type(self).model_fields else None


def section(name: str, what: str, table: dict[str, type[BaseModel]], doc: str,
            aliases: dict[str, tuple[str, ...]] | None = None) -> type[Section]:
    """The Section model with one optional field per entry of `table`."""
    fields: dict[str, Any] = {}
    for key, model in table.items():
        alias = AliasChoices(key, *(aliases or {}).get(key, ())) \
            if (aliases or {}).get(key) else None
        fields[key] = (model | None, Field(None, validation_alias=alias))
    cls = create_model(name, __base__=Section, __doc__=doc, **fields)
    cls.what = what
    return cls


# --- instrument options (the classes are in testbed/instruments/) -------------------------

class InstrumentOptions(Model):
    """Base of every instrument's options: unknown keys are errors."""

    enabled: bool = True


class QueueOptions(InstrumentOptions):
    # 500 µs; never below what the backend's queues can be read at without disturbing
    # the switch (BMv2: 10 ms; a raised period is noted in meta.json "notes")
    interval: Duration = Field(0.0005, ge=0.0001, le=1.0)
    nodes: list[ForwarderRef] = []   # default: every switch/router with a shaped port
    ports: list[PortRef] = []        # default: every shaped port of those nodes


class IntTraceOptions(InstrumentOptions):
    plot: bool = True
    max_events: int = Field(2_000_000, ge=1)  # rows kept in memory (then counted as dropped)


class CCTraceOptions(InstrumentOptions):
    pass


class FlowsOptions(InstrumentOptions):
    wire: bool = True                       # false: flows.csv from the tools' reports only
    late_after: float = Field(0.25, gt=0)   # s after its scheduled start: a late flow


class NoobflowOptions(InstrumentOptions):
    """`instruments: noobflow:` — where to attach, how often to swap, what to keep."""

    hosts: list[HostRef] = Field(default_factory=list)   # every non-lo interface of these;
    #                                                  neither hosts nor ports: all hosts
    ports: list[PortRef] = Field(default_factory=list)   # "s1-eth1" or "s1:s1-eth1"
    interval: float = Field(0.1, ge=0.005, le=60)     # seconds between swaps
    filter: list[str] = Field(default_factory=list)   # flow filter texts (units.flow_filter)
    mode: Literal["native", "skb"] = "native"
    max_flows: int = Field(16384, ge=16, le=1 << 20)  # per buffer, all points

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        units.flow_filter(v)  # ValueError → the config loader reports file:line
        return v


class NoobprobeOptions(InstrumentOptions):
    hosts: list[HostRef]                    # probing hosts
    dests: list[Annotated[str, Ref(("host",), address=True)]] = []
    #                                         host names or addresses; [] = every other host
    iface: Optional[str] = None             # default: the host's first interface
    rate: float = 1000.0
    hop_rate: float = 20.0
    pass_icmp: bool = False
    hops: Optional[int] = None
    timeout: float = 2.0
    poll_interval: float = 0.2
    ipv6: bool = True                       # probe IPv6 destinations too


class PcapOptions(InstrumentOptions):
    nodes: list[NodeRef] = []    # hosts, switches or routers; default: every host
    interfaces: list[str] = []   # default: every interface of those nodes
    snaplen: int = Field(128, ge=64, le=262144)
    file_mb: int = Field(10, ge=1, le=100_000)
    files: int = Field(4, ge=1, le=1000)
    filter: str = ""             # a pcap-filter expression (man pcap-filter)


# The YAML name of every instrument → its options; its class (testbed/instruments/) has
# the same `name` and `Options`.
INSTRUMENT_OPTIONS: dict[str, type[InstrumentOptions]] = {
    "queue": QueueOptions, "int_trace": IntTraceOptions, "cc_trace": CCTraceOptions,
    "flows": FlowsOptions, "noobflow": NoobflowOptions, "noobprobe": NoobprobeOptions,
    "pcap": PcapOptions,
}
# Former names still read, each with a note saying the current one.
INSTRUMENT_ALIASES: dict[str, tuple[str, ...]] = {"flows": ("iperf",)}
Instruments = section("Instruments", "instrument", INSTRUMENT_OPTIONS,
                      "`instruments:` — instrument name → its options.", INSTRUMENT_ALIASES)


# --- eBPF congestion controls' parameters (their programs: testbed/bpf/cc.py) -----------

class CCParams(Model):
    """Parameters of an eBPF CC (testbed/bpf/cc.py turns them into `const volatile`s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ThetaPowerTCPParams(CCParams):
    """θ-PowerTCP: γ, β (or expected flows), τ, host bandwidth (caps the window)."""

    gamma: float = Field(0.9, gt=0, le=1, description="EWMA weight of the window update")
    beta: float | None = Field(None, gt=0, le=100000,
                               description="additive increase, segments; default "
                                           "host_bw·τ/expected_flows/mss")
    expected_flows: int = Field(10, ge=1, le=100000)
    base_rtt_us: int | Literal["probe"] = Field(
        0, description="τ in µs; 0 = the socket's min RTT plus a frame at host_bw; probe = "
                       "measured on the idle paths before the workload (the runner, "
                       "testbed/network/base_rtt.py)")
    host_bw_mbps: int = Field(1000, ge=1, le=1_000_000)
    trace_interval_us: int = Field(0, ge=0, le=10_000_000,
                                   description="at most one trace event per flow per "
                                               "interval; 0 = every update")
    min_cwnd: int = Field(1, ge=1, le=1000,
                          description="snd_cwnd floor, segments; 1 needs receivers with "
                                      "quick ACKs (hosts.quickack), 2 for delayed ACKs")

    @field_validator("base_rtt_us", mode="before")
    @classmethod
    def _tau(cls, v: Any) -> Any:
        if v == "probe" or (isinstance(v, int) and not isinstance(v, bool)
                            and 0 <= v <= 10_000_000):
            return v
        raise ValueError("τ in µs, 0..10000000 (0: the socket's min RTT plus a frame at "
                         f"host_bw), or probe; got {v!r}")


class PowerTCPParams(ThetaPowerTCPParams):
    """PowerTCP (INT): as θ, plus the bandwidth of the hops reporting telemetry."""

    hop_bw_mbps: int = Field(1000, ge=0, le=1_000_000,
                             description="bandwidth of the telemetry-reporting hop; "
                                         "0 = the LinkSpeed it reports")


_TRACE = Field(0, ge=0, le=10_000_000, description="at most one trace event per flow per "
                                                   "interval; 0 = every update")


class DctcpParams(CCParams):
    """DCTCP (RFC 8257): α ← (1 − g)·α + g·F once per window; cut cwnd·(1 − α/2)."""

    g: float = Field(1 / 16, gt=0, le=1, description="EWMA gain of α")
    alpha_init: float = Field(1.0, ge=0, le=1, description="α of a new connection")
    min_cwnd: int = Field(2, ge=1, le=1000, description="window floor, segments")
    trace_interval_us: int = _TRACE


class HpccParams(CCParams):
    """HPCC over TCP-INT: η, maxStage, W_AI (or N), T, host and hop bandwidth."""

    eta: float = Field(0.95, gt=0, le=1, description="target utilization η")
    max_stage: int = Field(5, ge=0, le=1000, description="additive steps before a "
                                                         "multiplicative one (maxStage)")
    w_ai: float | None = Field(None, gt=0, le=100000,
                               description="additive increase W_AI, segments; default "
                                           "W_init·(1−η)/expected_flows")
    expected_flows: int = Field(10, ge=1, le=100000, description="N of the default W_AI")
    base_rtt_us: int = Field(0, ge=0, le=10_000_000,
                             description="T in µs; 0 = the socket's min RTT")
    host_bw_mbps: int = Field(1000, ge=1, le=1_000_000,
                              description="W_init = host_bw·T, also the window's cap")
    hop_bw_mbps: int = Field(1000, ge=0, le=1_000_000,
                             description="B of the reporting hop; 0 = its LinkSpeed code")
    min_cwnd: int = Field(1, ge=1, le=1000,
                          description="snd_cwnd floor, segments (PowerTCP's: 1, with "
                                      "receivers that ACK at once)")
    trace_interval_us: int = _TRACE


class TimelyParams(CCParams):
    """TIMELY: thresholds scaled to this testbed's RTTs (docs/powertcp.md)."""

    t_low_us: int = Field(500, ge=1, le=10_000_000, description="T_low: below it, += δ")
    t_high_us: int = Field(5000, ge=1, le=10_000_000,
                           description="T_high: above it, a cut by T_high/rtt")
    delta_mbps: float = Field(1.0, gt=0, le=100000, description="additive step δ, Mb/s")
    beta: float = Field(0.8, gt=0, le=1, description="multiplicative decrease β")
    alpha: float = Field(0.875, gt=0, le=1, description="EWMA weight of the RTT difference")
    hai_after: int = Field(5, ge=1, le=1000, description="gradients ≤ 0 in a row before "
                                                        "hyperactive increase")
    hai_n: int = Field(5, ge=1, le=1000, description="HAI step, in δ")
    base_rtt_us: int = Field(0, ge=0, le=10_000_000,
                             description="min RTT normalizing the gradient; 0 = the "
                                         "socket's min RTT")
    host_bw_mbps: int = Field(1000, ge=1, le=1_000_000,
                              description="the initial and the largest rate")
    min_rate_mbps: float = Field(1.0, gt=0, le=1_000_000)
    trace_interval_us: int = _TRACE

    @model_validator(mode="after")
    def _order(self) -> "TimelyParams":
        if self.t_low_us >= self.t_high_us:
            raise ValueError("t_low_us must be below t_high_us")
        return self


@dataclass(frozen=True)
class CCKind:
    """What the configuration knows of an eBPF CC: its parameters and what it needs."""

    params: type[CCParams]
    needs_int: bool = False     # reads TCP-INT's per-socket state
    receiver: bool = False      # receivers run it too (DCTCP's exact CE echo)
    ecn: bool = False           # negotiates ECN (TCP_CONG_NEEDS_ECN; senders' tcp_ecn=1)


# Every eBPF CC by the name flows use in `cc:`; its program: testbed/bpf/cc.py EBPF_CCS.
EBPF_CC_KINDS: dict[str, CCKind] = {
    "powertcp": CCKind(PowerTCPParams, needs_int=True),
    "theta_powertcp": CCKind(ThetaPowerTCPParams),
    "dctcp": CCKind(DctcpParams, receiver=True, ecn=True),
    "hpcc": CCKind(HpccParams, needs_int=True),
    "timely": CCKind(TimelyParams),
}
CongestionControl = section("CongestionControl", "eBPF congestion control",
                            {n: k.params for n, k in EBPF_CC_KINDS.items()},
                            "`congestion_control:` — eBPF CC name → its parameters.")


# --- claims (`expect:`; judged by testbed/claims.py) -------------------------------------


# Metrics `python -m testbed compare` judges between two runs (testbed/results/compare.py);
# an `expect:` entry {metric: NAME, tolerance: REL} sets how far one may move.
COMPARE_METRICS = ("goodput_mbps", "queue_p50_bytes", "queue_p99_bytes", "drain_ms", "jain",
                   "retransmits", "hop_latency_p50_us", "int_hop_latency_p50_us")


class Claim(Model):
    """Base of every claim kind: the CC it judges and the bottleneck it reads."""

    cc: str = "powertcp"
    iface: str | None = None          # "node:iface" of the bottleneck; default: the busiest
    ci: bool = False                  # part of the small CI subset


class QueuePeakRatio(Claim):
    claim: Literal["queue_peak_ratio"] = "queue_peak_ratio"
    baseline: str = "cubic"
    max_ratio: float = Field(0.25, gt=0)


class QueueDrains(Claim):
    claim: Literal["queue_drains"] = "queue_drains"
    within_rtts: float = Field(10, gt=0)
    near_zero_bytes: int = Field(2 * units.FRAME_BYTES, ge=0)
    base_rtt_us: float | None = Field(None, gt=0)
    # base: τ (the configured base RTT); measured: the median RTT the CC itself saw
    # (cc_trace.csv rtt_us) while the queue drained — on emulated links τ is a chosen
    # number and the RTT during a burst is set by the queue and the CPU, not by τ.
    rtt: Literal["base", "measured"] = "base"


class Utilization(Claim):
    claim: Literal["utilization"] = "utilization"
    min: float = Field(0.9, gt=0, le=1)
    rate_mbps: float | None = Field(None, gt=0)
    skip_s: float = Field(0.0, ge=0)   # ignore this long after the burst starts


class Fairness(Claim):
    claim: Literal["fairness"] = "fairness"
    min_jain: float = Field(0.95, gt=0, le=1)
    within_rtts: float = Field(20, gt=0)
    base_rtt_us: float | None = Field(None, gt=0)
    min_window_s: float = Field(0.0, ge=0)  # ignore intervals shorter than this


class DrainTimeRatio(Claim):
    """`cc` drains its post-burst peak no slower than `baseline` (× max_ratio). A queue
    whose peak is already near zero drains in 0 s. Sampling gaps wider than the slower
    drain leave the order unresolved (N/A)."""

    claim: Literal["drain_time_ratio"] = "drain_time_ratio"
    baseline: str = "hpcc"
    max_ratio: float = Field(1.0, gt=0)
    near_zero_bytes: int = Field(2 * units.FRAME_BYTES, ge=0)


class StandingQueue(Claim):
    """`cc`'s median queue over [t_from, t_to] (default: 0.5 s until the burst, or the
    end) is within ±tolerance of `near` (packets or bytes, like a queue limit)."""

    claim: Literal["standing_queue"] = "standing_queue"
    near: QueueLimit                       # 20 (packets) or '30KB'
    tolerance: float = Field(0.5, gt=0, le=10)
    t_from: float = Field(0.5, ge=0)
    t_to: float | None = Field(None, gt=0)


class NoobClaim(Claim):
    """A claim on the per-hop RTT samples of noobprobe.csv: it judges the points that
    probed (or the one named by `point`), whatever their CC."""
    cc: str | None = None             # type: ignore[assignment]
    point: str | None = None          # one point by name; default: every point that probed


class OneHopQueue(NoobClaim):
    """N1: hop `hop` is the first behind the congested queue."""
    claim: Literal["one_hop_queue"] = "one_hop_queue"
    hop: int = Field(ge=2)
    min_rise_ms: float = Field(1.0, ge=0)
    flat_iqr_ms: float = Field(0.5, gt=0)
    osc_factor: float = Field(5.0, gt=0)
    after_ms: float = Field(0.5, gt=0)
    hop_prop_ms: float = Field(0.0, ge=0)   # RTT each hop adds by propagation (WAN variants)


class RouteChange(NoobClaim):
    """N2: the path changes at `at` s; hop `hop` is the first router that differs."""
    claim: Literal["route_change"] = "route_change"
    at: float = Field(gt=0)
    hop: int = Field(ge=1)
    settle: float = Field(0.5, ge=0)
    min_rise_ms: float = Field(1.0, ge=0)
    silent_max: float = Field(0.2, ge=0, le=1)
    answered_min: float = Field(0.8, ge=0, le=1)
    prop_rise_ms: float = Field(0.0, ge=0)  # RTT the new path adds by propagation alone


class EcmpPaths(NoobClaim):
    """N3: one path (hop-`hop` responder) per flow, several paths, per-path throughput
    distributions that differ (KS 2-sample test, p < alpha)."""
    claim: Literal["ecmp_paths"] = "ecmp_paths"
    hop: int = Field(2, ge=1)
    alpha: float = Field(0.01, gt=0, lt=1)
    min_probes: int = Field(3, ge=1)
    slack: float = Field(0.2, ge=0)


class NoOverhead(NoobClaim):
    """N4: throughput with and without noobprobe (a sweep over
    `instruments.noobprobe.enabled`) does not differ significantly."""
    claim: Literal["no_overhead"] = "no_overhead"
    alpha: float = Field(0.05, gt=0, lt=1)
    min_ratio: float = Field(0.97, gt=0)


class MetricTolerance(Model):
    """`expect:` entry for `compare`: the relative change of `metric` (or every metric:
    "*") against the base run that still passes, e.g. 0.1 = 10 %."""
    metric: str
    tolerance: float = Field(gt=0)

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in COMPARE_METRICS + ("*",):
            raise ValueError(f"unknown metric {v!r} (compare metrics: "
                             f"{', '.join(COMPARE_METRICS)}, or *)")
        return v


# Every claim kind; its judge is registered in testbed/claims.py under the same class.
CLAIM_KINDS: tuple[type[Claim], ...] = (
    QueuePeakRatio, QueueDrains, Utilization, Fairness, DrainTimeRatio, StandingQueue,
    OneHopQueue, RouteChange, EcmpPaths, NoOverhead)
CLAIMS: dict[str, type[Claim]] = {c.model_fields["claim"].default: c for c in CLAIM_KINDS}


def _expect_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        return "metric" if "metric" in v else v.get("claim")
    return "metric" if isinstance(v, MetricTolerance) else getattr(v, "claim", None)


_CLAIM_TAGS = tuple(Annotated[c, Tag(n)] for n, c in CLAIMS.items())
_UNKNOWN = f"unknown claim (claims: {', '.join(CLAIMS)}"
ClaimSpec = Annotated[Union[_CLAIM_TAGS],  # type: ignore[valid-type]
                      Discriminator(_expect_tag, custom_error_type="claim_kind",
                                    custom_error_message=_UNKNOWN + ")")]
# An `expect:` entry: a claim kind by its `claim:`, or a compare tolerance by its `metric:`.
_EXPECT_TAGS = (*_CLAIM_TAGS, Annotated[MetricTolerance, Tag("metric")])
Expectation = Annotated[Union[_EXPECT_TAGS],  # type: ignore[valid-type]
                        Discriminator(_expect_tag, custom_error_type="claim_kind",
                                      custom_error_message=_UNKNOWN + "; or a compare "
                                      "tolerance {metric:, tolerance:})")]


class Experiment(Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    scale: str = ""          # the emulated scale, stated on every plot
    topology: TopologyRef
    duration: Duration = Field(gt=0, le=3600)
    settle: Duration = 0.5   # wait after the workload ends, for late reports
    cc: str = "cubic"
    congestion_control: CongestionControl = Field(  # type: ignore[valid-type]
        default_factory=CongestionControl)           # eBPF CC parameters, by CC
    tcp_int: IntOptions = Field(default_factory=IntOptions, alias="int")  # docs/tcp-int.md
    hosts: HostDefaults = HostDefaults()
    emulation: EmulationOptions = EmulationOptions()
    workload: Workload = Workload()
    instruments: Instruments = Field(default_factory=Instruments)  # type: ignore[valid-type]
    sweep: dict[str, list[Any]] = {}
    repetitions: int = Field(1, ge=1, le=1000)
    expect: list[Expectation] = []
    # needs a stock kernel (netem, AQMs, dctcp): `run` boots the stock-kernel VM for it
    # (python -m testbed vm), `validate` leaves the kernel's features to the guest;
    # `vm: {icount: N}` also keeps the guest's clock off the host's (VmSpec)
    vm: VmSpec | bool = False

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
        if isinstance(v, list):  # `instruments: [queue, flows]`
            if not all(isinstance(n, str) for n in v):
                raise ValueError("a list of instrument names, or a mapping name → options")
            return {n: {} for n in v}
        return {k: ({} if x is None else x) for k, x in v.items()} if isinstance(v, dict) else v
