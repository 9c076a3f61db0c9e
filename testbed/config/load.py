"""From files to validated, typed configuration — the edge where bad input stops.

Functions:
- load_topology(path | Source) → TopologySpec
- load_experiment(path, sets) → Plan: the experiment, its topology and every sweep point,
  each point validated before anything starts.
Every failure is one ConfigError: `file:line: key: what is wrong (and the fix)`.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .models import Experiment, TopologySpec
from .yamlsrc import Source, apply_sets, load_source, parse_text


MAX_POINTS = 10_000   # sweep points × repetitions of one experiment


# --- pydantic errors → one line with file and line -------------------------------

def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Keep the parts of a pydantic location that are real keys/indices of the data."""
    out, cur = [], data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            out.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and isinstance(part, (str, int)) and not isinstance(cur, list):
            out.append(part)  # e.g. the unknown key itself
    return tuple(out)


def _model_at(model: Any, path: tuple) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at `path`."""
    t: Any = model
    for part in path:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            f = t.model_fields.get(part) or next(
                (f for f in t.model_fields.values() if f.alias == part), None) \
                if isinstance(part, str) else None
            if f is None:
                return None
            t = f.annotation
        else:
            args = typing.get_args(t)
            origin = typing.get_origin(t)
            if origin in (dict, typing.Dict) and len(args) == 2:
                t = args[1]
            elif origin in (list, tuple) and args:
                t = args[0]
            else:
                return None
    t = _unwrap(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            models = [a for a in typing.get_args(t)
                      if isinstance(a, type) and issubclass(a, BaseModel)]
            others = [a for a in typing.get_args(t) if a is not type(None)]
            t = models[0] if models else (others[0] if others else t)
            if not models:
                return t
        else:
            return t


def _keypath(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def config_error(e: ValidationError, src: Source, model: Any, prefix: tuple = ()) -> ConfigError:
    """The first error of a validation, named by file, line and key.

    An unknown key comes first: `duraton: 2` is better reported as a misspelling of
    `duration` than as `duration` missing."""
    errs = e.errors()
    err = next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])
    sub = src.data
    for p in prefix:
        sub = sub[p]
    loc = prefix + _clean_loc(tuple(err["loc"]), sub)
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        m = _model_at(model, loc[len(prefix):-1])
        valid = sorted(f.alias or n for n, f in m.model_fields.items()) if m else []
        close = difflib.get_close_matches(str(key), valid, n=1)
        msg = f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
            (f" (valid: {', '.join(valid)})" if valid and not close else "")
    elif err["type"] == "missing":
        msg = f"missing required key {loc[-1]!r}"
    return error_at(src, loc, msg)


def validate(model: type[BaseModel], src: Source, prefix: tuple = ()) -> Any:
    data = src.data
    for p in prefix:
        data = data[p]
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise config_error(e, src, model, prefix) from None


def error_at(src: Source, loc: tuple, msg: str) -> ConfigError:
    """An error at a key path: its line, or the `--set` that gave the value."""
    line = src.line_of(loc)
    given = src.set_of(loc) if line == 0 else None
    if given:
        msg = f"{msg} (from --set {given})"
    return ConfigError(msg, src.file, line or None, _keypath(loc) or None)


# --- topology --------------------------------------------------------------------

def load_topology(path_or_src: str | Path | Source) -> TopologySpec:
    src = path_or_src if isinstance(path_or_src, Source) else load_source(path_or_src)
    if not isinstance(src.data, dict):
        raise ConfigError("a topology file is a mapping (hosts:, links:, …)", src.file, 1)
    return validate(TopologySpec, src)


def _resolve_topology(exp: Experiment, src: Source) -> TopologySpec:
    from ..topology import builtins

    ref = exp.topology
    if ref.builtin:
        try:
            return builtins.build(ref.builtin, ref.params)
        except builtins.BuiltinError as e:
            loc = ("topology",) + ((e.key,) if e.key else ())
            raise error_at(src, loc, e.message) from None
    if ref.inline is not None:
        return validate(TopologySpec, src, ("topology",))
    path = Path(ref.file)
    if not path.is_absolute():
        path = Path(src.file).parent / path
    if not path.exists():
        raise error_at(src, ("topology",), f"topology file {ref.file} not found "
                       f"(paths are relative to the experiment file)")
    tsrc = load_source(path)
    if ref.overrides:
        apply_sets(tsrc, [f"{k}={_yaml(v)}" for k, v in ref.overrides.items()])
    return load_topology(tsrc)


def _yaml(v: Any) -> str:
    import yaml
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


# --- experiments -----------------------------------------------------------------

@dataclass
class Point:
    """One sweep point: its name, the values it sets and its validated configuration."""

    name: str
    values: dict[str, Any]
    experiment: Experiment
    topology: TopologySpec
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class Plan:
    file: str
    experiment: Experiment
    points: list[Point]


def _point_name(values: dict[str, Any]) -> str:
    if not values:
        return "default"
    short = [k.split(".")[-1] for k in values]
    # the key's last word names the directory, unless two swept keys share it
    parts = [f"{k if short.count(k.split('.')[-1]) > 1 else k.split('.')[-1]}={v}"
             for k, v in values.items()]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def _check_point(exp: Experiment, topo: TopologySpec, src: Source) -> None:
    """Cross-checks that need both the experiment and its topology."""
    from ..network import features

    hosts = set(topo.hosts)
    w = exp.workload
    for i, f in enumerate(w.flows):
        for k in ("src", "dst"):
            n = getattr(f, k)
            if n not in hosts:
                raise error_at(src, ("workload", "flows", i, k), _unknown_host(n, hosts))
    for i, b in enumerate(w.incast):
        for n in b.senders + [b.dst]:
            if n not in hosts:
                raise error_at(src, ("workload", "incast", i), _unknown_host(n, hosts))
    for i, c in enumerate(w.commands):
        if c.host not in topo.hosts and c.host not in topo.switches and \
                c.host not in topo.routers:
            raise error_at(src, ("workload", "commands", i, "host"), _unknown_host(c.host, hosts))
    if not topo.ipv6:
        for key, items in (("flows", w.flows), ("incast", w.incast)):
            for i, f in enumerate(items):
                if f.ipv6:
                    raise error_at(src, ("workload", key, i, "ipv6"),
                                   "the topology has no IPv6 addresses: set the "
                                   "topology's `ipv6: true` or drop the flow's `ipv6`")
    every = set(topo.hosts) | set(topo.switches) | set(topo.routers)
    for name, opts in exp.instruments.items():   # instruments that take nodes (queue, pcap)
        for j, n in enumerate(getattr(opts, "nodes", None) or []):
            if n not in every:
                close = difflib.get_close_matches(n, sorted(every), n=1)
                raise error_at(src, ("instruments", name, "nodes", j), f"unknown node {n!r}" +
                               (f"; did you mean {close[0]!r}?" if close else
                                f" (nodes: {', '.join(sorted(every))})"))
    # interface names as the topology graph makes them: <node>-eth<i>, in link order
    seen: dict[str, int] = {}
    ifaces = set()
    for l in topo.links:
        for n in l.ends:
            ifaces.add(f"{n}-eth{seen.get(n, 0)}")
            seen[n] = seen.get(n, 0) + 1
    for name, opts in exp.instruments.items():   # queue's ports, pcap's interfaces
        for key in ("ports", "interfaces"):
            for j, i in enumerate(getattr(opts, key, None) or []):
                if isinstance(i, str) and i not in ifaces:
                    close = difflib.get_close_matches(i, sorted(ifaces), n=1)
                    raise error_at(src, ("instruments", name, key, j),
                                   f"no interface {i!r} in the topology" +
                                   (f"; did you mean {close[0]!r}?" if close else
                                    " (interfaces are named <node>-eth<i> in link order)"))
    links = {frozenset(l.ends) for l in topo.links}
    for i, ev in enumerate(w.events):
        if ev.link and frozenset(ev.link) not in links:
            raise error_at(src, ("workload", "events", i, "link"),
                           f"no link {ev.link[0]}-{ev.link[1]} in the topology")
        if ev.node and ev.node not in topo.routers and ev.node not in topo.hosts:
            raise error_at(src, ("workload", "events", i, "node"),
                           f"{ev.node} is not a router or host of the topology")
    for i, f in enumerate(w.flows):
        end = f.start + (f.duration or 0)
        if f.start >= exp.duration or end > exp.duration + 1e-9:
            raise error_at(src, ("workload", "flows", i),
                           f"flow runs past the experiment's duration ({exp.duration:g} s)")
    for name, sw in {**topo.switches, **topo.routers}.items():
        if sw.backend == "bmv2":
            from ..network.backends import available_backends
            ok, why = available_backends().get("bmv2", (False, "not implemented"))
            if not ok:
                raise error_at(src, ("topology",), f"switch {name}: backend bmv2 unavailable: {why}")
    # Delay/loss need netem: refuse rather than silently drop them (Mininet would).
    for i, link in enumerate(topo.links):
        lp = topo.link_params(link)
        if lp.ecn_mark is not None and lp.bw is None:
            raise error_at(src, ("topology",),
                           f"link {link.ends[0]}-{link.ends[1]}: ecn_mark needs bw (marking "
                           f"reads the shaped egress queue; an unshaped veth never queues)")
        needs = lp.needs_netem()
        if needs and not features.has_qdisc("netem"):
            raise error_at(src, ("topology",),
                           f"link {link.ends[0]}-{link.ends[1]}: {', '.join(needs)} needs "
                           f"netem, which this kernel lacks (CONFIG_NET_SCH_NETEM); remove "
                           f"{'/'.join(needs)} or run on a kernel with netem")


def _unknown_host(n: str, hosts: set[str]) -> str:
    close = difflib.get_close_matches(n, sorted(hosts), n=1)
    return f"unknown host {n!r}" + (f"; did you mean {close[0]!r}?" if close else
                                    f" (hosts: {', '.join(sorted(hosts))})")


def _validate_sections(exp: Experiment, src: Source) -> None:
    """Sections whose schema belongs to a plug-in (instruments, INT, eBPF CCs)."""
    from ..instruments.base import load_all

    registry = load_all()
    for name in exp.instruments:
        if name not in registry:
            close = difflib.get_close_matches(name, list(registry), n=1)
            raise error_at(src, ("instruments", name), f"unknown instrument {name!r}" +
                           (f"; did you mean {close[0]!r}?" if close else
                            f" (known: {', '.join(sorted(registry))})"))
    given = src.data.get("instruments")
    for name, opts in list(exp.instruments.items()):
        if isinstance(given, dict) and isinstance(given.get(name), dict):
            exp.instruments[name] = validate(registry[name].Options, src, ("instruments", name))
        else:  # list form or empty value: the defaults
            exp.instruments[name] = registry[name].Options.model_validate(opts or {})
    try:
        from ..network.tcpint import IntOptions
    except ImportError:
        IntOptions = None
    if IntOptions is not None:
        if "int" in src.data:
            exp.tcp_int = validate(IntOptions, src, ("int",))
        else:
            exp.tcp_int = IntOptions()
    try:
        from ..bpf import cc as ccmod
    except ImportError:
        ccmod = None
    params = {n: e.params for n, e in getattr(ccmod, "EBPF_CCS", {}).items()} if ccmod else {}
    for name in list(exp.congestion_control):
        if name not in params:
            close = difflib.get_close_matches(name, list(params), n=1)
            raise error_at(src, ("congestion_control", name),
                           f"no eBPF congestion control {name!r}" +
                           (f"; did you mean {close[0]!r}?" if close else
                            f" (have: {', '.join(sorted(params)) or 'none'})"))
        exp.congestion_control[name] = validate(params[name], src, ("congestion_control", name))


def _check_expect(exp: Experiment, src: Source) -> None:
    """Claims (`expect:`) are validated here, so a bad one names its line."""
    if not exp.expect:
        return
    from ..claims import parse_expect
    for i, item in enumerate(exp.expect):
        try:
            parse_expect([item])
        except ConfigError as e:
            raise error_at(src, ("expect", i), e.message) from None


def _known_ccs() -> set[str]:
    kernel = set()
    try:
        kernel = set(Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
                     .read_text().split())
    except OSError:
        pass
    try:
        from ..bpf import cc as ccmod
        kernel |= set(getattr(ccmod, "EBPF_CCS", {}))
    except ImportError:
        pass
    return kernel


def _check_ccs(exp: Experiment, src: Source) -> None:
    known = _known_ccs()
    if not known:
        return
    used = [(("cc",), exp.cc)]
    used += [(("workload", "flows", i, "cc"), f.cc) for i, f in enumerate(exp.workload.flows)]
    used += [(("workload", "incast", i, "cc"), b.cc) for i, b in enumerate(exp.workload.incast)]
    for loc, cc in used:
        if cc and cc not in known:
            close = difflib.get_close_matches(cc, sorted(known), n=1)
            raise error_at(src, loc, f"unknown congestion control {cc!r}" +
                           (f"; did you mean {close[0]!r}?" if close else
                            f" (available: {', '.join(sorted(known))})"))


def load_experiment(path: str | Path, sets: list[str] | None = None,
                    text: str | None = None) -> Plan:
    src = parse_text(text, str(path)) if text is not None else load_source(path)
    if not isinstance(src.data, dict):
        raise ConfigError("an experiment file is a mapping (name:, topology:, …)", src.file, 1)
    apply_sets(src, sets or [])
    base = validate(Experiment, src)
    keys = list(base.sweep)
    n = math.prod(len(v) for v in base.sweep.values()) * base.repetitions
    if n > MAX_POINTS:
        loc = ("sweep",) if len(keys) else ("repetitions",)
        raise error_at(src, loc, f"{n} runs (sweep points × repetitions), more than "
                       f"{MAX_POINTS}: sweep fewer values or split the experiment")
    combos = list(itertools.product(*(base.sweep[k] for k in keys))) or [()]
    points: list[Point] = []
    for combo in combos:
        values = dict(zip(keys, combo))
        psrc = Source(src.file, copy.deepcopy(src.data), dict(src.lines), dict(src.sets))
        for k, v in values.items():
            apply_sets(psrc, [f"{k}={_yaml(v)}"])
            # a swept value's errors point at the sweep line
            psrc.lines[tuple(int(p) if p.isdigit() else p for p in k.split("."))] = \
                src.line_of(("sweep", k)) or 0
        exp = validate(Experiment, psrc)
        topo = _resolve_topology(exp, psrc)
        _validate_sections(exp, psrc)
        _check_ccs(exp, psrc)
        _check_expect(exp, psrc)
        _check_point(exp, topo, psrc)
        for rep in range(exp.repetitions):
            name = _point_name(values) + (f",rep={rep}" if exp.repetitions > 1 else "")
            points.append(Point(name, {**values, **({"rep": rep} if exp.repetitions > 1 else {})},
                                exp, topo, psrc.data))
    return Plan(str(path), base, points)


def validate_file(path: str | Path, sets: list[str] | None = None) -> str:
    """The whole check of one file, as `validate` and `run` make it; a one-line summary."""
    src = load_source(path)
    if isinstance(src.data, dict) and "topology" not in src.data and \
            ("hosts" in src.data or "links" in src.data):
        if sets:
            apply_sets(src, sets)
        spec = load_topology(src)
        from ..topology.graph import Graph, TopologyError
        try:
            Graph(spec)
        except TopologyError as e:
            raise ConfigError(str(e), src.file, 1) from None
        return f"ok (topology: {len(spec.hosts)} hosts, {len(spec.links)} links)"
    plan = load_experiment(path, sets)
    return f"ok ({len(plan.points)} point(s))"
