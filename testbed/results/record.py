"""The record of one sweep point (`<point>/meta.json`): what ran, on what, and the facts
every reader needs, typed once here.

The runner writes it as the point runs (each fact when it becomes known); claims, plots
and the results API read it with read_record() — none of them re-reads the point's
configuration to guess a fact. A bundle written before a fact was recorded gets it here,
from the point's config.yaml, in one place (_backfill).

Classes:
- PointRecord: the record; named fields for the facts readers use, any other fact a
  component adds (addresses, sysctls, TCP counters, …) kept as is. It reads like the
  mapping meta.json is (`rec["status"]`, `rec.get("bottleneck")`), so a fact can be set
  by name as it becomes known.
- Bottleneck, PortUse: the runner's bottleneck check (per sampled port).
- TauSource: where an eBPF CC's τ (base RTT) comes from.
- PointVerdict: a claim's verdict on the points it judged.
Functions: read_record(point_dir), write_record(point_dir, record), point_config(point_dir),
record_verdicts(results, verdicts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class _Facts(BaseModel):
    # extra: facts a later version adds stay readable by an older reader, and back
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self.model_fields_set or key in (self.model_extra or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def update(self, **values: Any) -> None:
        for k, v in values.items():
            self[k] = v

    def dump(self) -> dict[str, Any]:
        """The facts set so far, as JSON types (what meta.json holds)."""
        return self.model_dump(mode="json", exclude_unset=True)


class PortUse(_Facts):
    rate_mbps: float | None = None          # the port's shaped rate (None: unshaped)
    mean_mbps: float | None = None          # sent over the workload's window
    util_pct: float | None = None
    max_backlog_bytes: int | None = None
    drops: int | None = None


class Bottleneck(_Facts):
    """Was the link the bottleneck, or the CPU? (runner.bottleneck_check)"""

    ports: dict[str, PortUse] = {}          # "node:iface" → its use
    busiest: str | None = None              # the port that carried the most bytes
    cpu_busy_pct: float | None = None
    verdict: str | None = None              # link, cpu or neither
    note: str | None = None


class TauSource(_Facts):
    source: str                             # "experiment", "probe: …", or the path's
    base_rtt_us: float | None = None        # with source "experiment" or "probe"


class PointVerdict(_Facts):
    claim: str
    cc: str | None = None
    status: str                             # PASS, FAIL, N/A
    reason: str = ""


class PointRecord(_Facts):
    experiment: str = ""
    point: str = ""
    values: dict[str, Any] = {}             # the sweep values that make this point
    scale: str = ""
    run_id: str = ""
    status: str = "running"                 # running, ok, failed, interrupted
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    versions: dict[str, Any] = {}           # code, kernel, tools (results.versions)
    node: dict[str, Any] = {}               # the machine (results.node_facts)
    duration: float | None = None           # s of workload (the clock's 0 to its end)
    cc: str | None = None                   # the experiment's `cc:` (flows' default)
    cc_names: dict[str, str] = {}           # each flow CC → the name the kernel knows
    cc_tau: dict[str, TauSource] = {}       # each eBPF CC → where its τ comes from
    instruments: list[str] | None = None    # the instruments that ran
    bottleneck_mbps: float | None = None    # the slowest shaped link's rate
    bottleneck: Bottleneck | None = None    # each sampled port's use, link or CPU
    burst_at: float | None = None           # s: the first incast burst's start
    schedule: list[dict[str, Any]] = []     # events and flow starts, and how late each was
    verdicts: list[PointVerdict] = []       # the claims that judged this point

    @property
    def kernel(self) -> str | None:
        return (self.node or {}).get("kernel") or (self.versions or {}).get("kernel")

    def base_rtt_us(self, cc: str | None) -> float | None:
        """τ the experiment set for `cc` (None: the CC uses each flow's min RTT)."""
        tau = self.cc_tau.get(cc or "")
        return tau.base_rtt_us if tau is not None and tau.base_rtt_us else None


def point_config(point_dir: Path) -> dict:
    """The point's experiment as written (config.yaml): for what a bundle is asked to
    judge (`expect:`) — facts about the point are in its record."""
    import yaml
    try:
        return yaml.safe_load((Path(point_dir) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def read_record(point_dir: Path, backfill: bool = True) -> PointRecord:
    """The point's record (an empty one for a directory without meta.json); with
    `backfill`, an older bundle's missing facts from its config.yaml."""
    try:
        raw = json.loads((Path(point_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        raw = {}
    try:
        rec = PointRecord.model_validate(raw if isinstance(raw, dict) else {})
    except ValidationError:   # a record this version cannot type: its facts as they are
        rec = PointRecord.model_construct(**raw)
    if backfill:
        _backfill(rec, point_dir)
    return rec


def write_record(point_dir: Path, rec: PointRecord) -> None:
    from . import write_json
    write_json(Path(point_dir) / "meta.json", rec.dump())


def record_verdicts(results: Path | str, verdicts: list) -> None:
    """Each point's record (of a bundle, or the one point `results` is) gets the claims'
    verdicts that judged it: what claims.json says, by point."""
    root = Path(results)
    dirs = [root] if (root / "meta.json").exists() else \
        sorted(d for d in root.iterdir() if (d / "meta.json").exists())
    for d in dirs:
        rec = read_record(d, backfill=False)
        rec.verdicts = [PointVerdict(claim=v.claim, cc=v.cc, status=v.status, reason=v.reason)
                        for v in verdicts if d.name in v.points]
        write_record(d, rec)


def _backfill(rec: PointRecord, point_dir: Path) -> None:
    """Facts a bundle written before they were recorded lacks, from its config.yaml."""
    missing = [k for k in ("cc", "duration", "burst_at", "bottleneck_mbps", "cc_tau",
                           "instruments") if k not in rec]
    if not missing:
        return
    from ..config import units
    cfg = point_config(point_dir)
    if not cfg:
        return
    try:
        if "cc" in missing and cfg.get("cc"):
            rec.cc = cfg["cc"]
        if "duration" in missing and cfg.get("duration") is not None:
            rec.duration = units.duration_s(cfg["duration"])
        if "burst_at" in missing:
            inc = ((cfg.get("workload") or {}).get("incast")) or []
            starts = [units.duration_s(b["start"]) for b in inc
                      if isinstance(b, dict) and "start" in b]
            if starts:
                rec.burst_at = min(starts)
        if "bottleneck_mbps" in missing:
            # only a built-in topology's parameters name it (a file or inline: unknown)
            topo = cfg.get("topology") if isinstance(cfg.get("topology"), dict) else {}
            bw = next((topo[k] for k in ("bottleneck_bw", "bw") if topo.get(k) is not None),
                      None)
            if bw is not None:
                rec.bottleneck_mbps = units.rate_mbps(bw)
        if "cc_tau" in missing:
            taus = {n: TauSource(source="experiment", base_rtt_us=p["base_rtt_us"])
                    for n, p in (cfg.get("congestion_control") or {}).items()
                    if isinstance(p, dict) and isinstance(p.get("base_rtt_us"), (int, float))
                    and p["base_rtt_us"]}
            if taus:
                rec.cc_tau = taus
        if "instruments" in missing and cfg.get("instruments") is not None:
            inst = cfg["instruments"]
            rec.instruments = [n for n in inst] if isinstance(inst, list) else \
                [n for n, o in inst.items() if bool((o or {}).get("enabled", True))]
    except (ValueError, TypeError, AttributeError):
        pass   # an unreadable old config: the facts stay unknown
