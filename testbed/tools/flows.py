"""flows — per-flow packet/byte records from XDP on one interface (noobflow).

Collects flow records (src/dst address and port, protocol, packets, bytes, first/last
timestamps, TCP flags) in XDP with per-CPU double-buffered maps; every interval it
swaps the buffers, drains the idle one and prints one row per flow.

USAGE: python -m testbed flows -i IFACE [--netns NS] [--interval S] [--filter F]...
                               [--csv FILE] [--duration S] [--mode native|skb]

Exit codes: 0 done, 1 run failure, 2 bad input or missing feature (unknown interface,
malformed filter, not root, no XDP support) with nothing attached, 130 Ctrl-C is a
normal stop here (the last interval is flushed and the program detached: exit 0).

Functions: add_parser(subparsers) registers the subcommand; run(args) is its handler;
main(argv) runs it standalone (`python -m testbed.tools.flows`).
"""
from __future__ import annotations

import argparse
import csv
import signal
import sys
import threading
import time

from ..errors import BAD_INPUT, OK, RUN_FAILURE, ConfigError, MissingFeature, TestbedError
from . import positive

EXAMPLES = """examples:
  python -m testbed flows -i eth0                      # every flow, 1 s intervals
  python -m testbed flows -i h2-eth0 --netns tbh2 --interval 0.1
  python -m testbed flows -i eth0 --filter proto=tcp,port=5201
  python -m testbed flows -i eth0 --filter net=10.0.0.0/24 --filter net=fd00::/64
  python -m testbed flows -i eth0 --csv flows.csv --duration 10
  python -m testbed flows -i lo --mode skb             # generic XDP (no driver support)
"""

TABLE_FMT = "{:>10} {:>6} {:<39} {:>5} {:<39} {:>5} {:>5} {:>9} {:>12} {:>4}"
TABLE_HDR = TABLE_FMT.format("TIME(s)", "INTVL", "SRC", "SPORT", "DST", "DPORT", "PROTO",
                             "PACKETS", "BYTES", "FLGS")




def _build(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-i", "--interface", required=True, metavar="IFACE",
                   help="interface to attach XDP to (its received frames are counted)")
    p.add_argument("--netns", metavar="NS", default=None,
                   help="network namespace of IFACE: a name from `ip netns list` or a PID")
    p.add_argument("--interval", type=positive, default=1.0, metavar="S",
                   help="seconds between buffer swaps, one output block each (default 1)")
    p.add_argument("--filter", action="append", default=[], metavar="F",
                   help="capture only matching flows: net=PREFIX, port=N, proto=NAME|N, "
                        "comma-separated or repeated; kinds ANDed, values ORed")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write CSV rows to FILE ('-' = stdout) instead of the table")
    p.add_argument("--duration", type=positive, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--mode", choices=("native", "skb"), default="native",
                   help="XDP mode: native (driver, default) or skb (generic)")
    p.add_argument("-q", "--quiet", action="store_true", help="no counters at the end")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "flows", help="XDP per-flow records on one interface (noobflow)",
        description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _build(p)
    p.set_defaults(fn=run, func=run)  # testbed.cli dispatches on `fn`
    return p


class _Output:
    """Table or CSV, one block per interval."""

    def __init__(self, path: str | None):
        from ..instruments.noobflow import CSV_COLUMNS
        self.table = path is None
        self.f = sys.stdout if path in (None, "-") else open(path, "w", newline="")
        self.w = None if self.table else csv.writer(self.f)
        if self.w:
            self.w.writerow(CSV_COLUMNS)
        else:
            print(TABLE_HDR, file=self.f)
        self.rows = 0

    def __call__(self, rows, t_start: float, t_end: float) -> None:
        from ..bpf.abi import proto_name
        for r in rows:
            if self.w:
                self.w.writerow(r.csv())
            else:
                print(TABLE_FMT.format(f"{r.time:.3f}", r.interval, r.src, r.sport, r.dst,
                                       r.dport, proto_name(r.proto),
                                       r.packets, r.bytes, f"{r.tcp_flags:02x}"), file=self.f)
        self.rows += len(rows)
        self.f.flush()

    def close(self) -> None:
        if self.f is not sys.stdout:
            self.f.close()


def run(args: argparse.Namespace) -> int:
    """The subcommand: check everything, compile, attach, collect until done, detach."""
    from ..instruments.noobflow import Collector, FlowFilter, Noobflow, preflight
    try:
        flt = FlowFilter.parse(args.filter)
    except ValueError as e:
        print(f"flows: --filter: {e}", file=sys.stderr)
        return BAD_INPUT
    try:
        preflight(args.interface, args.netns, args.mode)
    except (ConfigError, MissingFeature) as e:
        print(f"flows: {e}", file=sys.stderr)
        return e.exit_code

    stop = threading.Event()
    # The handler only sets a flag; the main loop flushes and detaches.
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    nf = out = col = None
    try:
        nf = Noobflow(points=1)
        nf.set_filter(flt)
        out = _Output(args.csv)
        nf.attach(args.interface, args.netns, args.mode)
        col = Collector(nf, args.interval, out, time.monotonic_ns()).start()
        stop.wait(args.duration)
        col.stop()  # last (partial) interval flushed here
        col = None
        if not args.quiet:
            for point, st in nf.stats().items():
                print(f"flows: {point}: " + " ".join(f"{k}={v}" for k, v in st.items()),
                      file=sys.stderr)
                if st["lost_pkts"]:
                    print(f"flows: {st['lost_pkts']} packets not recorded (buffer full: "
                          f"raise NF_MAX_FLOWS or shorten --interval)", file=sys.stderr)
        return OK
    except TestbedError as e:
        print(f"flows: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # an unexpected failure: still detach below
        print(f"flows: {type(e).__name__}: {e}", file=sys.stderr)
        return RUN_FAILURE
    finally:
        # Teardown must complete even on a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if col is not None:
                col.stop()
        except Exception:
            pass
        if nf is not None:
            nf.close()
        if out is not None:
            out.close()
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    p = _build(argparse.ArgumentParser(
        prog="flows", description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
