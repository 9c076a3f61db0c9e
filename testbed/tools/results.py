"""export, report, compare — what a researcher does with a run's bundle.

  python -m testbed export RUN --parquet DIR        one Parquet file per table
  python -m testbed report RUN [-o FILE]            RUN/report.html, self-contained
  python -m testbed compare BASE NEW [--tolerance REL | METRIC=REL]… [--junit FILE]

compare exits 1 when NEW regressed against BASE (a metric beyond its tolerance, a claim
that passed and now fails), 0 otherwise, 2 on bad input.

Functions: add_parser(subparsers) registers the three subcommands.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import OK, RUN_FAILURE, ConfigError


def _export(a) -> int:
    from ..results.frames import export_parquet, load
    for p in export_parquet(load(a.run), a.parquet):
        print(p)
    return OK


def _report(a) -> int:
    from ..results.report import write_report
    print(write_report(Path(a.run), Path(a.output) if a.output else None))
    return OK


def _tolerances(items: list[str]) -> tuple[float | None, dict[str, float]]:
    from ..results.compare import METRICS
    default, per = None, {}
    for it in items:
        name, eq, val = it.rpartition("=")
        try:
            x = float(val.rstrip("%")) / (100 if val.endswith("%") else 1)
        except ValueError:
            raise ConfigError(f"not a number: {val!r} (give 0.1, 10% or METRIC=0.1)",
                              key="--tolerance") from None
        if x <= 0:
            raise ConfigError("a tolerance is > 0", key="--tolerance")
        if not eq:
            default = x
        elif name in METRICS:
            per[name] = x
        else:
            raise ConfigError(f"unknown metric {name!r} (metrics: {', '.join(METRICS)})",
                              key="--tolerance")
    return default, per


def _compare(a) -> int:
    from ..results.compare import compare, format_rows
    default, per = _tolerances(a.tolerance)
    c = compare(a.base, a.new, default, per, a.alpha)
    for line in format_rows(c):
        print(line)
    if a.junit:
        from ..results.junit import write_compare
        write_compare(c, a.junit)
    bad = c.regressions
    print(f"compare: {len(c.rows)} rows, {len(bad)} regressed" +
          (": " + ", ".join(f"{r.name} [{r.group}]" for r in bad) if bad else ""),
          file=sys.stderr)
    return RUN_FAILURE if bad else OK


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="a run's tables as Parquet files (pandas/pyarrow)")
    p.add_argument("run", metavar="RUN", help="a run's results directory")
    p.add_argument("--parquet", metavar="DIR", required=True,
                   help="write DIR/<table>.parquet for every table")
    p.set_defaults(fn=_export)
    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-o", "--output", metavar="FILE", help="default RUN/report.html")
    p.set_defaults(fn=_report)
    p = sub.add_parser(
        "compare", help="NEW against BASE: metrics and claims, exit 1 on a regression",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", metavar="BASE")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--tolerance", action="append", default=[], metavar="REL|METRIC=REL",
                   help="relative change allowed (0.1 or 10%%), for every metric or one; "
                        "default: the experiment's expect: {metric:, tolerance:}, else 10%%")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance of the Mann-Whitney test with repetitions")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one case per row)")
    p.set_defaults(fn=_compare)



