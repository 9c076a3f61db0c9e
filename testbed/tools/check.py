"""check — evaluate a results bundle's claims: the congestion-control regression suite.

Reads the per-point CSVs of a results bundle (queue.csv, throughput.csv, config.yaml,
meta.json), evaluates the experiment's `expect:` claims (or, without one, the PowerTCP
paper's claims the bundle can answer: queue peak vs CUBIC, drain time, utilization,
fairness), prints one row per claim and writes claims.json into the bundle.

USAGE: python -m testbed check RESULTS [--claim NAME]... [--ci] [--strict]
                                       [--expect FILE] [--json] [--no-write] [--junit FILE]

Exit codes: 0 every claim holds, 1 a claim failed (a regression), 2 bad input (not a
bundle, an unknown claim, a malformed expect list). Claims that cannot be judged (N/A:
the bundle lacks the points they compare, the CPU rather than the link limited the run,
the queue sampling was too coarse, a flow started late) are reported and fail only with
--strict. Without an `expect:` block (in the experiment or --expect) the default claims
are reported but decide the exit code only with --strict.

Functions: add_parser(subparsers) registers the subcommand; run(args) is its handler;
main(argv) runs it standalone (`python -m testbed.tools.check`).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import yaml

from ..errors import BAD_INPUT, OK, RUN_FAILURE, TestbedError

EXAMPLES = """examples:
  python -m testbed check results/powertcp_incast-20261122-2310
  python -m testbed check results/powertcp_fairness-… --claim fairness
  python -m testbed check RESULTS --ci             # the small CI subset only
  python -m testbed check RESULTS --expect my_claims.yaml --json
claims: queue_peak_ratio, queue_drains, utilization, fairness (see testbed/claims.py)
"""

ROW = "{:<6} {:<17} {:<15} {}"


def _build(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("results", metavar="RESULTS", help="a results bundle directory")
    p.add_argument("--claim", action="append", default=None, metavar="NAME",
                   help="check only this claim (repeatable)")
    p.add_argument("--ci", action="store_true", help="only the claims marked for CI")
    p.add_argument("--expect", metavar="FILE", default=None,
                   help="a YAML list of claims to use instead of the experiment's expect:")
    p.add_argument("--strict", action="store_true",
                   help="a claim that cannot be judged (N/A) fails too, and so does a "
                   "failed default claim (no expect: block)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.add_argument("--no-write", action="store_true", help="do not write claims.json")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one test case per claim)")
    p.add_argument("--mixed-kernels", action="store_true",
                   help="compare points even if they ran on different kernels")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check", help="check a results bundle's claims (CC regression suite)",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _build(p)
    p.set_defaults(func=run, fn=run)  # the CLI dispatches on `fn`
    return p


def run(args: argparse.Namespace) -> int:
    from .. import claims

    try:
        expect = None
        if args.expect:
            try:
                with open(args.expect) as f:
                    expect = yaml.safe_load(f)
            except OSError as e:
                print(f"check: --expect {args.expect}: {e.strerror}", file=sys.stderr)
                return BAD_INPUT
            if not isinstance(expect, list):
                print(f"check: {args.expect}: expected a YAML list of claims", file=sys.stderr)
                return BAD_INPUT
        verdicts = claims.check(args.results, expect, args.claim, args.ci,
                                mixed_kernels=args.mixed_kernels)
    except TestbedError as e:
        print(f"check: {e}", file=sys.stderr)
        return e.exit_code
    if not args.no_write:
        claims.write_verdicts(args.results, verdicts)
    if getattr(args, "junit", None):
        from ..results.junit import write_check
        write_check(verdicts, args.results, args.junit, args.strict)
    if args.json:
        print(json.dumps([{**asdict(v), "status": v.status} for v in verdicts], indent=2,
                         default=float))
    else:
        print(ROW.format("RESULT", "CLAIM", "CC", "MEASURED"))
        for v in verdicts:
            print(ROW.format(v.status, v.claim, v.cc or "-", v.reason))
        if verdicts and not any(v.binding for v in verdicts) and not args.strict:
            print("(default claims: no expect: block; they decide the exit code only "
                  "with --strict)")
    n = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "N/A")}
    print(f"check: {n['PASS']} passed, {n['FAIL']} failed, {n['N/A']} not judged",
          file=sys.stderr)
    if not verdicts:
        print("check: no claim applies to this bundle", file=sys.stderr)
        return RUN_FAILURE if args.strict else OK
    return RUN_FAILURE if claims.failed(verdicts, args.strict) else OK


def main(argv: list[str] | None = None) -> int:
    p = _build(argparse.ArgumentParser(
        prog="check", description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
