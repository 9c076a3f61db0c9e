"""The runner: a plan's sweep points × repetitions → results bundles.

Per point: bring up the network → TCP-INT (if enabled) → instruments → workload
(servers, pre-spawned clients and commands, then the clock: releases and events on time)
→ settle → stop instruments → write CSVs → tear down → meta.json and plots. After the
sweep: summary, claims, report.html.
A failed point is recorded (status, error, log) and the sweep goes on; Ctrl-C stops the
sweep, and every exit path tears down what exists (RunTracker).

Executors: `local` runs the points here, one after the other; `slurm` (testbed.slurm)
submits them as one Slurm array job, each task running one point on its own node with
`python -m testbed run-point BUNDLE POINT` (Runner.run_point), and follows them. Either
way this process then gathers the points' status, draws the summary and judges claims.

Classes:
- Runner: runs a Plan, with resume and a rich progress display.
Functions:
- bundle_plan(run_dir): the Plan a bundle was made from (its experiment.yaml and --set).
- run_point(run_dir, name): run one point of a bundle (what a Slurm task does).
"""
from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Literal

import yaml

from . import results
from .results.record import PointRecord, write_record
from .config.load import Plan, Point
from .config.models import CongestionControl
from .preflight import load_experiment
from .errors import RunError, TestbedError
from .instruments.base import REGISTRY, InstrumentContext, load_all
from .network import features
from .network.net import Network
from .network.tracker import RunTracker
from .workload.commands import Commands, Events
from .workload.iperf import IperfWorkload, resolve_flows

DEFAULT_INSTRUMENTS = ("queue", "flows")
ARM_AHEAD = 0.3  # s between handing out start times and t0


class Interrupted(BaseException):
    """SIGTERM, handled like Ctrl-C: stop, tear down, exit 130."""


def require_features(plan: Plan) -> None:
    """Kernel features and tools the plan needs, found missing before any state exists."""
    features.require_base()
    registry = load_all()
    ccs_used: set[str] = set()
    int_used = False
    for p in plan.points:
        e = p.experiment
        for name, opts in e.instruments.chosen().items():
            registry[name].check(opts)
        ccs_used |= {e.cc} | {f.cc for f in e.workload.flows if f.cc} | \
            {b.cc for b in e.workload.incast if b.cc}
        int_used |= bool(getattr(e.tcp_int, "enabled", False))
    try:
        from .bpf import cc as ccmod
    except ImportError:
        ccmod = None
    if ccmod is not None:
        ebpf = sorted(n for n in ccs_used if ccmod.is_ebpf(n))
        if ebpf:
            ccmod.check(ebpf)
    if int_used:
        from .network.tcpint import TcpInt
        TcpInt.check()
    if any(_kernel_marks(p.topology) for p in plan.points):
        from .network.ecn import EcnMarking
        EcnMarking.check()


def _kernel_marks(topo) -> bool:
    """Does a kernel-backend switch or router mark ECN (a link with `ecn_mark:`)?"""
    fwd = {**topo.switches, **topo.routers}
    return any(topo.link_params(l).ecn_mark is not None and
               any(e in fwd and fwd[e].backend == "kernel" for e in l.ends)
               for l in topo.links)


class Runner:
    def __init__(self, plan: Plan, out: Path | None = None, resume: bool = False,
                 cli: bool = False, progress: Literal["bar", "lines", "off"] = "bar",
                 argv: list[str] | None = None, sets: list[str] | None = None,
                 verbose: bool = False, executor: Literal["local", "slurm"] = "local",
                 slurm=None, mixed_kernels: bool = False):
        self.plan, self.cli, self.progress, self.verbose = plan, cli, progress, verbose
        self.executor, self.slurm, self.mixed_kernels = executor, slurm, mixed_kernels
        exp = plan.experiment
        if executor == "slurm":
            # The points run on the cluster's nodes: their features are checked there
            # (run-point), here only what submitting needs.
            from .slurm import preflight as slurm_preflight
            slurm_preflight(slurm)
        else:
            require_features(plan)  # before anything exists, even the results directory
        if resume and out is None:
            out = results.latest_run_dir(exp.name)
            if out is None:
                raise RunError(f"--resume: no earlier run of {exp.name} under {results.RESULTS}")
        self.resume = resume
        self.run_dir = results.new_run_dir(exp.name, out)
        self.argv, self.sets = argv or sys.argv, sets or []
        self.statuses: dict[str, dict] = {}
        self.verdicts: list = []
        self.run_cache: dict = {}  # instruments' compiled objects, shared by all points
        self.display = self._display()

    # -- the sweep -------------------------------------------------------------------
    def run(self) -> int:
        src = Path(self.plan.file)
        if src.exists():
            (self.run_dir / "experiment.yaml").write_text(src.read_text())
        if self.executor == "slurm":
            from .slurm import SlurmExecutor
            self._write_run_json()
            self.statuses.update(SlurmExecutor(self, self.slurm).run())
            self._write_run_json()
        else:
            self._run_local()
        self._summary()
        self._claims()
        self._report()
        ok = all(s["status"] == "ok" for s in self.statuses.values())
        # default claims (no expect: block) are reported, not binding
        return 0 if ok and not any(v.passed is False and v.binding
                                   for v in self.verdicts) else 1

    def _run_local(self) -> None:
        old_term = signal.signal(signal.SIGTERM, _on_signal)
        old_int = signal.signal(signal.SIGINT, _on_signal)
        try:
            with RunTracker() as tracker, self.display as show:
                ccs = self._congestion_controls(tracker)
                for i, point in enumerate(self.plan.points):
                    pdir = self.run_dir / point.name
                    if self.resume and results.point_done(pdir):
                        self.statuses[point.name] = {"status": "ok", "resumed": True}
                        show.point_done(i, point.name, "done earlier (resume)", skipped=True)
                        continue
                    pdir.mkdir(parents=True, exist_ok=True)
                    self.statuses[point.name] = self._run_point(
                        point, pdir, tracker, ccs,
                        lambda ph, i=i, point=point: (_checkpoint(),
                                                      show.phase(i, point.name, ph)))
                    show.point_done(i, point.name, self.statuses[point.name]["status"])
                    self._write_run_json()
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            _SIGNALLED.clear()
            self._write_run_json()

    @classmethod
    def run_point(cls, run_dir: Path, name: str,
                  progress: Literal["bar", "lines", "off"] = "lines") -> dict:
        """Run one point of an existing bundle, by itself (a Slurm task): its features
        checked on this machine, its directory and meta.json written; run.json, the
        summary and the claims are left to the process that made the bundle."""
        plan = bundle_plan(run_dir)
        point = next((p for p in plan.points if p.name == name), None)
        if point is None:
            raise RunError(f"{run_dir}: no point {name!r} (points: "
                           f"{', '.join(p.name for p in plan.points)})")
        plan.points = [point]
        run = json.loads((Path(run_dir) / "run.json").read_text())
        self = cls(plan, Path(run_dir), progress=progress, argv=run.get("argv"),
                   sets=run.get("sets"))
        old_term = signal.signal(signal.SIGTERM, _on_signal)
        old_int = signal.signal(signal.SIGINT, _on_signal)
        try:
            with RunTracker() as tracker, self.display as show:
                pdir = self.run_dir / point.name
                pdir.mkdir(parents=True, exist_ok=True)
                st = self._run_point(point, pdir, tracker, self._congestion_controls(tracker),
                                     lambda ph: (_checkpoint(), show.phase(0, point.name, ph)))
                show.point_done(0, point.name, st["status"])
                return st
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            _SIGNALLED.clear()

    def _claims(self) -> None:
        """The experiment's `expect:` (or the paper's default claims), judged on the data."""
        try:
            from .claims import check, write_verdicts
        except ImportError:
            return
        try:
            self.verdicts = check(self.run_dir, mixed_kernels=self.mixed_kernels)
        except TestbedError as e:
            print(f"claims: {e}", file=sys.stderr)
            return
        if self.verdicts:
            write_verdicts(self.run_dir, self.verdicts)   # and into each point's record

    def _congestion_controls(self, tracker: RunTracker):
        try:
            from .bpf.cc import CongestionControls
        except ImportError:
            return None
        return CongestionControls(tracker, {}, where=self.plan.file)

    def _display(self):
        from .progress import Display
        return Display(self.plan.experiment.name,
                       [p.experiment.duration + p.experiment.settle for p in self.plan.points],
                       self.progress, self.verbose)

    # -- one point -------------------------------------------------------------------
    def _run_point(self, point: Point, pdir: Path, tracker: RunTracker, ccs,
                   phase: Callable[[str], None]) -> dict:
        exp = point.experiment
        (pdir / "config.yaml").write_text(yaml.safe_dump(point.raw, sort_keys=False))
        (pdir / "topology.yaml").write_text(yaml.safe_dump(
            point.topology.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
        (pdir / "logs").mkdir(exist_ok=True)
        meta = PointRecord(
            experiment=exp.name, point=point.name, values=point.values, scale=exp.scale,
            run_id=tracker.run_id, status="running", started=time.time(),
            versions=results.versions(), node=results.node_facts(),
            duration=exp.duration, cc=exp.cc,
            backends=sorted({s.backend for s in {**point.topology.switches,
                                                 **point.topology.routers}.values()}),
            hosts=exp.hosts.model_dump(), emulation=exp.emulation.model_dump(),
            argv=self.argv, sets=self.sets)
        write_record(pdir, meta)
        try:
            with tracker.scope():
                self._execute(point, pdir, tracker, ccs, phase, meta)
            meta["status"] = "ok"
        except (KeyboardInterrupt, Interrupted):
            _SIGNALLED.clear()   # raised and being handled: no checkpoint raises it again
            meta.update(status="interrupted", ended=time.time())
            write_record(pdir, meta)
            raise
        except Exception as e:
            meta.update(status="failed", error=str(e).splitlines()[0] if str(e) else repr(e))
            (pdir / "logs" / "error.log").write_text(traceback.format_exc())
        meta["ended"] = time.time()
        write_record(pdir, meta)
        if meta["status"] == "ok":
            phase("plots")
            try:
                from .plots import point_plots
                meta["plots"] = [str(p.relative_to(pdir)) for p in point_plots(pdir)]
            except Exception as e:  # a plot failing does not void the data
                meta["plot_error"] = str(e)
            write_record(pdir, meta)
        return {"status": meta["status"], **({"error": meta["error"]} if "error" in meta else {})}

    def _execute(self, point: Point, pdir: Path, tracker: RunTracker, ccs,
                 phase: Callable[[str], None], meta: PointRecord) -> None:
        """One point, step by step; meta.json's facts are recorded as they become known."""
        exp = point.experiment
        phase("bring-up")
        net = self._bring_up(point, tracker, meta)
        tint = self._start_tcp_int(exp, net, tracker, phase, meta)
        flows = resolve_flows(exp)
        cc_name = self._prepare_ccs(exp, net, flows, ccs, meta)
        ctx = InstrumentContext(net=net, outdir=pdir, tracker=tracker, experiment=exp,
                                flows=flows, run_cache=self.run_cache, tcp_int=tint, ccs=ccs)
        phase("instruments")
        instruments = self._start_instruments(exp, ctx)
        meta["instruments"] = [i.name for i in instruments]
        phase("workload: preparing")
        iperf = IperfWorkload(net, flows, pdir, cc_name)
        cmds = Commands(net, exp.workload.commands, pdir)
        tracker.defer("commands", cmds.finish)
        iperf.prepare()
        cmds.prepare()
        if self.cli:
            from mininet.cli import CLI
            with self.display.paused():   # the bar would draw into the CLI's prompt
                print(f"\nMininet CLI on {point.name}; `exit` starts the workload.",
                      file=sys.stderr)
                CLI(net.mn)
        busy0 = results.cpu_times()
        t0, fired = self._run_workload(exp, net, iperf, cmds, ctx, phase, meta)
        phase("settle")
        errors = iperf.finish(grace=exp.settle + 2.0)
        iperf.started()
        busy1 = results.cpu_times()
        meta["cpu_busy_pct"] = round(100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1)
        cmds.finish()
        meta["tcp_counters"] = tcp_counters(net, sorted({h for f in flows for h in (f.src, f.dst)}))
        phase("collect")
        meta["outputs"] = self._collect(instruments, net, pdir, meta)
        meta["schedule"] = sorted(fired + release_spread(flows, t0), key=lambda e: e["at"])
        if ctx.notes or iperf.notes:
            meta["notes"] = iperf.notes + ctx.notes
        meta["bottleneck"] = bottleneck_check(pdir, net, meta["cpu_busy_pct"], exp.duration)
        if errors:
            raise RunError("workload: " + "; ".join(errors))

    @staticmethod
    def _bring_up(point: Point, tracker: RunTracker, meta: PointRecord) -> Network:
        """The point's network, started; its addresses and the sysctls its routers and
        switches run with go to meta."""
        net = Network(point.graph, tracker, point.experiment.hosts, point.experiment.emulation,
                      experiment=point.experiment)
        net.start()
        meta["addresses"] = {n: net.ip(n) for n in net.graph.nodes if net.graph.nodes[n].is_l3}
        # facts claims need, recorded here rather than guessed later from config.yaml:
        # the slowest shaped link (the bottleneck by construction) and the first burst
        rates = [i.link.params.bw for g in net.graph.nodes.values() for i in g.intfs
                 if i.link.params.bw]
        meta["bottleneck_mbps"] = min(rates) if rates else None
        incast = point.experiment.workload.incast
        meta["burst_at"] = min(b.start for b in incast) if incast else None
        from .network.backends.kernel import (BR_NETFILTER, ECMP_HASH, ROUTER_SYSCTLS,
                                              SWITCH_SYSCTLS)
        routers = [g for g in net.graph.switches if g.kind == "router"]
        if routers:
            meta["router_sysctls"] = ROUTER_SYSCTLS
            meta["ecmp_hash"] = {g.name: {"mode": g.spec.ecmp_hash,
                                          "sysctls": ECMP_HASH[g.spec.ecmp_hash]}
                                 for g in routers if g.spec.backend == "kernel"}
        if BR_NETFILTER.exists() and any(g.kind == "switch" and g.spec.backend == "kernel"
                                         for g in net.graph.switches):
            meta["switch_sysctls"] = SWITCH_SYSCTLS
        return net

    @staticmethod
    def _start_tcp_int(exp, net: Network, tracker: RunTracker,
                       phase: Callable[[str], None], meta: PointRecord):
        """TCP-INT on the switches and hosts when the experiment asks for it (else None)."""
        if not getattr(exp.tcp_int, "enabled", False):
            return None
        phase("TCP-INT")
        from .network.tcpint import TcpInt
        tint = TcpInt(exp.tcp_int, net)
        tracker.defer("tcp-int", tint.stop)
        tint.start()
        meta["tcp_int"] = exp.tcp_int.model_dump()
        return tint

    @staticmethod
    def _prepare_ccs(exp, net: Network, flows, ccs, meta: PointRecord) -> Callable[[str], str]:
        """Every flow's CC built and registered before the clock starts, and the hosts'
        sysctls some CCs need; returns the experiment's CC name → the kernel's."""
        probed = probe_taus(exp, net, flows)

        def cc_name(name: str) -> str:
            if ccs is None:
                return name
            return ccs.kernel_name(name, probed.get(name, {}).get("params") or
                                   exp.congestion_control.get(name))
        for f in {f.cc for f in flows if f.protocol == "tcp"}:
            cc_name(f)
        meta["cc_names"] = {f.cc: cc_name(f.cc) for f in flows if f.protocol == "tcp"}
        receivers, ecn_senders = receiver_ccs(flows, cc_name)
        for host, k in receivers.items():
            # before servers listen: accepted sockets take the listener's CC
            net.run(host, f"sysctl -qw net.ipv4.tcp_congestion_control={k}")
        for host in ecn_senders:
            # iperf3 sets its CC after connect(): the SYN asks for ECN by the sysctl
            net.run(host, "sysctl -qw net.ipv4.tcp_ecn=1")
        if receivers:
            meta["receiver_cc"] = receivers
        if ecn_senders:
            meta["ecn_senders"] = sorted(ecn_senders)
        meta["cc_tau"] = cc_tau({f.cc for f in flows if f.protocol == "tcp"},
                                exp.congestion_control, probed)
        return cc_name

    @staticmethod
    def _start_instruments(exp, ctx: InstrumentContext) -> list:
        chosen = exp.instruments.chosen()
        instruments = []
        for name in list(chosen) or list(DEFAULT_INSTRUMENTS):
            opts = chosen.get(name) or REGISTRY[name].Options()
            if not opts.enabled:
                continue
            inst = REGISTRY[name](opts, ctx)
            inst.start()
            instruments.append(inst)
        return instruments

    @staticmethod
    def _run_workload(exp, net: Network, iperf, cmds, ctx: InstrumentContext,
                      phase: Callable[[str], None],
                      meta: PointRecord) -> tuple[int, list[dict]]:
        """Arm the clients, fire the events on time, wait out the duration: (t0, how late
        each event fired)."""
        schedule = sorted(Events(net, exp.workload.events).events(), key=lambda e: e[0])
        # t0 a little ahead, so every client has its start time before the clock starts
        t0 = time.monotonic_ns() + int(ARM_AHEAD * 1e9)
        ctx.t0_ns = t0
        meta["t0_monotonic_ns"] = t0
        iperf.arm(t0)
        cmds.arm(t0)

        def tick(left: float) -> None:
            phase(f"t={exp.duration - left:.1f}/{exp.duration:g}s")
        fired = []
        for at, label, action in schedule:
            _sleep_until(t0 + int(at * 1e9), tick)
            action()
            fired.append({"at": at, "late_ms": round((time.monotonic_ns() - t0) / 1e6 - at * 1e3, 3),
                          "what": label})
        _sleep_until(t0 + int(exp.duration * 1e9), tick)
        return t0, fired

    @staticmethod
    def _collect(instruments: list, net: Network, pdir: Path, meta: PointRecord) -> list[str]:
        """Stop every instrument, then write their files (and the switches' ECN counters)."""
        for inst in instruments:
            inst.stop()
        outputs = []
        for inst in instruments:
            outputs += [str(p.relative_to(pdir)) for p in inst.write()]
        marks = net.ecn_counters()
        if marks:  # beside queue.csv: what the switches' ECN marking did (network.ecn)
            from .network.ecn import write_csv
            outputs.append(str(write_csv(marks, pdir / "ecn.csv").relative_to(pdir)))
            meta["ecn_marks"] = {f"{r['node']}:{r['iface']}": r["marked_pkts"] for r in marks}
        return outputs

    # -- bundle ----------------------------------------------------------------------
    def _write_run_json(self) -> None:
        results.write_json(self.run_dir / "run.json", {
            "experiment": self.plan.experiment.name, "file": self.plan.file,
            "file_abs": str(Path(self.plan.file).resolve()), "cwd": str(Path.cwd()),
            "argv": self.argv, "sets": self.sets, "executor": self.executor,
            "points": {p.name: self.statuses.get(p.name, {"status": "pending"})
                       for p in self.plan.points}})

    def _report(self) -> None:
        """report.html: the whole run on one self-contained page."""
        try:
            from .results.report import write_report
            write_report(self.run_dir)
        except Exception as e:  # the data stands without its page
            print(f"report failed: {e} (python -m testbed report {self.run_dir})",
                  file=sys.stderr)

    def _summary(self) -> None:
        try:
            from .plots import run_summary
            run_summary(self.run_dir)
        except Exception as e:
            print(f"summary plot failed: {e}", file=sys.stderr)


def receiver_ccs(flows, cc_name: Callable[[str], str]) -> tuple[dict[str, str], set[str]]:
    """Host settings a flow's CC needs: (receiving host → the CC its sockets must run,
    sending hosts that must request ECN). DCTCP's receiver echoes the exact CE state, so
    it becomes the receiving host's default; its senders ask for ECN in every SYN."""
    try:
        from .bpf.cc import needs_ecn, runs_at_receiver
    except ImportError:
        return {}, set()
    out: dict[str, str] = {}
    ecn: set[str] = set()
    for f in flows:
        if f.protocol != "tcp":
            continue
        if needs_ecn(f.cc):
            ecn.add(f.src)
        if runs_at_receiver(f.cc):
            # two such CCs towards one receiver are refused by the loader (config.checks)
            out.setdefault(f.dst, cc_name(f.cc))
    return out, ecn


def bundle_plan(run_dir: Path) -> Plan:
    """The Plan a bundle was made from: its copy of the experiment (what was submitted,
    even if the file changed since) read as if at the original path (relative topology
    files resolve as they did), with the run's --set overrides."""
    run_dir = Path(run_dir)
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{run_dir}: not a results bundle (run.json: {e})") from None
    path = run.get("file_abs") or run["file"]
    copy = run_dir / "experiment.yaml"
    text = copy.read_text() if copy.exists() else None
    return load_experiment(path, run.get("sets") or [], text=text)


def probe_taus(exp, net: Network, flows) -> dict[str, dict]:
    """For each eBPF CC with `base_rtt_us: probe`: its flows' paths probed on the idle
    network (network/base_rtt.py) → {"params": with τ in µs, "probe": what was seen}."""
    from .bpf import cc as ccmod
    from .network import base_rtt

    out = {}
    for n in sorted({f.cc for f in flows if f.protocol == "tcp"}):
        if not ccmod.is_ebpf(n):
            continue
        p = ccmod.parse_params(n, exp.congestion_control.get(n))
        if getattr(p, "base_rtt_us", None) != "probe":
            continue
        seen = base_rtt.probe(net, [(f.src, f.dst) for f in flows if f.cc == n])
        tau = base_rtt.tau_us(seen, p.host_bw_mbps)
        out[n] = {"params": p.model_copy(update={"base_rtt_us": tau}),
                  "probe": {**seen, "frame_us": base_rtt.frame_us(p.host_bw_mbps),
                            "base_rtt_us": tau}}
    return out


def cc_tau(names: set[str], params: CongestionControl, probed: dict | None = None) -> dict:
    """Where each eBPF CC's τ comes from: the experiment (fixed µs), a probe of the idle
    paths before the workload, or the path (each flow's min RTT plus a frame, measured by
    the socket; per update in cc_trace.csv base_rtt_us)."""
    from .bpf import cc as ccmod

    out = {}
    for n in sorted(x for x in names if ccmod.is_ebpf(x)):
        if n in (probed or {}):
            pr = probed[n]["probe"]
            out[n] = {"source": "probe: median RTT of the idle paths + one frame at "
                                "host_bw", "base_rtt_us": pr["base_rtt_us"], **pr}
            continue
        p = ccmod.parse_params(n, params.get(n))
        if "base_rtt_us" not in type(p).model_fields:
            continue  # a CC without τ
        tau = p.base_rtt_us
        out[n] = ({"source": "experiment", "base_rtt_us": tau} if tau else
                  {"source": "path: each flow's min RTT + one frame at host_bw "
                             "(cc_trace.csv base_rtt_us)"})
    return out


def bottleneck_check(pdir: Path, net: Network, cpu_busy: float, duration: float) -> dict:
    """Was the link the bottleneck, or the CPU? Utilization of each sampled port, and
    the one that carried the most bytes."""
    rows = [r for r in results.read_csv(pdir / "queue.csv")
            if 0.0 <= float(r["time"]) <= duration]  # the workload's window only
    ports: dict[str, dict] = {}
    for r in rows:
        key = f"{r['node']}:{r['iface']}"
        p = ports.setdefault(key, {"t0": float(r["time"]), "b0": int(r["sent_bytes"]),
                                   "max_backlog": 0, "drops0": int(r["drops"])})
        p["t1"], p["b1"] = float(r["time"]), int(r["sent_bytes"])
        p["max_backlog"] = max(p["max_backlog"], int(r["backlog_bytes"]))
        p["drops1"] = int(r["drops"])
    out = {}
    for key, p in ports.items():
        node, iface = key.split(":")
        intf = next(i for i in net.graph.nodes[node].intfs if i.name == iface)
        rate = intf.link.params.bw
        span = max(1e-9, p["t1"] - p["t0"])
        mbps = (p["b1"] - p["b0"]) * 8 / span / 1e6
        out[key] = {"rate_mbps": rate, "mean_mbps": round(mbps, 2),
                    "util_pct": round(100 * mbps / rate, 1) if rate else None,
                    "max_backlog_bytes": p["max_backlog"], "drops": p["drops1"] - p["drops0"]}
    busiest = max((v["util_pct"] or 0 for v in out.values()), default=0)
    verdict = "link" if busiest >= 90 else ("cpu" if cpu_busy >= 90 else "neither")
    carried = max(ports, key=lambda k: ports[k]["b1"] - ports[k]["b0"], default=None)
    return {"ports": out, "busiest": carried, "cpu_busy_pct": cpu_busy, "verdict": verdict,
            "note": "utilization over the workload's window; cpu = whole machine"}


def release_spread(flows: list, t0: int) -> list[dict]:
    """Per start instant: how late its flows were let go (late_ms: the latest one;
    spread_ms: latest − earliest release) and, where the flows instrument saw them on the
    wire, how far apart their first data segments left the senders (sent_spread_ms) and
    reached the receivers (data_spread_ms: includes queueing at a shared bottleneck)."""
    out = []
    for at in sorted({f.start for f in flows}):
        group = [f for f in flows if f.start == at]
        lates = [(f.released_ns - t0) / 1e6 - at * 1e3 for f in group if f.released_ns]
        if not lates:
            continue
        ev = {"at": at, "late_ms": round(max(lates), 3),
              "spread_ms": round(max(lates) - min(lates), 3),
              "what": f"start {len(lates)} flow(s)"}
        for key, ts in (("sent_spread_ms", [f.wire_sent_ns for f in group]),
                        ("data_spread_ms", [f.wire_start_ns for f in group])):
            ts = [t for t in ts if t]
            if len(ts) > 1:
                ev[key] = round((max(ts) - min(ts)) / 1e6, 3)
        out.append(ev)
    return out


# SNMP counters of each host's namespace (fresh per point, so they start at 0) that say
# whether handshakes or data were lost: SYN retransmits, retransmitted segments, RTOs.
TCP_COUNTERS = {"TcpExt": ("TCPSynRetrans", "TCPTimeouts"), "Tcp": ("RetransSegs",)}


def tcp_counters(net: Network, hosts: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for h in hosts:
        text = net[h].cmd("cat /proc/net/netstat /proc/net/snmp")
        lines = [l.split() for l in text.splitlines() if ":" in l]
        got = {}
        for names, vals in zip(lines[::2], lines[1::2]):
            sect = names[0].rstrip(":")
            if sect in TCP_COUNTERS and vals[0] == names[0]:
                row = dict(zip(names[1:], vals[1:]))
                got.update({k: int(row[k]) for k in TCP_COUNTERS[sect] if k in row})
        out[h] = got
    return out


def _sleep_until(deadline_ns: int, tick: Callable[[float], None]) -> None:
    while True:
        _checkpoint()
        left = (deadline_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            return
        tick(left)
        time.sleep(min(left, 0.1))


# Ctrl-C / SIGTERM received. The handler raises at once, but where Python ignores
# exceptions the raise is lost: a signal landing in an at-fork hook (logging's, on every
# subprocess spawn) printed "Exception ignored in _releaseLock" and the run went on for
# its whole duration (seen in CI). The next checkpoint (every phase, every 0.1 s of the
# workload) raises it again.
_SIGNALLED: list[int] = []


def _on_signal(signum, _frame):
    _SIGNALLED.append(signum)
    _checkpoint()


def _checkpoint() -> None:
    if _SIGNALLED:
        raise KeyboardInterrupt() if _SIGNALLED[-1] == signal.SIGINT else Interrupted()
