"""A run's plan checked against the components and this machine, before anything starts.

config.load validates what the files say (types, names, the topology's graph, timing);
this module adds what needs the layers above configuration, with the same PointCheck
(so every refusal still names the file, the line and the fix):
- the kernel: qdiscs a link asks for, the congestion controls flows name;
- switch backends that must be installed (BMv2);
- the workload: iperf3 ports of the resolved flows;
- each instrument's own validate() (limits of its kernel program, what it needs).
`load_experiment` and `validate_file` are what `validate`, `run` and the tests use.

Adding a check: `@check def _my_check(p: PointCheck) -> None` raising
`p.fail(key_path, "what is wrong: the fix")` (`p.fail_topo` for a topology key); a check
that only reads the configuration belongs in config/checks.py instead.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from .config import load as _load
from .config.checks import Checks, PointCheck
from .config.load import Plan
from .config.yamlsrc import load_source
from .errors import ConfigError

check = Checks()   # what needs the components or this machine
run = check.run


def load_experiment(path: str | Path, sets: list[str] | None = None,
                    text: str | None = None, check_kernel: bool = True) -> Plan:
    """The experiment's points, every one validated and checked here (config.load's
    load_experiment plus the checks of this module)."""
    return _load.load_experiment(path, sets, text=text, check_kernel=check_kernel,
                                 extra_checks=run)


def validate_file(path: str | Path, sets: list[str] | None = None) -> str:
    """The whole check of one file, as `validate` and `run` make it; a one-line summary."""
    return check_file(path, sets)[0]


def check_file(path: str | Path, sets: list[str] | None = None) -> tuple[str, list[str]]:
    """validate_file's summary, and the notes on what the file says by former names."""
    src = load_source(path)
    if isinstance(src.data, dict) and "topology" not in src.data and \
            ("hosts" in src.data or "links" in src.data):
        if sets:
            _load.apply_sets(src, sets)
        spec = _load.load_topology(src)
        return f"ok (topology: {len(spec.hosts)} hosts, {len(spec.links)} links)", []
    plan = load_experiment(path, sets)
    return f"ok ({len(plan.points)} point(s))", plan.notes


# --- the kernel --------------------------------------------------------------------------

@check
def _qdiscs(p: PointCheck) -> None:
    if not p.kernel:
        return
    from .network import features
    for i, link in enumerate(p.topo.links):
        lp = p.topo.link_params(link)
        # Mininet would drop delay/loss silently: refuse what this kernel lacks instead
        for qdisc, why in lp.needs_qdiscs().items():
            if not features.has_qdisc(qdisc):
                raise p.fail_topo(("links", i),
                                  f"link {link.ends[0]}-{link.ends[1]}: {why} needs {qdisc}, "
                                  f"which this kernel lacks (sch_{qdisc}); run it in the "
                                  f"stock-kernel VM (`run … --vm`) or remove {why}")


@check
def _backends(p: PointCheck) -> None:
    wanted = sorted({s.backend for s in {**p.topo.switches, **p.topo.routers}.values()}
                    - {"kernel"})
    if not wanted:
        return
    from .network.backends import available_backends
    have = available_backends()
    for name, sw in {**p.topo.switches, **p.topo.routers}.items():
        ok, why = have.get(sw.backend, (sw.backend == "kernel", "not implemented"))
        if not ok:
            kind = "switches" if name in p.topo.switches else "routers"
            raise p.fail_topo((kind, name), f"{name}: backend {sw.backend} unavailable: {why}")


# --- the workload ------------------------------------------------------------------------

@check
def _ports_collide(p: PointCheck) -> None:
    from .workload.iperf import SINK_PORT, resolve_flows
    flows = resolve_flows(p.exp)
    n = len(p.exp.workload.flows)
    starts, k = [], n
    for b in p.exp.workload.incast:
        starts.append(k)
        k += len(b.senders)
    seen: dict[tuple[str, int], str] = {}
    sinks = {f.dst for f in flows if f.tool == "burst"}
    for j, f in enumerate(flows):
        loc = ("workload", "flows", j) if j < n else \
            ("workload", "incast", max(i for i, s in enumerate(starts) if s <= j))
        if f.tool == "burst":
            continue
        if not 0 < f.port < 65536 or (f.port == SINK_PORT and f.dst in sinks):
            raise p.fail(loc, f"{f.dst} receives too many iperf3 flows: its ports run from "
                              f"5201 into {f.port} (the incast sink's {SINK_PORT} or past "
                              f"65535); spread the flows over more receivers")
        if (f.dst, f.port) in seen:
            raise p.fail(loc, f"{f.name} and {seen[(f.dst, f.port)]} both use port "
                              f"{f.port} on {f.dst}")
        seen[(f.dst, f.port)] = f.name


# --- congestion control -----------------------------------------------------------------

def known_ccs() -> set[str]:
    """Kernel CCs (built in or registered, as the kernel lists them) and ours (eBPF)."""
    from .config.models import EBPF_CC_KINDS
    from .network import features
    return set(features.kernel_ccs()) | set(EBPF_CC_KINDS)  # kernel: registered or a module


@check
def _congestion_control(p: PointCheck) -> None:
    if not p.kernel:
        return
    from .config.checks import _ccs_used
    known = known_ccs()
    for loc, cc, _dst, _tcp in _ccs_used(p.exp):
        if cc not in known:
            close = difflib.get_close_matches(cc, sorted(known), n=1)
            raise p.fail(loc, f"unknown congestion control {cc!r}" +
                         (f"; did you mean {close[0]!r}?" if close else
                          f" (available: {', '.join(sorted(known))})"))


# --- instruments ------------------------------------------------------------------------

@check
def _instruments(p: PointCheck) -> None:
    from .instruments.base import load_all
    registry = load_all()
    for name, opts in p.exp.instruments.chosen().items():
        if opts.enabled:
            registry[name].validate(opts, InstrumentCheck(p, name))


class InstrumentCheck:
    """What an instrument's validate() sees: the point, and fail() relative to its key."""

    def __init__(self, point: PointCheck, name: str):
        self.point, self.name = point, name
        self.exp, self.graph = point.exp, point.graph

    def fail(self, loc: tuple, msg: str) -> ConfigError:
        return self.point.fail(("instruments", self.name) + tuple(loc), msg)
