"""A results bundle as tidy pandas tables: what a notebook or a script starts from.

    from testbed.results import load
    run = load("results/powertcp_incast/20261206-101500-ab12")
    run.queue                       # every point's queue.csv in one DataFrame
    run.queue.groupby(["cc", "rep"]).backlog_bytes.quantile(0.99)
    run.points                      # one row per point: sweep values, status, CPU, verdict
    run.meta["cc=cubic"]            # a point's meta.json

Every table has the columns `point` (the point's directory), one column per swept key
(named as in `sweep:`, e.g. `cc`, `topology.bottleneck_bw`) and `rep` (the repetition, 0
without repetitions), then the CSV's own columns. A CSV column named like a swept key (the
flows' own `cc` under a `cc` sweep) is kept as `<name>_csv`. `time` is seconds since the
point's t0 on CLOCK_MONOTONIC — the clock of the kernel's bpf_ktime_get_ns, shared by
every instrument of the point; `run.points.t0_monotonic_ns` places points on one axis.

Tables (absent instruments give empty tables with the key columns): queue, throughput,
flows, int_trace, cc_trace, noobprobe, noobflow (flow records), noobflow_throughput,
claims (one row per claim, measured values as `measured_<name>` columns).

Classes: Run. Functions: load(run_dir), export_parquet(run, dir).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .record import PointRecord, read_record

TABLES = {
    "queue": "queue.csv",
    "throughput": "throughput.csv",
    "flows": "flows.csv",
    "int_trace": "int_trace.csv",
    "cc_trace": "cc_trace.csv",
    "noobprobe": "noobprobe.csv",
    "noobflow": "flows_noobflow.csv",
    "noobflow_throughput": "throughput_noobflow.csv",
}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Run:
    """One run's bundle. Tables are read on first use and kept."""

    dir: Path
    info: dict = field(repr=False)               # run.json
    meta: dict[str, PointRecord] = field(repr=False)   # point name → its record (meta.json)
    params: list[str] = field(default_factory=list)   # the swept keys (without rep)
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def experiment(self) -> str:
        return self.info.get("experiment") or next(
            (m.get("experiment") for m in self.meta.values() if m.get("experiment")), "")

    def point_dir(self, point: str) -> Path:
        return self.dir / point

    def _keys(self, point: str) -> dict[str, Any]:
        values = dict(self.meta[point].get("values") or {})
        rep = values.pop("rep", 0)
        return {"point": point, **{k: values.get(k) for k in self.params}, "rep": int(rep)}

    def _key_frame(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["point", *self.params, "rep"])

    @functools.cached_property
    def points(self) -> pd.DataFrame:
        """One row per point: sweep values, rep, status and what meta.json says of it."""
        rows = []
        for name, m in self.meta.items():
            bn = m.get("bottleneck") or {}
            v = m.get("versions") or {}
            rows.append({**self._keys(name), "status": m.get("status"),
                         "error": m.get("error"), "started": m.get("started"),
                         "ended": m.get("ended"), "t0_monotonic_ns": m.get("t0_monotonic_ns"),
                         "cpu_busy_pct": m.get("cpu_busy_pct"),
                         "bottleneck": bn.get("verdict"), "kernel": v.get("kernel"),
                         "git_commit": v.get("git_commit"), "scale": m.get("scale"),
                         "notes": "; ".join(m.get("notes") or []) or None})
        return pd.DataFrame(rows) if rows else self._key_frame()

    def table(self, name: str) -> pd.DataFrame:
        """A CSV of every point in one DataFrame (name: one of TABLES)."""
        if name not in TABLES:
            raise KeyError(f"no table {name!r} (tables: {', '.join(TABLES)}, claims)")
        if name not in self._cache:
            frames = []
            for point in self.meta:
                path = self.dir / point / TABLES[name]
                if not path.exists() or path.stat().st_size == 0:
                    continue
                df = pd.read_csv(path)
                df = df.rename(columns={c: f"{c}_csv" for c in df.columns
                                        if c in {"point", "rep", *self.params}})
                keys = self._keys(point)
                for i, (k, v) in enumerate(keys.items()):
                    df.insert(i, k, v)
                frames.append(df)
            self._cache[name] = (pd.concat(frames, ignore_index=True) if frames
                                 else self._key_frame())
        return self._cache[name]

    queue = property(lambda self: self.table("queue"))
    throughput = property(lambda self: self.table("throughput"))
    flows = property(lambda self: self.table("flows"))
    int_trace = property(lambda self: self.table("int_trace"))
    cc_trace = property(lambda self: self.table("cc_trace"))
    noobprobe = property(lambda self: self.table("noobprobe"))
    noobflow = property(lambda self: self.table("noobflow"))
    noobflow_throughput = property(lambda self: self.table("noobflow_throughput"))

    @functools.cached_property
    def claims(self) -> pd.DataFrame:
        """claims.json: one row per claim."""
        rows = []
        for v in _json(self.dir / "claims.json") or []:
            rows.append({"claim": v.get("claim"), "cc": v.get("cc"), "status": v.get("status"),
                         "reason": v.get("reason"), "points": ",".join(v.get("points") or []),
                         **{f"measured_{k}": x for k, x in (v.get("measured") or {}).items()}})
        cols = ["claim", "cc", "status", "reason", "points"]
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, the empty ones included, plus points and claims."""
        return {"points": self.points, **{n: self.table(n) for n in TABLES},
                "claims": self.claims}


def load(run_dir: str | Path) -> Run:
    """A run's bundle (the directory `python -m testbed run` printed)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError("no such results directory", str(d))
    info = _json(d / "run.json") or {}
    names = list((info.get("points") or {}))
    names = [n for n in names if (d / n / "meta.json").exists()] or \
        sorted(p.name for p in d.iterdir() if (p / "meta.json").exists())
    if not names:
        raise ConfigError("not a results bundle (no run.json with points, no */meta.json); "
                          "give the directory `python -m testbed run` printed", str(d))
    meta = {n: read_record(d / n) for n in names}
    params: list[str] = []
    for m in meta.values():
        params += [k for k in (m.get("values") or {}) if k != "rep" and k not in params]
    return Run(d, info, meta, params)


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (a sweep over 20 and '64KB') become strings."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(x) for x in out[c].dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                out[c] = out[c].map(lambda x: x if x is None or x != x else str(x))
    return out


def export_parquet(run: Run, out: str | Path) -> list[Path]:
    """One Parquet file per table (empty tables too: a reader finds every name)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in run.tables().items():
        path = out / f"{name}.parquet"
        _arrow_safe(df).to_parquet(path, engine="pyarrow", index=False)
        written.append(path)
    return written
