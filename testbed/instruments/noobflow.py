"""noobflow: an XDP passive flow collector with per-CPU double-buffered maps.

The kernel side is bpf/noobflow.bcc.c (bcc); its interface is bpf/noobflow.h, from which
this module takes every constant (parsed) and every struct (bcc builds the ctypes types
from the maps' declarations). The swap protocol is explained in the C file and in
docs/noobflow.md.

Classes:
- FlowFilter: what to capture (address prefixes, ports, IP protocols), parsed from
  `net=10.0.0.0/8,port=5201,proto=tcp` text; changed while running without a reload.
- FlowRow: one flow's record merged over CPUs for one interval (one CSV row).
- Noobflow: one compiled and loaded program: attach/detach XDP on interfaces in any
  network namespace, set the filter, swap the buffers and drain the idle one, counters.
- Collector: a thread that swaps and drains every interval and hands rows to a sink;
  stop() flushes the last, partial interval.
- NoobflowInstrument: the `noobflow` instrument: hosts and/or switch ports, writes
  flows.csv and throughput_noobflow.csv (time, flow, bps).

Functions: preflight() checks root, namespace, interface, filter and XDP support before any state.
"""
from __future__ import annotations

import csv
import ctypes as C
import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..bpf import abi
from ..bpf.abi import BPF_DIR, proto_name
from ..bpf.netns import netns
from ..config import units
from ..config.models import NoobflowOptions
from ..errors import ConfigError, MissingFeature, RunError
from .base import Instrument, InstrumentContext, register

SOURCE = BPF_DIR / "noobflow.bcc.c"     # bcc source: compiled by bcc at load time
HEADER = "noobflow.h"

CSV_COLUMNS = ["time", "interval", "src", "dst", "sport", "dport", "proto", "packets",
               "bytes", "first_ns", "last_ns", "tcp_flags", "point"]
THROUGHPUT_COLUMNS = ["time", "flow", "src", "dst", "bps"]  # as the flows instrument's

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE}
BPF_PROG_TYPE_XDP = 6
NETDEV_XDP_ACT_BASIC = 1



def header_constants() -> dict[str, int]:
    """The #define NAME <number> lines of noobflow.h (the one source of the limits)."""
    return abi.defines(HEADER, "NF_")


H = header_constants()


# ---------------------------------------------------------------- filter

@dataclass(frozen=True)
class FlowFilter:
    """Capture filter: parts are ANDed, entries within a part ORed; empty = everything."""

    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ports: tuple[int, ...] = ()
    protos: tuple[int, ...] = ()

    HELP = units.FLOW_FILTER_HELP

    @classmethod
    def parse(cls, texts: Iterable[str] | str | None) -> "FlowFilter":
        """Parse one or more filter texts; ValueError names the bad token and the fix
        (the syntax: config.units.flow_filter; the counts: noobflow.h's limits)."""
        f = cls(*units.flow_filter(texts))
        if len(f.prefixes) > H["NF_MAX_PREFIXES"] or len(f.ports) > H["NF_MAX_PORTS"]:
            raise ValueError(f"at most {H['NF_MAX_PREFIXES']} prefixes and "
                             f"{H['NF_MAX_PORTS']} ports (noobflow.h limits)")
        return f

    @property
    def flags(self) -> int:
        return ((H["NF_F_PREFIX"] if self.prefixes else 0)
                | (H["NF_F_PORT"] if self.ports else 0)
                | (H["NF_F_PROTO"] if self.protos else 0))

    def __str__(self) -> str:
        parts = [f"net={p}" for p in self.prefixes] + [f"port={p}" for p in self.ports]
        parts += [f"proto={proto_name(p)}" for p in self.protos]
        return ",".join(parts) or "all"


def _mapped(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, bytes]:
    """(prefixlen over 128 bits, 16-byte address) with IPv4 in v4-mapped form."""
    if net.version == 4:
        return 96 + net.prefixlen, b"\0" * 10 + b"\xff\xff" + net.network_address.packed
    return net.prefixlen, net.network_address.packed


def _addr(raw: bytes) -> str:
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


# ---------------------------------------------------------------- namespaces, checks

def _xdp_features(ifindex: int) -> int | None:
    """XDP features the driver advertises (netdev genl family, kernel >= 6.3), or None
    when the kernel cannot tell. Must be called inside the interface's namespace."""
    try:
        from pyroute2.netlink import NLM_F_REQUEST, genlmsg
        from pyroute2.netlink.generic import GenericNetlinkSocket
    except ImportError:  # pragma: no cover
        return None

    class netdevmsg(genlmsg):
        nla_map = (("NETDEV_A_DEV_UNSPEC", "none"), ("NETDEV_A_DEV_IFINDEX", "uint32"),
                   ("NETDEV_A_DEV_PAD", "none"), ("NETDEV_A_DEV_XDP_FEATURES", "uint64"))

    s = GenericNetlinkSocket()
    try:
        s.bind("netdev", netdevmsg)
        m = netdevmsg()
        m["cmd"], m["version"] = 1, 1  # NETDEV_CMD_DEV_GET
        m["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
        for r in s.nlm_request(m, msg_type=s.prid, msg_flags=NLM_F_REQUEST):
            v = r.get_attr("NETDEV_A_DEV_XDP_FEATURES")
            if v is not None:
                return int(v)
        return None
    except Exception:
        return None
    finally:
        s.close()


def attached_prog_id(ifname: str) -> int:
    """ID of the XDP program on an interface of the current namespace, 0 if none."""
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        links = ip.link("get", ifname=ifname)
    xdp = links[0].get_attr("IFLA_XDP") if links else None
    if not xdp:
        return 0
    for name in ("IFLA_XDP_PROG_ID", "IFLA_XDP_SKB_PROG_ID", "IFLA_XDP_DRV_PROG_ID"):
        v = xdp.get_attr(name)
        if v:
            return int(v)
    return 0


def _kernel_has_xdp() -> bool | None:
    try:
        lib = C.CDLL("libbpf.so.1", use_errno=True)
        probe = lib.libbpf_probe_bpf_prog_type
        probe.restype, probe.argtypes = C.c_int, [C.c_int, C.c_void_p]
        return probe(BPF_PROG_TYPE_XDP, None) == 1
    except (OSError, AttributeError):
        return None


def preflight(iface: str, ns: str | int | None = None, mode: str = "native") -> int:
    """Everything that must hold before noobflow creates state on `iface`.

    Returns the ifindex. Raises ConfigError (bad argument) or MissingFeature (root,
    kernel, driver), both exit 2, with one line naming the argument and the fix."""
    if os.geteuid() != 0:
        raise MissingFeature("noobflow needs root (BPF and XDP attach)", "run with sudo")
    if mode not in MODE_FLAGS:
        raise ConfigError(f"unknown XDP mode {mode!r}; use native or skb", key="--mode")
    if _kernel_has_xdp() is False:
        raise MissingFeature("this kernel cannot load XDP programs",
                             "a kernel with CONFIG_BPF_SYSCALL and XDP")
    with netns(ns):
        try:
            idx = socket.if_nametoindex(iface)
        except OSError:
            where = f" in namespace {ns}" if ns is not None else ""
            raise ConfigError(f"no interface {iface!r}{where}; see `ip link`",
                              key="--interface") from None
        if mode == "native":
            feats = _xdp_features(idx)
            if feats is not None and not feats & NETDEV_XDP_ACT_BASIC:
                raise MissingFeature(f"interface {iface} has no native XDP support",
                                     "use --mode skb (generic XDP)")
        if attached_prog_id(iface):
            raise ConfigError(f"interface {iface} already has an XDP program; "
                              f"noobflow will not replace it (ip link set {iface} xdp off)",
                              key="--interface")
    return idx


# ---------------------------------------------------------------- the loaded program

@dataclass
class FlowRow:
    time: float         # end of the interval, s since t0 (CLOCK_MONOTONIC)
    interval: int
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    packets: int
    bytes: int
    first_ns: int
    last_ns: int
    tcp_flags: int
    point: str

    @property
    def flow(self) -> str:
        return f"{self.src}:{self.sport}->{self.dst}:{self.dport}"

    def csv(self) -> list:
        return [f"{self.time:.6f}", self.interval, self.src, self.dst, self.sport,
                self.dport, self.proto, self.packets, self.bytes, self.first_ns,
                self.last_ns, self.tcp_flags, self.point]


@dataclass
class _Point:
    index: int
    ifname: str
    ns: str | int | None
    label: str
    flags: int
    prog_id: int = 0


class Noobflow:
    """One compiled+loaded noobflow object serving up to NF_MAX_POINTS interfaces.

    Lifecycle: Noobflow(points=n) compiles and loads (bcc, ~4 s); attach() each
    interface; set_filter() any time; swap_drain() each interval; detach_all(); close().
    """

    def __init__(self, points: int = 1, max_flows: int | None = None):
        if not 1 <= points <= H["NF_MAX_POINTS"]:
            raise ConfigError(f"noobflow serves 1..{H['NF_MAX_POINTS']} attach points per "
                              f"run, {points} asked", key="noobflow")
        from bcc import BPF  # deferred: importing bcc is slow and needs root for use
        self._BPF = BPF
        self.max_points = points
        cflags = [f"-I{BPF_DIR}", f"-DNF_POINTS={points}"]
        if max_flows:
            cflags.append(f"-DNF_MAX_FLOWS={int(max_flows)}")
        self.cflags = cflags
        try:
            self.bpf = BPF(src_file=str(SOURCE).encode(), cflags=cflags)
        except Exception as e:
            raise RunError(f"noobflow: compiling {SOURCE.name} failed: {e}") from None
        self.buffers = [self.bpf["nf_buf0"], self.bpf["nf_buf1"]]
        self.active_map = self.bpf["nf_active"]
        self.active = 0
        self.epoch = 0
        self._fns = [self.bpf.load_func(f"noobflow_p{i}".encode(), BPF.XDP)
                     for i in range(points)]
        self.points: dict[int, _Point] = {}
        self._lock = threading.Lock()  # one swap at a time (collector vs. final flush)
        self._install(0)
        self.filter = FlowFilter()
        self.set_filter(self.filter)

    # -- buffers

    def _install(self, which: int) -> None:
        # An ARRAY_OF_MAPS update returns only after synchronize_rcu(): every XDP run
        # that could still see the previous buffer has finished (see noobflow.bcc.c).
        self.active_map[C.c_int(0)] = C.c_int(self.buffers[which].map_fd)
        self.active = which

    def swap_drain(self) -> list[tuple]:
        """Make the idle buffer active, then read, merge and clear the old one.

        Returns (point, src16, dst16, sport, dport, proto, packets, bytes, first, last,
        flags) tuples; merged over CPUs (sum, sum, min, max, OR)."""
        with self._lock:
            old = self.active
            self._install(1 - old)
            self.epoch += 1
            table = self.buffers[old]
            items = table.items()
            out = []
            for k, percpu in items:
                pk = by = fl = last = 0
                first = 0
                for v in percpu:
                    if not v.packets:
                        continue
                    pk += v.packets
                    by += v.bytes
                    fl |= v.tcp_flags
                    first = v.first_ns if not first else min(first, v.first_ns)
                    last = max(last, v.last_ns)
                if pk:
                    out.append((self.points.get(k.point), bytes(k.src), bytes(k.dst),
                                k.sport, k.dport, k.proto, pk, by, first, last, fl))
            for k, _ in items:  # idle buffer: nobody writes it while we clear it
                try:
                    del table[k]
                except KeyError:
                    pass
            return out

    def clear(self) -> None:
        """Empty both buffers and the counters (a new sweep point reuses the object)."""
        with self._lock:
            for t in self.buffers:
                t.clear()
            self.bpf["nf_stats"].clear()
            st = self.bpf["nf_stats"]
            zero = st.Leaf()
            for i in range(H["NF_MAX_POINTS"]):
                st[C.c_int(i)] = zero

    # -- filter

    def set_filter(self, f: FlowFilter) -> None:
        """Replace the filter while running (no reload). New entries are added first,
        then the flags switch, then stale entries go: in between, the union matches."""
        b = self.bpf
        protos, ports, prefixes = b["nf_protos"], b["nf_ports"], b["nf_prefixes"]
        want_proto = set(f.protos)
        for p in want_proto:
            protos[C.c_int(p)] = C.c_ubyte(1)
        want_ports = set(f.ports)
        for p in want_ports:
            ports[ports.Key(p)] = C.c_ubyte(1)
        want_pfx = {_mapped(n) for n in f.prefixes}
        for plen, addr in want_pfx:
            prefixes[self._lpm_key(plen, addr)] = C.c_ubyte(1)
        cfg = b["nf_cfg"]
        v = cfg.Leaf()
        v.flags = f.flags
        cfg[C.c_int(0)] = v
        for p in range(256):
            if p not in want_proto and protos[C.c_int(p)].value:
                protos[C.c_int(p)] = C.c_ubyte(0)
        for k in list(ports.keys()):
            if k.value not in want_ports:
                del ports[k]
        for k in list(prefixes.keys()):
            if (k.prefixlen, bytes(k.addr)) not in want_pfx:
                del prefixes[k]
        self.filter = f

    def _lpm_key(self, plen: int, addr: bytes):
        k = self.bpf["nf_prefixes"].Key()
        k.prefixlen = plen
        C.memmove(k.addr, addr, 16)
        return k

    # -- attach points

    def attach(self, ifname: str, ns: str | int | None = None, mode: str = "native",
               label: str | None = None) -> _Point:
        """Attach the next free program copy to `ifname` in namespace `ns`."""
        idx = next((i for i in range(self.max_points) if i not in self.points), None)
        if idx is None:
            raise RunError(f"noobflow: all {self.max_points} attach points in use")
        fn = self._fns[idx]
        flags = MODE_FLAGS[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST
        with netns(ns):
            try:
                self._BPF.attach_xdp(ifname, fn, flags)
            except Exception as e:
                if "not supported" in str(e).lower():  # EOPNOTSUPP: driver has no XDP
                    raise MissingFeature(f"interface {ifname} has no {mode} XDP support",
                                         "use --mode skb (generic XDP)") from None
                raise RunError(f"noobflow: attaching XDP to {ifname}: {e}") from None
            pid = attached_prog_id(ifname)
        pt = _Point(idx, ifname, ns, label or ifname, MODE_FLAGS[mode], pid)
        self.points[idx] = pt
        return pt

    def detach(self, pt: _Point) -> None:
        """Remove our program from the interface, only if it is still ours."""
        if self.points.get(pt.index) is not pt:
            return
        del self.points[pt.index]
        try:
            with netns(pt.ns):
                try:
                    socket.if_nametoindex(pt.ifname)
                except OSError:
                    return  # interface (or namespace) gone: the program went with it
                if attached_prog_id(pt.ifname) == pt.prog_id:
                    self._BPF.remove_xdp(pt.ifname, pt.flags)
        except ConfigError:
            return  # namespace gone

    def detach_all(self) -> None:
        for pt in list(self.points.values()):
            self.detach(pt)

    def stats(self) -> dict[str, dict[str, int]]:
        """Cumulative counters per attached point, summed over CPUs."""
        st = self.bpf["nf_stats"]
        out = {}
        for idx, pt in self.points.items():
            tot = dict.fromkeys((n for n, _ in st.sLeaf._fields_), 0)
            for v in st.getvalue(C.c_int(idx)):
                for n in tot:
                    tot[n] += getattr(v, n)
            out[pt.label] = tot
        return out

    def close(self) -> None:
        self.detach_all()
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


# ---------------------------------------------------------------- periodic collection

class Collector:
    """Swap and drain every `interval` seconds in a thread; rows go to `sink`.

    stop() wakes the thread, which does one last swap+drain (the partial interval) and
    exits; rows are never lost between the last full interval and the stop."""

    def __init__(self, nf: Noobflow, interval: float,
                 sink: Callable[[list[FlowRow], float, float], None],
                 t0_ns: int | Callable[[], int] = 0):
        # t0 may be a callable: the runner fixes its clock origin after instruments start
        self.nf, self.interval, self.sink = nf, interval, sink
        self._t0 = t0_ns if callable(t0_ns) else (lambda: t0_ns)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.index = 0
        self._last = time.monotonic_ns()

    def start(self) -> "Collector":
        self._last = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="noobflow", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            nxt = time.monotonic() + self.interval
            while not self._stop.wait(max(0.0, nxt - time.monotonic())):
                self.collect()
                nxt += self.interval
                if nxt < time.monotonic():  # fell behind (slow drain): don't burst
                    nxt = time.monotonic() + self.interval
            self.collect()
        except BaseException as e:  # reported by stop()
            self.error = e

    def collect(self) -> list[FlowRow]:
        now = time.monotonic_ns()
        raw = self.nf.swap_drain()
        t0 = self._t0()
        t = (now - t0) / 1e9
        rows = [FlowRow(t, self.index, _addr(s), _addr(d), sp, dp, pr, pk, by, f, l, fl,
                        pt.label if pt else "?")
                for pt, s, d, sp, dp, pr, pk, by, f, l, fl in raw]
        rows.sort(key=lambda r: (r.point, -r.bytes))
        self.sink(rows, (self._last - t0) / 1e9, t)
        self._last = now
        self.index += 1
        return rows

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self.error is not None:
            raise RunError(f"noobflow collector failed: {self.error}")


# ---------------------------------------------------------------- the instrument

@register
class NoobflowInstrument(Instrument):
    """XDP flow records on hosts and switch ports → flows_noobflow.csv (every row of
    every point) and throughput_noobflow.csv (time, flow, src, dst, bps: the flows
    instrument's throughput.csv columns, so plots can use either).

    flows_noobflow.csv, not flows.csv: the flows instrument writes its per-flow summary
    to flows.csv in the same directory. Throughput rows: one per flow and interval,
    bps = L2 frame bytes × 8 / interval; flow = "src:sport->dst:dport"; src/dst = the
    topology node owning the address (else the address). A flow seen on several points
    is taken from the first point in option order (hosts, then ports) that saw it."""

    name = "noobflow"
    Options = NoobflowOptions

    def __init__(self, options: NoobflowOptions, ctx: InstrumentContext):
        super().__init__(options, ctx)
        self.nf: Noobflow | None = None
        self.collector: Collector | None = None
        # rows kept with absolute CLOCK_MONOTONIC times: the runner fixes t0 only after
        # start(), so times relative to it are computed in write()
        self._rows: list[tuple[FlowRow, float]] = []   # (row, interval length s)
        self._owner: dict[str, str] = {}
        self._flow_point: dict[str, str] = {}
        self._order: dict[str, int] = {}
        self._stopped = False
        self.lost: dict[str, int] = {}  # per point: packets whose record did not fit

    @classmethod
    def check(cls, options: NoobflowOptions) -> None:
        if os.geteuid() != 0:
            raise MissingFeature("noobflow needs root (BPF and XDP attach)", "run with sudo")
        if _kernel_has_xdp() is False:
            raise MissingFeature("this kernel cannot load XDP programs")
        try:
            import bcc  # noqa: F401
        except ImportError:
            raise MissingFeature("noobflow needs bcc (python3-bpfcc)",
                                 "scripts/setup.sh installs it") from None

    @classmethod
    def validate(cls, options: NoobflowOptions, point) -> None:
        g = point.graph
        hosts = options.hosts or ([] if options.ports else [h.name for h in g.hosts])
        n = sum(len(g.nodes[h].intfs) for h in hosts) + len(options.ports)
        if n > H["NF_MAX_POINTS"]:
            raise point.fail((), f"{n} attach points (host interfaces and ports), at most "
                                 f"{H['NF_MAX_POINTS']}")
        try:
            FlowFilter.parse(options.filter)
        except ValueError as e:
            raise point.fail(("filter",), str(e)) from None

    def _targets(self) -> list[tuple[str, str, int]]:
        """(label, ifname, node pid) for every attach point, hosts first."""
        net, out = self.ctx.net, []
        hosts = self.options.hosts
        if not hosts and not self.options.ports:
            hosts = [h.name for h in net.hosts]
        for h in hosts:
            node = net[h]
            for ifn in node.intfNames():
                if ifn != "lo":
                    out.append((f"{h}:{ifn}", ifn, node.pid))
        for p in self.options.ports:
            node_name, sep, ifn = p.partition(":")
            if not sep:
                ifn = p
                node_name = next((s.name for s in net.switches if ifn in s.intfNames()), "")
            node = net[node_name]   # ports: checked by the loader (config.checks)
            out.append((f"{node_name}:{ifn}", ifn, node.pid))
        return out

    def _program(self, npoints: int) -> Noobflow:
        # Compile once per run: one object with NF_MAX_POINTS program copies serves
        # every point; a new sweep point clears the maps and re-attaches.
        key = f"noobflow:{self.options.max_flows}"
        nf = self.ctx.run_cache.get(key)
        if nf is None or nf.bpf is None:
            nf = Noobflow(points=H["NF_MAX_POINTS"], max_flows=self.options.max_flows)
            self.ctx.run_cache[key] = nf
            self.ctx.tracker.defer_run("noobflow: close BPF object", nf.close)
        if npoints > nf.max_points:
            raise ConfigError(f"noobflow: {npoints} attach points, at most "
                              f"{nf.max_points}", key="instruments.noobflow")
        nf.clear()
        return nf

    def start(self) -> None:
        targets = self._targets()
        for label, ifn, pid in targets:
            preflight(ifn, pid, self.options.mode)
        self.nf = nf = self._program(len(targets))
        nf.set_filter(FlowFilter.parse(self.options.filter))
        for i, (label, ifn, pid) in enumerate(targets):
            pt = nf.attach(ifn, pid, self.options.mode, label=label)
            self._order[label] = i
            self.ctx.tracker.defer(f"noobflow: detach {label}", lambda pt=pt: nf.detach(pt))
        self._owner = self._address_owners()
        self.collector = Collector(nf, self.options.interval, self._sink, 0)
        self.collector.start()
        self.ctx.tracker.defer("noobflow: stop collector", self.collector.stop)

    def _sink(self, rows: list[FlowRow], t_start: float, t_end: float) -> None:
        dt = max(t_end - t_start, 1e-9)
        for r in rows:
            owner = self._flow_point.get(r.flow)
            if owner is None or self._order.get(r.point, 99) < self._order.get(owner, 99):
                self._flow_point[r.flow] = r.point
            self._rows.append((r, dt))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.collector is not None:
                self.collector.stop()  # flushes the last interval
        finally:
            if self.nf is not None:
                self.lost = {k: v["lost_pkts"] for k, v in self.nf.stats().items()}
                self.nf.detach_all()

    def write(self) -> list[Path]:
        self.stop()
        t0 = self.ctx.t0_ns / 1e9
        self.ctx.outdir.mkdir(parents=True, exist_ok=True)
        flows = self.ctx.outdir / "flows_noobflow.csv"
        out = self.ctx.outdir / "throughput_noobflow.csv"
        with open(flows, "w", newline="") as f1, open(out, "w", newline="") as f2:
            w1, w2 = csv.writer(f1), csv.writer(f2)
            w1.writerow(CSV_COLUMNS)
            w2.writerow(THROUGHPUT_COLUMNS)
            for r, dt in self._rows:
                r.time -= t0
                w1.writerow(r.csv())
                if self._flow_point.get(r.flow) == r.point:
                    w2.writerow([f"{r.time:.6f}", r.flow, self._owner.get(r.src, r.src),
                                 self._owner.get(r.dst, r.dst), f"{r.bytes * 8 / dt:.0f}"])
        self._rows = []  # write() once: times are now relative
        return [flows, out]

    def _address_owners(self) -> dict[str, str]:
        """Address (as noobflow prints it) → topology node name."""
        out: dict[str, str] = {}
        graph = getattr(self.ctx.net, "graph", None)
        for node in getattr(graph, "nodes", {}).values():
            for i in getattr(node, "intfs", []):
                for a in (getattr(i, "ip4", None), getattr(i, "ip6", None)):
                    if a is not None:
                        out[str(a.ip)] = node.name
        return out
