"""probe — per-hop latency of an application's own path (noobprobe), on any interface.

Clones the app's outgoing packets in the kernel (tc egress) into TTL-limited probes with
the same 5-tuple, cycling over the hops, and matches the routers' ICMP/ICMPv6
time-exceeded replies in XDP (dropped there unless --pass-icmp). Monitors while APP runs
(started after attach) or until Ctrl-C / --duration, appending one row per probe
(unanswered ones with latency -1) every --interval.

USAGE: python -m testbed probe -i IFACE -d HOST [HOST...] [--netns NS] [--rate R]
                               [--hop-rate R] [--pass-icmp] [--hops N] [--timeout S]
                               [--interval S] [--duration S] [--csv FILE] [-- APP ARGS...]

Columns: time (s since start), host, recvcpu, seq, origseq, latency (ms, -1 unanswered),
sendtime, recvtime (CLOCK_MONOTONIC s), dest, responder, outttl (the hop), recvttl,
sport, dport, protocol (IP number), outipid, inipid.

Exit codes: 0 done (Ctrl-C is a normal stop: rows flushed, everything detached), 1 run
failure (or the app failed), 2 bad input or missing feature (unknown interface,
unresolvable destination, missing application, not root, no BPF) with nothing attached.

Functions: add_parser(subparsers) registers the subcommand; run(args) is its handler;
main(argv) runs it standalone (`python -m testbed.tools.probe`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..bpf.abi import proto_name
from ..bpf.netns import enter, resolve
from ..errors import BAD_INPUT, OK, RUN_FAILURE, ConfigError, MissingFeature, TestbedError
from . import positive

EXAMPLES = """examples:
  python -m testbed probe -i eth0 -d example.org -- curl -so /dev/null https://example.org/
  python -m testbed probe -i h1-eth0 -d 10.0.1.1 --csv probe.csv -- iperf3 -c 10.0.1.1 -t 5
  python -m testbed probe -i h1-eth0 --netns 4242 -d fd00:0:0:1::1 --hop-rate 100
  python -m testbed probe -i eth0 -d 192.0.2.7 --duration 30 --pass-icmp   # watch any app
"""

TABLE_FMT = "{:>10} {:>4} {:>8} {:>10} {:<24} {:>3} {:<24} {:>6} {:>6} {:>5}"
TABLE_HDR = TABLE_FMT.format("TIME(s)", "HOP", "SEQ", "LAT(ms)", "DEST", "TTL", "RESPONDER",
                             "SPORT", "DPORT", "PROTO")




def _build(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-i", "--interface", required=True, metavar="IFACE",
                   help="interface the app's packets leave by (tc egress + XDP attach here)")
    p.add_argument("-d", "--dest", required=True, nargs="+", metavar="HOST",
                   help="destinations to probe (names or addresses, IPv4 and IPv6)")
    p.add_argument("--netns", metavar="NS", default=None,
                   help="network namespace of IFACE (and of APP): a name from "
                        "`ip netns list`, a PID or a path")
    p.add_argument("--rate", type=positive, default=1000.0, metavar="R",
                   help="global maximum probes/s (default 1000)")
    p.add_argument("--hop-rate", type=positive, default=20.0, metavar="R",
                   help="maximum probes/s to each hop of each destination (default 20)")
    p.add_argument("--pass-icmp", action="store_true",
                   help="let matched time-exceeded messages reach the host stack")
    p.add_argument("--hops", type=int, default=None, metavar="N",
                   help="distance to the destinations (default: inferred from their TTLs)")
    p.add_argument("--timeout", type=positive, default=2.0, metavar="S",
                   help="a probe unanswered this long is reported with latency -1 (default 2)")
    p.add_argument("--interval", type=positive, default=0.5, metavar="S",
                   help="seconds between reads of the results (default 0.5)")
    p.add_argument("--duration", type=positive, default=None, metavar="S",
                   help="stop after S seconds (default: when APP exits, or Ctrl-C)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="append rows to FILE (CSV) instead of printing a table")
    p.add_argument("app", nargs="*", metavar="-- APP ARGS",
                   help="application to run while probing (after `--`)")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probe", help="per-hop latency of an app's own path (in-kernel cloned probes)",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _build(p)
    p.set_defaults(func=run)
    return p


class _Stop:
    """SIGINT/SIGTERM only set a flag: the loop then detaches and flushes."""

    def __init__(self):
        self.flag = False

    def __call__(self, *_):
        self.flag = True


def _check_args(args: argparse.Namespace, np_) -> tuple[str | None, list[str], list[str]]:
    """(namespace path, destination addresses, app argv), or a TestbedError naming the
    fix — before anything is loaded."""
    np_.check_support()
    netns = resolve(args.netns)
    if args.hops is not None and not 2 <= args.hops <= np_.H["NP_MAX_HOPS"] + 1:
        raise ConfigError(f"--hops must be 2..{np_.H['NP_MAX_HOPS'] + 1}", key="--hops")
    np_.interface_addresses(args.interface, netns)          # unknown interface → error
    dests: list[str] = []
    for d in args.dest:
        dests += np_.resolve(d)
    app = list(args.app)
    if app and shutil.which(app[0]) is None:
        raise ConfigError(f"application {app[0]!r} not found (fix: a program on PATH "
                          "or a path to one)", key="APP")
    return netns, dests, app


class _Output:
    """Samples to a CSV file or as a table on stdout; counts them."""

    def __init__(self, csv_path: str | None, t0: int, np_):
        self.t0, self.rows = t0, 0
        self.sink = np_.CsvSink(Path(csv_path), t0) if csv_path else None
        if not self.sink:
            print(TABLE_HDR, flush=True)

    def __call__(self, samples) -> None:
        self.rows += len(samples)
        if self.sink:
            self.sink.write(samples)
            return
        for s in samples:
            print(TABLE_FMT.format(f"{s.row(self.t0)[0][:10]}", s.outttl, s.seq,
                                   f"{s.latency_ms:.3f}", s.dest, s.recvttl,
                                   s.responder or "*", s.sport, s.dport,
                                   proto_name(s.protocol)),
                  flush=True)

    def close(self) -> None:
        if self.sink:
            self.sink.close()


def _start_app(app: list[str], netns: str | None) -> subprocess.Popen:
    """The application, in the probed interface's namespace."""
    pre = None
    if netns:
        def pre() -> None:
            try:
                enter(netns)
            except TestbedError:
                os._exit(127)
    return subprocess.Popen(app, preexec_fn=pre)


def _poll_until_done(args: argparse.Namespace, prober, emit, proc, stop: _Stop) -> None:
    """Drain results every --interval until the app exits, --duration passes or a signal."""
    deadline = time.monotonic() + args.duration if args.duration else None
    next_poll = time.monotonic() + args.interval
    while not stop.flag:
        if proc is not None and proc.poll() is not None:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.05)
        if time.monotonic() >= next_poll:
            emit(prober.poll())
            next_poll += args.interval


def _finish(args: argparse.Namespace, prober, host, emit) -> None:
    """Stop emitting first, give the last replies time to come back, then detach XDP and
    report everything still outstanding as unanswered."""
    prober.detach_tc(host)
    time.sleep(min(0.3, args.timeout))
    emit(prober.poll())
    prober.remove_host(host)
    emit(prober.poll(give_up_all=True))


def _stop_app(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> int:
    from ..instruments import noobprobe as np_

    try:
        netns, dests, app = _check_args(args, np_)
    except TestbedError as e:
        print(f"probe: {e}", file=sys.stderr)
        return e.exit_code

    settings = np_.HostSettings(args.rate, args.hop_rate, args.pass_icmp, args.hops,
                                args.timeout)
    stop = _Stop()
    prober = out = proc = None
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic_ns()          # the CSV's time base: when probing was asked for
    try:
        prober = np_.Prober()
        try:
            host = prober.add_host(args.interface, args.interface, dests, settings, netns)
        except ConfigError as e:
            print(f"probe: {e}", file=sys.stderr)
            return BAD_INPUT
        out = _Output(args.csv, t0, np_)
        if app:
            proc = _start_app(app, netns)
        _poll_until_done(args, prober, out, proc, stop)
        _finish(args, prober, host, out)
    except TestbedError as e:
        print(f"probe: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # bcc compile/load, netlink: one line, then the cleanup below
        print(f"probe: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else ''}",
              file=sys.stderr)
        return RUN_FAILURE
    finally:
        _stop_app(proc)
        if prober is not None:
            try:
                prober.close()
            except Exception as e:  # keep the report one line; the kernel side is gone
                print(f"probe: cleanup: {e}", file=sys.stderr)
        if out is not None:
            out.close()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"probe: {out.rows if out else 0} probes ({prober.samples_seen if prober else 0} "
          f"answered, {prober.lost if prober else 0} lost)", file=sys.stderr)
    if proc is not None and proc.returncode not in (0, None) and not stop.flag:
        print(f"probe: application exited with {proc.returncode}", file=sys.stderr)
        return RUN_FAILURE
    return OK


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the bad-input rule), exit 2."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = _build(_OneLineParser(prog="probe", description=__doc__.split("\n\n")[1],
                              epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter))
    try:
        args = p.parse_args(argv)
    except SystemExit as e:     # argparse already printed its one line
        return BAD_INPUT if e.code else OK
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
