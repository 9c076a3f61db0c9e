"""python -m testbed: argument parsing and exit codes; the work is done elsewhere.

Commands: run, validate, clean, doctor, plot, list, and the tools in testbed/tools/
(probe, flows, check; export, report, compare), each a module exposing add_parser(subparsers).
Exit codes (testbed.errors): 0 ok, 1 run failure, 2 bad input / missing feature, 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from . import errors

TOOLS = ("testbed.tools.probe", "testbed.tools.flows", "testbed.tools.check",
         "testbed.tools.results", "testbed.vm.cli")

EPILOG = """examples:
  python -m testbed run experiments/powertcp_incast.yaml
  python -m testbed run experiments/powertcp_incast.yaml --set duration=3 --set repetitions=2
  python -m testbed validate experiments/*.yaml topologies/*.yaml
  python -m testbed doctor
  python -m testbed clean
"""


def _run(a) -> int:
    from .preflight import load_experiment

    if not a.vm and os.environ.get("TESTBED_VM") != "1":
        # an experiment that says `vm: true` runs in the VM without being asked
        from .config.yamlsrc import load_source
        src = load_source(a.file)
        a.vm = isinstance(src.data, dict) and (src.data.get("vm") is True
                                               or isinstance(src.data.get("vm"), dict))
    if a.vm:
        from .vm import cli as vmcli
        from .vm.experiment import run_experiment
        return run_experiment(a.file, a.set, a.out, a.resume, a.quiet, vmcli.options(a))
    from .runner import Runner

    plan = load_experiment(a.file, a.set)
    for note in plan.notes:
        print(f"{a.file}: note: {note}", file=sys.stderr)
    slurm = None
    if a.executor == "slurm":
        from .slurm import SlurmOptions
        slurm = SlurmOptions(partition=a.slurm_partition, time=a.slurm_time,
                             parallel=a.slurm_parallel, extra=a.slurm_arg)
        if a.cli:
            raise errors.ConfigError("--cli opens a shell here; the points of --executor slurm "
                                     "run on the cluster's nodes (drop one of them)", key="--cli")
    elif a.slurm_partition or a.slurm_arg or a.slurm_parallel or a.slurm_time:
        raise errors.ConfigError("--slurm-* options need --executor slurm", key="--executor")
    runner = Runner(plan, Path(a.out) if a.out else None, a.resume, a.cli,
                    progress="off" if a.quiet else "bar" if sys.stderr.isatty() else "lines",
                    sets=a.set, verbose=a.verbose, executor=a.executor, slurm=slurm,
                    mixed_kernels=a.mixed_kernels)
    code = runner.run()
    print(f"results: {runner.run_dir}")
    for v in runner.verdicts:
        print(f"  claim {v.status:4} {v.claim} [{v.cc}]: {v.reason}")
    if runner.verdicts and not any(v.binding for v in runner.verdicts):
        print("  (default claims, reported only: an expect: block or "
              "`python -m testbed check --strict` makes them decide the exit code)")
    for name, st in runner.statuses.items():
        if st["status"] != "ok":
            print(f"  {name}: {st['status']}: {st.get('error', '')}", file=sys.stderr)
    return code


def _run_point(a) -> int:
    from .runner import Runner

    st = Runner.run_point(Path(a.bundle), a.point, progress="off" if a.quiet else "lines")
    print(f"{a.point}: {st['status']}" + (f": {st['error']}" if st.get("error") else ""),
          file=sys.stderr)
    return 0 if st["status"] == "ok" else errors.RUN_FAILURE


def _validate(a) -> int:
    from .preflight import check_file

    for f in a.files:
        summary, notes = check_file(f, a.set)
        print(f"{f}: {summary}")
        for note in notes:
            print(f"{f}: note: {note}", file=sys.stderr)
    return 0


def _clean(a) -> int:
    from .network.tracker import clean_leftovers, find_leftovers

    found = find_leftovers(include_live=a.all)
    if a.dry_run:
        for lo in found:
            print(f"would remove run {lo.run_id}: {lo.cgroup or ''} {lo.bpffs or ''} "
                  f"{lo.state_file or ''}")
        return 0
    gone = clean_leftovers(include_live=a.all)
    print(f"removed {len(gone)} leftover run(s)" +
          (": " + ", ".join(lo.run_id for lo in gone) if gone else ""))
    return 0


def _doctor(a) -> int:
    from . import results
    from .network import features
    from .network.backends import available_backends

    rows = features.checks()
    extra = []
    try:
        from .network import tcpint
        extra += [features.Check(c.name, c.ok, c.detail, c.fix, required=False)
                  for c in tcpint.checks()]
    except ImportError:
        pass
    try:
        from .bpf import cc
        cc.check(list(cc.EBPF_CCS))
        extra.append(features.Check("eBPF CCs (struct_ops)", True, "ok"))
    except ImportError:
        pass
    except errors.MissingFeature as e:
        extra.append(features.Check("eBPF CCs (struct_ops)", False, e.what, e.fix, required=False))
    try:
        from .network.ecn import EcnMarking
        EcnMarking.check()
        extra.append(features.Check("ECN marking (ecn_mark:)", True, "eBPF on kernel switches"))
    except ImportError:
        pass
    except errors.MissingFeature as e:
        extra.append(features.Check("ECN marking (ecn_mark:)", False, e.what, e.fix,
                                    required=False))
    for name, (ok, why) in available_backends().items():
        extra.append(features.Check(f"backend {name}", ok, (why or "ok") if ok else "unavailable",
                                    "" if ok else why, required=False))
    extra.append(features.Check("default TCP CC", True, f"{results.default_cc()} (hosts "
                                "inherit it; flows get the experiment's `cc`)", required=False))
    bad = 0
    for c in rows + extra:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "no  ")
        bad += (not c.ok and c.required)
        fix = f"  → {c.fix}" if (not c.ok and c.fix) else ""
        print(f"{mark} {c.name:34} {c.detail}{fix}")
    return errors.BAD_INPUT if bad else 0


def _plot(a) -> int:
    from .plots import point_plots, run_summary

    d = Path(a.results)
    if not d.exists():
        raise errors.ConfigError("no such results directory", str(d))
    points = [d] if (d / "meta.json").exists() else \
        sorted(p for p in d.iterdir() if (p / "meta.json").exists())
    if not points:
        raise errors.ConfigError("no points (meta.json) found here", str(d))
    for p in points:
        for f in point_plots(p):
            print(f)
    if not (d / "meta.json").exists():
        for f in run_summary(d):
            print(f)
    return 0


def _list(a) -> int:
    from .instruments.base import load_all
    from .topology.builtins import BUILTINS

    repo = Path(__file__).resolve().parents[1]
    print("experiments:")
    for f in sorted((repo / "experiments").glob("*.yaml")):
        print(f"  {f.relative_to(repo)}")
    print("topologies:")
    for f in sorted((repo / "topologies").glob("*.yaml")):
        print(f"  {f.relative_to(repo)}")
    print("built-in topologies: " + ", ".join(BUILTINS))
    print("instruments: " + ", ".join(sorted(load_all())))
    try:
        from .bpf import cc
        print("eBPF congestion controls: " + ", ".join(cc.EBPF_CCS))
    except ImportError:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m testbed", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Network-emulation testbed for INT and eBPF CC.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run an experiment (every sweep point)")
    p.add_argument("file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key (dotted path), e.g. --set duration=3")
    p.add_argument("--out", help="results directory (default results/<exp>/<run-id>)")
    p.add_argument("--resume", action="store_true", help="skip points finished earlier")
    p.add_argument("--cli", action="store_true", help="Mininet CLI after bring-up")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress (bar on a terminal, phase lines otherwise)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each phase's duration as it ends, and each point's")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: the points run here, one after the other (default); slurm: "
                        "one Slurm array job, a task per point on its own node (the bundle "
                        "must be on a filesystem the nodes share)")
    p.add_argument("--slurm-partition", metavar="P", help="partition to submit to")
    p.add_argument("--slurm-time", metavar="T",
                   help="time limit of each task (sbatch --time; default: from the duration)")
    p.add_argument("--slurm-parallel", type=int, metavar="N",
                   help="at most N points at once (array throttle %%N)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="OPT",
                   help="extra sbatch option, e.g. --slurm-arg=--constraint=bpf")
    p.add_argument("--mixed-kernels", action="store_true",
                   help="judge claims even across points that ran on different kernels")
    p.add_argument("--vm", action="store_true",
                   help="run in the stock-kernel VM (netem, AQMs, dctcp); bundle lands here")
    try:
        from .vm.cli import add_vm_options
        add_vm_options(p.add_argument_group("--vm options"))
    except ImportError:
        pass
    p.set_defaults(fn=_run)
    p = sub.add_parser("run-point", help="run one point of a results bundle (a Slurm task)")
    p.add_argument("bundle", help="the run's results directory (run.json, experiment.yaml)")
    p.add_argument("point", help="the point's name, e.g. cc=cubic")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(fn=_run_point)
    p = sub.add_parser("validate", help="check experiment/topology files, start nothing")
    p.add_argument("files", nargs="+")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(fn=_validate)
    p = sub.add_parser("clean", help="remove what crashed runs left (ours only)")
    p.add_argument("--all", action="store_true", help="also runs whose process still lives")
    p.add_argument("-n", "--dry-run", action="store_true")
    p.set_defaults(fn=_clean)
    p = sub.add_parser("doctor", help="kernel features and tools, each with its fix")
    p.set_defaults(fn=_doctor)
    p = sub.add_parser("plot", help="(re)draw the plots of a results directory")
    p.add_argument("results")
    p.set_defaults(fn=_plot)
    p = sub.add_parser("list", help="experiments, topologies, built-ins, instruments")
    p.set_defaults(fn=_list)
    for mod in TOOLS:
        try:
            importlib.import_module(mod).add_parser(sub)
        except ImportError:
            pass  # a tool not built into this checkout
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return (getattr(a, "fn", None) or a.func)(a)
    except errors.TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted; everything the run created was removed", file=sys.stderr)
        return errors.INTERRUPTED
    except BaseException as e:
        if type(e).__name__ == "Interrupted":
            print("testbed: terminated; everything the run created was removed", file=sys.stderr)
            return errors.INTERRUPTED
        raise
