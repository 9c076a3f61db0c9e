"""From files to validated, typed configuration — the edge where bad input stops.

Functions:
- load_topology(path | Source) → TopologySpec
- load_experiment(path, sets) → Plan: the experiment, its topology and every sweep point,
  each point validated before anything starts (testbed.preflight adds the checks of the
  components and this machine: what `validate` and `run` use).
Every failure is one ConfigError: `file:line: key: what is wrong (and the fix)`.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from . import checks
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
        elif i == len(loc) - 1 and isinstance(part, (str, int)) and \
                not isinstance(cur, (list, str, int, float, bool)):
            out.append(part)  # e.g. the unknown key itself (a scalar has no keys: a
            #                   union's tag named like its field is not one)
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
        what = getattr(m, "what", "key")   # a plug-in section names its kind of key
        msg = f"unknown {what} {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
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
    origin = src.origin_of(loc) if line == 0 else None
    if origin:   # set by --set, a sweep or a topology's overrides: name where
        what, ofile, oline = origin
        return ConfigError(f"{msg} (from {what})", ofile or src.file, oline,
                           _keypath(loc) or None)
    return ConfigError(msg, src.file, line or None, _keypath(loc) or None)


# --- topology --------------------------------------------------------------------

def load_topology(path_or_src: str | Path | Source) -> TopologySpec:
    """A topology file, validated and checked as a graph (loops, addresses, names)."""
    src = path_or_src if isinstance(path_or_src, Source) else load_source(path_or_src)
    spec = _topology_spec(src)
    build_graph(spec, src, ())
    return spec


def _topology_spec(src: Source, prefix: tuple = ()) -> TopologySpec:
    data = src.data
    for p in prefix:
        data = data[p]
    if not isinstance(data, dict):
        raise error_at(src, prefix, "a topology is a mapping (hosts:, links:, …)")
    return validate(TopologySpec, src, prefix)


def build_graph(spec: TopologySpec, src: Source, prefix: tuple | None):
    """The topology's graph; a TopologyError names its key's line (a built-in's: the
    experiment's `topology:` line, prefix None)."""
    from ..topology.graph import Graph, TopologyError
    try:
        return Graph(spec)
    except TopologyError as e:
        raise error_at(src, ("topology",) if prefix is None else prefix + e.loc,
                       e.message) from None


def _resolve_topology(exp: Experiment, src: Source) -> tuple[TopologySpec, Source, tuple | None]:
    """The point's topology, the source holding its keys and their path there (None for
    a built-in: errors name the experiment's `topology:` line)."""
    from ..topology import builtins

    ref = exp.topology
    if ref.builtin:
        try:
            return builtins.build(ref.builtin, ref.params), src, None
        except builtins.BuiltinError as e:
            loc = ("topology",) + ((e.key,) if e.key else ())
            raise error_at(src, loc, e.message) from None
    if ref.inline is not None:
        return _topology_spec(src, ("topology",)), src, ("topology",)
    path = Path(ref.file)
    if not path.is_absolute():
        path = Path(src.file).parent / path
    if not path.is_file():
        raise error_at(src, ("topology",), f"topology file {ref.file} not found "
                       f"(paths are relative to the experiment file)")
    tsrc = load_source(path)
    if ref.overrides:
        for k, v in ref.overrides.items():
            apply_sets(tsrc, [f"{k}={_yaml(v)}"], "overrides:",
                       (src.file, src.line_of(("topology", "overrides", k)) or None))
    return _topology_spec(tsrc), tsrc, ()


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
    graph: Any = field(repr=False, default=None)   # topology.graph.Graph, built once here


@dataclass
class Plan:
    file: str
    experiment: Experiment
    points: list[Point]
    notes: list[str] = field(default_factory=list)   # accepted, but say it otherwise


def _point_name(values: dict[str, Any]) -> str:
    if not values:
        return "default"
    short = [k.split(".")[-1] for k in values]
    # the key's last word names the directory, unless two swept keys share it
    parts = [f"{k if short.count(k.split('.')[-1]) > 1 else k.split('.')[-1]}={v}"
             for k, v in values.items()]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def load_experiment(path: str | Path, sets: list[str] | None = None,
                    text: str | None = None, check_kernel: bool = True,
                    extra_checks: Callable[[checks.PointCheck], None] | None = None) -> Plan:
    """The experiment's points, every one validated and checked (config.checks).
    `extra_checks` runs after those on every point: testbed.preflight's checks of the
    components and the machine (use testbed.preflight.load_experiment for a run).
    check_kernel=False leaves out what depends on this kernel (qdiscs, its CCs): `run
    --vm` and `vm: true` experiments have those checked in the stock-kernel VM."""
    src = parse_text(text, str(path)) if text is not None else load_source(path)
    if not isinstance(src.data, dict):
        raise ConfigError("an experiment file is a mapping (name:, topology:, …)", src.file, 1)
    apply_sets(src, sets or [])
    base = validate(Experiment, src)
    if base.vm and os.environ.get("TESTBED_VM") != "1":
        check_kernel = False
    keys = list(base.sweep)
    n = math.prod(len(v) for v in base.sweep.values()) * base.repetitions
    if n > MAX_POINTS:
        loc = ("sweep",) if len(keys) else ("repetitions",)
        raise error_at(src, loc, f"{n} runs (sweep points × repetitions), more than "
                       f"{MAX_POINTS}: sweep fewer values or split the experiment")
    combos = list(itertools.product(*(base.sweep[k] for k in keys))) or [()]
    points: list[Point] = []
    graphs: dict[str, Any] = {}
    for combo in combos:
        values = dict(zip(keys, combo))
        psrc = Source(src.file, copy.deepcopy(src.data), dict(src.lines), dict(src.sets))
        for k, v in values.items():
            # a swept value's errors name the sweep's line
            apply_sets(psrc, [f"{k}={_yaml(v)}"], "sweep",
                       (src.file, src.line_of(("sweep", k)) or None))
        exp = validate(Experiment, psrc)
        topo, tsrc, tprefix = _resolve_topology(exp, psrc)
        # points of a sweep that leaves the topology alone share its graph (read-only)
        key = topo.model_dump_json()
        graph = graphs.get(key) or graphs.setdefault(key, build_graph(topo, tsrc, tprefix))
        pc = checks.PointCheck(exp, topo, graph, psrc, tsrc, tprefix, check_kernel)
        checks.run(pc)
        if extra_checks is not None:
            extra_checks(pc)
        for rep in range(exp.repetitions):
            name = _point_name(values) + (f",rep={rep}" if exp.repetitions > 1 else "")
            points.append(Point(name, {**values, **({"rep": rep} if exp.repetitions > 1 else {})},
                                exp, topo, psrc.data, graph))
    return Plan(str(path), base, points, base.instruments.notes("instruments"))
