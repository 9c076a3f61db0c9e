"""Built-in topologies, each a function of a few parameters returning a TopologySpec.

- dumbbell: N pairs across two switches joined by a bottleneck link.
- incast: N senders and one receiver h0 on one switch; the bottleneck is s1 → h0.
- chain: h1 — r1 — … — rN — h2, a multi-hop routed "WAN"; one hop may be slower.
- leafspine: routers as leaves and spines, hosts on leaves, ECMP over the spines.

Rates are Mb/s, queues packets (or sizes like '64KB'), as in topology files.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config.models import EcnMark, QueueLimit, Rate, TopologySpec


class BuiltinError(ValueError):
    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.message, self.key = message, key


MAX_HOSTS = 256  # bring-up measured linear up to here (bench/bringup.py, docs/scale.md)


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bw: Rate = 1000.0                  # every link, Mb/s
    queue: QueueLimit | None = None    # every shaped egress FIFO (default 1000 packets)
    ipv6: bool = True
    backend: Literal["kernel", "bmv2"] = "kernel"   # of every switch and router


class DumbbellParams(_P):
    pairs: int = Field(2, ge=1, le=128)
    bottleneck_bw: Rate | None = None
    bottleneck_queue: QueueLimit | None = None
    bottleneck_ecn_mark: EcnMark | None = None   # CE marking at the bottleneck's egress


class IncastParams(_P):
    senders: int = Field(10, ge=1, le=255)
    bottleneck_bw: Rate | None = None  # s1 → h0; default: bw
    bottleneck_queue: QueueLimit | None = None
    bottleneck_ecn_mark: EcnMark | None = None   # CE marking at the bottleneck's egress


class ChainParams(_P):
    routers: int = Field(4, ge=1, le=32)
    hosts: int = Field(1, ge=1, le=16)  # per end
    bottleneck: int | None = Field(None, ge=1)  # 1-based index of the router-router hop
    bottleneck_bw: Rate | None = None
    bottleneck_queue: QueueLimit | None = None
    bottleneck_ecn_mark: EcnMark | None = None   # CE marking at the bottleneck's egress


class LeafSpineParams(_P):
    leaves: int = Field(2, ge=2, le=16)
    spines: int = Field(2, ge=1, le=16)
    hosts_per_leaf: int = Field(2, ge=1, le=128)

    @model_validator(mode="after")
    def _at_most_256_hosts(self) -> "LeafSpineParams":
        if self.leaves * self.hosts_per_leaf > MAX_HOSTS:
            raise ValueError(f"leaves × hosts_per_leaf = {self.leaves * self.hosts_per_leaf} "
                             f"hosts; at most {MAX_HOSTS} (fewer hosts_per_leaf)")
        return self


def _q(q: QueueLimit | None) -> Any:
    return None if q is None else q.model_dump(exclude_none=True)


def _spec(p: _P, name: str, hosts: list[str], switches: list[str], routers: list[str],
          links: list[dict]) -> TopologySpec:
    d: dict[str, Any] = {"name": name, "ipv6": p.ipv6,
                         "defaults": {"link": {"bw": p.bw, **({"queue": _q(p.queue)}
                                                              if p.queue else {})}},
                         "hosts": hosts,
                         "switches": {s: {"backend": p.backend} for s in switches},
                         "routers": {r: {"backend": p.backend} for r in routers},
                         "links": links}
    return TopologySpec.model_validate(d)


def _bn(link: dict, bw: float | None, q: QueueLimit | None,
        mark: EcnMark | None = None) -> dict:
    if bw is not None:
        link["bw"] = bw
    if q is not None:
        link["queue"] = _q(q)
    if mark is not None:
        link["ecn_mark"] = mark.model_dump(exclude_none=True)
    return link


def dumbbell(p: DumbbellParams) -> TopologySpec:
    left = [f"h{i}" for i in range(1, p.pairs + 1)]
    right = [f"h{i}" for i in range(p.pairs + 1, 2 * p.pairs + 1)]
    links = [{"ends": [h, "s1"]} for h in left] + [{"ends": [h, "s2"]} for h in right]
    links.append(_bn({"ends": ["s1", "s2"]}, p.bottleneck_bw, p.bottleneck_queue,
                     p.bottleneck_ecn_mark))
    return _spec(p, "dumbbell", left + right, ["s1", "s2"], [], links)


def incast(p: IncastParams) -> TopologySpec:
    senders = [f"h{i}" for i in range(1, p.senders + 1)]
    links = [_bn({"ends": ["s1", "h0"]}, p.bottleneck_bw, p.bottleneck_queue,
                 p.bottleneck_ecn_mark)]
    links += [{"ends": [h, "s1"]} for h in senders]
    return _spec(p, "incast", ["h0"] + senders, ["s1"], [], links)


def chain(p: ChainParams) -> TopologySpec:
    if p.bottleneck is not None and p.bottleneck >= p.routers:
        raise BuiltinError(f"bottleneck is the index of a router-router hop, 1..{p.routers - 1}",
                           "bottleneck")
    routers = [f"r{i}" for i in range(1, p.routers + 1)]
    left = [f"h{i}" for i in range(1, p.hosts + 1)]
    right = [f"h{i}" for i in range(p.hosts + 1, 2 * p.hosts + 1)]
    links = [{"ends": [h, "r1"]} for h in left]
    for i in range(1, p.routers):
        link = {"ends": [f"r{i}", f"r{i + 1}"]}
        if p.bottleneck == i:
            _bn(link, p.bottleneck_bw, p.bottleneck_queue, p.bottleneck_ecn_mark)
        links.append(link)
    links += [{"ends": [h, routers[-1]]} for h in right]
    return _spec(p, "chain", left + right, [], routers, links)


def leafspine(p: LeafSpineParams) -> TopologySpec:
    leaves = [f"l{i}" for i in range(1, p.leaves + 1)]
    spines = [f"sp{i}" for i in range(1, p.spines + 1)]
    hosts, links = [], []
    for li, leaf in enumerate(leaves):
        for k in range(p.hosts_per_leaf):
            h = f"h{li * p.hosts_per_leaf + k + 1}"
            hosts.append(h)
            links.append({"ends": [h, leaf]})
    links += [{"ends": [leaf, sp]} for leaf in leaves for sp in spines]
    return _spec(p, "leafspine", hosts, [], leaves + spines, links)


BUILTINS: dict[str, tuple[type[_P], Callable[[Any], TopologySpec]]] = {
    "dumbbell": (DumbbellParams, dumbbell),
    "incast": (IncastParams, incast),
    "chain": (ChainParams, chain),
    "leafspine": (LeafSpineParams, leafspine),
}


def build(name: str, params: dict[str, Any]) -> TopologySpec:
    if name not in BUILTINS:
        close = difflib.get_close_matches(name, list(BUILTINS), n=1)
        raise BuiltinError(f"unknown builtin topology {name!r}" +
                           (f"; did you mean {close[0]!r}?" if close else
                            f" (have: {', '.join(BUILTINS)})"), "builtin")
    model, fn = BUILTINS[name]
    try:
        p = model.model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            msg = f"unknown parameter {key!r} of builtin {name}" + \
                (f"; did you mean {close[0]!r}?" if close else
                 f" (valid: {', '.join(model.model_fields)})")
        raise BuiltinError(msg, key) from None
    return fn(p)
