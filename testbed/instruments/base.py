"""What an instrument is, and the registry that maps YAML names to instrument classes.

An instrument measures one thing during a sweep point (queue depth, INT trace, per-hop
latency, flow records…). The runner drives every instrument through the same lifecycle:

    inst = cls(options, ctx)   # options: the instrument's own pydantic model
    inst.start()               # after bring-up, before the workload: load/attach/spawn
    ...workload runs...
    inst.stop()                # after the workload: stop sampling, detach (idempotent)
    inst.write()               # write CSVs into ctx.outdir; return the paths

Anything start() creates must also be registered with ctx.tracker.defer(...) so that
Ctrl-C or an exception removes it even if stop() never runs.

Time base: every CSV has a `time` column in seconds since ctx.t0_ns, a CLOCK_MONOTONIC
timestamp (the same clock as bpf_ktime_get_ns and time.monotonic_ns()).

Registering: the options are configuration — a model in config.models listed in
INSTRUMENT_OPTIONS under the YAML key (so the loader validates `instruments:` without
importing instruments); the class here sets `name` to that key and `Options` to that
model, and is decorated with @register. Its `validate()` checks the options against the
experiment and topology (testbed.preflight calls it for `validate` and `run` alike).
Compile-heavy instruments compile once per run: keep the object in ctx.run_cache (shared
by every point of the run) and register its cleanup with ctx.tracker.defer_run(...), which
outlives the point (a plain defer would close it when the point ends).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config.models import INSTRUMENT_OPTIONS, InstrumentOptions

if TYPE_CHECKING:
    from ..bpf.cc import CongestionControls
    from ..config.models import Experiment
    from ..network.net import Network
    from ..network.tcpint import TcpInt
    from ..network.tracker import RunTracker
    from ..workload.iperf import Flow


@dataclass
class InstrumentContext:
    net: "Network"
    outdir: Path
    tracker: "RunTracker"
    t0_ns: int = 0
    experiment: "Experiment | None" = None   # the point's validated Experiment
    tcp_int: "TcpInt | None" = None          # the point's running TCP-INT, None without
    ccs: "CongestionControls | None" = None  # the run's eBPF CCs, None without
    flows: "list[Flow]" = field(default_factory=list)   # the point's resolved flows
    # Shared across the points of one run (e.g. a compiled BPF object), keyed by instrument.
    run_cache: dict[str, Any] = field(default_factory=dict)
    # What an instrument did otherwise than asked, and why: meta.json "notes".
    notes: list[str] = field(default_factory=list)


class Instrument(ABC):
    name: ClassVar[str]
    Options: ClassVar[type[InstrumentOptions]] = InstrumentOptions

    def __init__(self, options: InstrumentOptions, ctx: InstrumentContext):
        self.options, self.ctx = options, ctx

    @classmethod
    def check(cls, options: InstrumentOptions) -> None:
        """Raise MissingFeature before any state exists if this machine cannot run it."""

    @classmethod
    def validate(cls, options: InstrumentOptions, point: Any) -> None:
        """Refuse what this experiment cannot give the instrument, before anything starts:
        `raise point.fail(("key", …), "what is wrong: the fix")` names the option's line.
        `point.exp` is the validated Experiment, `point.graph` the topology's Graph.
        Names of nodes and ports need no code here: type the option HostRef,
        ForwarderRef, NodeRef or PortRef (config.models) and the loader checks them."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def write(self) -> list[Path]: ...


REGISTRY: dict[str, type[Instrument]] = {}


def register(cls: type[Instrument]) -> type[Instrument]:
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"instrument {cls.name!r} registered twice")
    if INSTRUMENT_OPTIONS.get(cls.name) is not cls.Options:
        raise ValueError(f"instrument {cls.name!r}: its Options must be the model "
                         f"config.models.INSTRUMENT_OPTIONS[{cls.name!r}]")
    REGISTRY[cls.name] = cls
    return cls


def load_all() -> dict[str, type[Instrument]]:
    """Import every module of this package so each @register runs."""
    import importlib
    import pkgutil

    from .. import instruments

    for m in pkgutil.iter_modules(instruments.__path__):
        if m.name != "base":
            importlib.import_module(f"{instruments.__name__}.{m.name}")
    return REGISTRY
