"""noobprobe: per-hop latency of the application's own path, probed in-band from the kernel.

The BPF side (bpf/noobprobe.bcc.c, interface in bpf/noobprobe.h) clones the app's packets
on tc egress into TTL-limited probes and matches the routers' time-exceeded replies in
XDP. This module loads it, attaches it and turns its maps into CSV rows.

Classes:
- HostSettings: rates and options of one probing host (interface).
- Sample: one probe, answered or not (one CSV row).
- Prober: one compiled bcc object (compile once per run: ~2-5 s, ~190 MB) serving any
  number of hosts in any network namespaces: add_host() attaches tc egress + XDP on an
  interface (setns'ing into the host's namespace for netlink only), poll() drains the
  per-CPU result rings and gives up on stale probes, remove_host()/close() detach.
- CsvSink: appends Samples to a CSV file, header once, flushed per batch.
- NoobprobeInstrument: the `noobprobe` instrument (registered), probing from chosen hosts
  of an experiment to chosen destinations and writing `noobprobe.csv`.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..bpf import abi
from ..bpf.abi import BPF_DIR
from ..bpf.netns import netns as in_netns, ns_path
from ..config.models import InstrumentOptions, NoobprobeOptions
from ..errors import ConfigError, MissingFeature, RunError
from .base import Instrument, register

SRC = BPF_DIR / "noobprobe.bcc.c"     # bcc source: compiled by bcc at load time
HEADER = "noobprobe.h"
TC_PRIO = 0xE0B                 # our filter's preference on clsact egress (unique to us)
XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1, 2, 4

COLUMNS = ["time", "host", "recvcpu", "seq", "origseq", "latency", "sendtime", "recvtime",
           "dest", "responder", "outttl", "recvttl", "sport", "dport", "protocol", "outipid",
           "inipid"]


def header_defines() -> dict[str, int]:
    """The integer #defines of noobprobe.h: the one source of the limits and slots."""
    return abi.defines(HEADER, "NP_")


H = header_defines()


def netns_of_pid(pid: int) -> str:
    return ns_path(pid)


def interface_addresses(iface: str, netns: Optional[str] = None) -> list[str]:
    """Global-scope IPv4/IPv6 addresses of `iface` (raises ConfigError if it is absent)."""
    from pyroute2 import IPRoute
    with in_netns(netns), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=iface)
        if not idx:
            raise ConfigError(f"no interface {iface!r} (fix: `ip link` lists the names)",
                              key="-i/--interface")
        return [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0])
                if a["scope"] == 0 and a.get("IFA_ADDRESS")]


def resolve(host: str) -> list[str]:
    """Addresses of a host name or literal (v4 and v6); ConfigError if none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve destination {host!r}: {e.strerror} "
                          "(fix: give an address or a name in /etc/hosts)", key="-d/--dest")
    return sorted({i[4][0] for i in infos})


def check_support() -> None:
    """MissingFeature unless this process can compile and load the programs."""
    if os.geteuid() != 0:
        raise MissingFeature("noobprobe needs root (BPF, tc, XDP)", "run it with sudo/as root")
    try:
        import bcc  # noqa: F401
    except Exception as e:  # ImportError, or bcc failing to find libbcc
        raise MissingFeature(f"bcc is not usable ({e})", "apt install python3-bpfcc")
    rel = os.uname().release
    if not (Path(f"/lib/modules/{rel}/build").exists() or Path("/sys/kernel/btf/vmlinux").exists()):
        raise MissingFeature(f"no kernel headers for {rel} (bcc needs them)",
                             "scripts/setup.sh links Debian's headers")
    # a kernel.* sysctl: visible in every network namespace (net.core.bpf_* is not)
    if not Path("/proc/sys/kernel/bpf_stats_enabled").exists():
        raise MissingFeature("this kernel has no BPF support", "a kernel with CONFIG_BPF_SYSCALL")


# ---- data --------------------------------------------------------------------------------

@dataclass
class HostSettings:
    rate: float = 1000.0        # global maximum probes/s from this host
    hop_rate: float = 20.0      # maximum probes/s to each hop of each destination
    pass_icmp: bool = False     # let matched time-exceeded reach the host stack
    hops: Optional[int] = None  # fixed distance to every destination (None: inferred)
    timeout: float = 2.0        # a probe unanswered this long is reported with latency -1


@dataclass
class Sample:
    host: str
    recvcpu: int
    seq: int
    origseq: int
    send_ns: int
    recv_ns: int                # -1: unanswered
    dest: str
    responder: str
    outttl: int
    recvttl: int
    sport: int
    dport: int
    protocol: int
    outipid: int
    inipid: int

    @property
    def latency_ms(self) -> float:
        return (self.recv_ns - self.send_ns) / 1e6 if self.recv_ns >= 0 else -1.0

    def row(self, t0_ns: int) -> list:
        t = (self.recv_ns if self.recv_ns >= 0 else self.send_ns) - t0_ns
        return [f"{t / 1e9:.9f}", self.host, self.recvcpu, self.seq, self.origseq,
                f"{self.latency_ms:.6f}" if self.recv_ns >= 0 else "-1",
                f"{self.send_ns / 1e9:.9f}",
                f"{self.recv_ns / 1e9:.9f}" if self.recv_ns >= 0 else "-1",
                self.dest, self.responder, self.outttl, self.recvttl, self.sport, self.dport,
                self.protocol, self.outipid, self.inipid]


@dataclass
class _Host:
    hid: int
    label: str
    iface: str
    netns: Optional[str]
    ifindex: int
    settings: HostSettings
    dests: dict[int, tuple[str, str]] = field(default_factory=dict)   # id → (src, dst)
    keys: list = field(default_factory=list)
    made_clsact: bool = False
    xdp_flags: int = 0
    tc_attached: bool = False


def _addr_bytes(a: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(a)
    return (4, ip.packed + bytes(12)) if ip.version == 4 else (6, ip.packed)


def _addr_str(b: bytes, fam: int) -> str:
    return str(ipaddress.ip_address(bytes(b[:4]) if fam == 4 else bytes(b)))


# ---- the loaded object ---------------------------------------------------------------------

class Prober:
    """One compiled and loaded noobprobe object; hosts attach to it and share its maps."""

    TC_PROGS = {"np_tc_v4": "NP_TC_V4", "np_tc_v6": "NP_TC_V6", "np_tc_tcp": "NP_TC_TCP",
                "np_tc_udp": "NP_TC_UDP", "np_tc_icmp": "NP_TC_ICMP"}
    XDP_PROGS = {"np_xdp_v4": "NP_XDP_V4", "np_xdp_v6": "NP_XDP_V6"}

    def __init__(self, cflags: Optional[list[str]] = None):
        from bcc import BPF
        self._BPF = BPF
        self.lock = threading.RLock()
        t = time.monotonic()
        self.b = BPF(src_file=str(SRC).encode(), cflags=[f"-I{BPF_DIR}", *(cflags or [])])
        self.compile_s = time.monotonic() - t
        self.tc_entry = self.b.load_func(b"np_tc_entry", BPF.SCHED_CLS)
        self.xdp_entry = self.b.load_func(b"np_xdp_entry", BPF.XDP)
        tc_arr, xdp_arr = self.b[b"np_tc_progs"], self.b[b"np_xdp_progs"]
        for name, slot in self.TC_PROGS.items():
            tc_arr[ctypes.c_int(H[slot])] = ctypes.c_int(self.b.load_func(name.encode(), BPF.SCHED_CLS).fd)
        for name, slot in self.XDP_PROGS.items():
            xdp_arr[ctypes.c_int(H[slot])] = ctypes.c_int(self.b.load_func(name.encode(), BPF.XDP).fd)
        self.hosts: dict[int, _Host] = {}
        self._free_ids = list(range(H["NP_MAX_DESTS"]))
        self._last_head: list[int] = [0] * len(self.b[b"np_head"][ctypes.c_int(0)])
        self.lost = 0
        self.samples_seen = 0

    # -- hosts -------------------------------------------------------------------------------

    def add_host(self, label: str, iface: str, dests: list[str], settings: HostSettings,
                 netns: Optional[str] = None) -> _Host:
        """Attach on `iface` (in `netns`) and probe every (interface address, dest address)
        pair of the same family. Everything done here is undone by remove_host()."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        with self.lock:
            hid = next(i for i in range(H["NP_MAX_HOSTS"]) if i not in self.hosts)
            srcs = interface_addresses(iface, netns)
            with in_netns(netns), IPRoute() as ipr:
                ifindex = ipr.link_lookup(ifname=iface)[0]
            h = _Host(hid, label, iface, netns, ifindex, settings)
            self.hosts[hid] = h
            try:
                self._set_host(h, active=True)
                for s in srcs:
                    for d in dests:
                        if ipaddress.ip_address(s).version == ipaddress.ip_address(d).version:
                            self._add_dest(h, s, d)
                if not h.dests:
                    raise ConfigError(f"{label}: no destination of the address families of "
                                      f"{iface} ({', '.join(srcs) or 'no address'})",
                                      key="-d/--dest")
                with in_netns(netns):
                    self._attach_xdp(h)
                    with IPRoute() as ipr:
                        try:
                            ipr.tc("add", "clsact", ifindex)
                            h.made_clsact = True
                        except NetlinkError as e:
                            if e.code != errno.EEXIST:
                                raise
                        ipr.tc("add-filter", "bpf", ifindex, ":1", fd=self.tc_entry.fd,
                               name="np_tc_entry", parent="ffff:fff3", classid=1,
                               direct_action=True, prio=TC_PRIO)
                        h.tc_attached = True
            except BaseException:
                self.remove_host(h)
                raise
            return h

    def _attach_xdp(self, h: _Host) -> None:
        err = None
        for mode in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
            flags = XDP_FLAGS_UPDATE_IF_NOEXIST | mode
            try:
                self._BPF.attach_xdp(h.iface.encode(), self.xdp_entry, flags)
                h.xdp_flags = flags
                return
            except Exception as e:
                err = e
        raise RunError(f"noobprobe: cannot attach XDP on {h.label}:{h.iface} "
                       f"(another XDP program there?): {err}")

    def _set_host(self, h: _Host, active: bool) -> None:
        tab = self.b[b"np_hosts"]
        v = tab.Leaf()
        s = h.settings
        v.global_interval_ns = int(1e9 / s.rate) if s.rate > 0 else 0
        v.hop_interval_ns = int(1e9 / s.hop_rate) if s.hop_rate > 0 else 0
        v.pass_icmp = int(s.pass_icmp)
        v.active = int(active)
        tab[ctypes.c_int(h.hid)] = v

    def _add_dest(self, h: _Host, src: str, dst: str) -> None:
        if not self._free_ids:
            raise ConfigError(f"more than {H['NP_MAX_DESTS']} (source, destination) pairs",
                              key="-d/--dest")
        did = self._free_ids.pop(0)
        fam, sb = _addr_bytes(src)
        _, db = _addr_bytes(dst)
        k = self.b[b"np_dests"].Key()
        k.src[:] = list(sb)
        k.dst[:] = list(db)
        k.family = fam
        st = self.b[b"np_dstate"].Leaf()
        st.host = h.hid
        if h.settings.hops:
            st.hops = h.settings.hops
            st.fixed_hops = 1
        self.b[b"np_dstate"][ctypes.c_int(did)] = st
        self.b[b"np_dests"][k] = ctypes.c_uint32(did)
        h.dests[did] = (src, dst)
        h.keys.append(k)

    def detach_tc(self, h: _Host) -> None:
        """Stop emitting probes from `h` (replies keep being matched until remove_host)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        with self.lock:
            if not (h.tc_attached or h.made_clsact):
                return
            try:
                with in_netns(h.netns), IPRoute() as ipr:
                    if h.made_clsact:
                        ipr.tc("del", "clsact", h.ifindex)
                    elif h.tc_attached:
                        ipr.tc("del-filter", "bpf", h.ifindex, ":1", parent="ffff:fff3",
                               prio=TC_PRIO)
            except (NetlinkError, OSError, ConfigError, RunError) as e:
                # the interface (or its namespace) is already gone with what was on it
                if getattr(e, "code", None) not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                    if Path(h.netns or "/").exists():
                        raise
            h.tc_attached = h.made_clsact = False

    def remove_host(self, h: _Host) -> None:
        """Detach tc and XDP from `h`'s interface and forget its destinations."""
        with self.lock:
            try:
                self.detach_tc(h)
            finally:
                if h.xdp_flags:
                    try:
                        if not h.netns or Path(h.netns).exists():
                            with in_netns(h.netns):
                                if socket_ifindex(h.iface):
                                    self._BPF.remove_xdp(h.iface.encode(), h.xdp_flags)
                    finally:
                        h.xdp_flags = 0
                for k in h.keys:
                    try:
                        del self.b[b"np_dests"][k]
                    except KeyError:
                        pass
                self._free_ids.extend(h.dests)
                h.keys.clear()
                try:
                    self._set_host(h, active=False)
                except Exception:
                    pass
                self.hosts.pop(h.hid, None)

    def close(self) -> None:
        with self.lock:
            for h in list(self.hosts.values()):
                self.remove_host(h)
            self.b.cleanup()

    # -- results -------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        names = {v: k[6:].lower() for k, v in H.items()
                 if k.startswith("NP_ST_") and k != "NP_ST_MAX"}
        tab = self.b[b"np_stats"]
        return {names[i]: int(sum(tab[ctypes.c_int(i)])) for i in range(H["NP_ST_MAX"])}

    def dest_state(self, h: _Host) -> dict[str, dict]:
        out = {}
        for did, (s, d) in h.dests.items():
            st = self.b[b"np_dstate"][ctypes.c_int(did)]
            out[d] = {"src": s, "hops": st.hops, "responded": st.responded,
                      "next_seq": st.next_seq, "round": st.round}
        return out

    def _owner(self, did: int) -> Optional[tuple[_Host, str]]:
        for h in self.hosts.values():
            if did in h.dests:
                return h, h.dests[did][1]
        return None

    def poll(self, give_up_all: bool = False) -> list[Sample]:
        """Answered probes since the last poll, then unanswered ones older than their
        host's timeout (all of them if give_up_all) with recv_ns = -1."""
        out: list[Sample] = []
        slots = H["NP_RESULT_SLOTS"]
        with self.lock:
            heads = [int(x) for x in self.b[b"np_head"][ctypes.c_int(0)]]
            want: dict[int, list[int]] = {}
            for cpu, head in enumerate(heads):
                last = self._last_head[cpu]
                if head - last > slots:
                    self.lost += head - last - slots
                    last = head - slots
                for i in range(last, head):
                    want.setdefault(i % slots, []).append(cpu)
                self._last_head[cpu] = head
            res = self.b[b"np_results"]
            for slot, cpus in sorted(want.items()):
                vals = res[ctypes.c_int(slot)]
                for cpu in cpus:
                    r = vals[cpu]
                    own = self._owner(r.dest)
                    if own is None:
                        continue
                    h, dst = own
                    out.append(Sample(h.label, r.recv_cpu, r.seq, r.origseq, r.send_ns,
                                      r.recv_ns, dst, _addr_str(bytes(r.responder), r.family),
                                      r.outttl, r.recvttl, r.sport, r.dport, r.proto,
                                      r.outipid, r.inipid))
            self.samples_seen += len(out)
            now = time.monotonic_ns()
            tab = self.b[b"np_outstanding"]
            stale = []
            for k, v in tab.items():
                own = self._owner(k.dest)
                tmo = int(own[0].settings.timeout * 1e9) if own else 0
                if give_up_all or own is None or now - v.send_ns > tmo:
                    stale.append(k)
                    if own:
                        h, dst = own
                        out.append(Sample(h.label, -1, k.seq, v.origseq, v.send_ns, -1, dst,
                                          "", v.ttl, -1, v.sport, v.dport, k.proto, v.ipid,
                                          -1))
            for k in stale:
                try:
                    del tab[k]
                except KeyError:
                    pass
        out.sort(key=lambda s: s.send_ns)
        return out


def socket_ifindex(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        return 0


class CsvSink:
    """Appends Samples to a CSV file (header once); flushed after every batch."""

    def __init__(self, path: Path, t0_ns: int):
        self.path, self.t0_ns = Path(path), t0_ns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.f = open(self.path, "a", newline="")
        import csv
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(COLUMNS)
        self.rows = 0

    def write(self, samples: list[Sample]) -> None:
        for s in samples:
            self.w.writerow(s.row(self.t0_ns))
        self.rows += len(samples)
        self.f.flush()

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


# ---- the instrument ------------------------------------------------------------------------

def _node_netns(node) -> str:
    return netns_of_pid(node.pid)


def _node_iface(node) -> str:
    intfs = [i for i in node.intfList() if i.name != "lo"]
    if not intfs:
        raise ConfigError(f"host {node.name} has no interface", key="instruments.noobprobe")
    return intfs[0].name


@register
class NoobprobeInstrument(Instrument):
    """Per-hop latency from `hosts` to `dests` over the apps' own flows -> noobprobe.csv."""

    name = "noobprobe"
    Options = NoobprobeOptions

    @classmethod
    def check(cls, options: InstrumentOptions) -> None:
        check_support()

    @classmethod
    def validate(cls, options: InstrumentOptions, point) -> None:
        """What the prober would refuse once attached, found from the graph: an interface
        the host lacks, a host with no destination of its address families, more
        (source, destination) pairs or hosts than the loaded object serves."""
        o: NoobprobeOptions = options  # type: ignore[assignment]
        g = point.graph
        if len(o.hosts) > H["NP_MAX_HOSTS"]:
            raise point.fail(("hosts",), f"{len(o.hosts)} probing hosts, at most "
                                         f"{H['NP_MAX_HOSTS']}")
        pairs = 0
        for k, hn in enumerate(o.hosts):
            node = g.nodes[hn]
            if o.iface and o.iface not in [i.name for i in node.intfs]:
                raise point.fail(("iface",), f"{hn} has no interface {o.iface!r} (has "
                                             f"{', '.join(i.name for i in node.intfs)})")
            intf = next(i for i in node.intfs if not o.iface or i.name == o.iface)
            srcs = [a.ip for a in (intf.ip4, intf.ip6) if a is not None]
            dests = []
            for j, d in enumerate(o.dests or [n.name for n in g.hosts if n.name != hn]):
                if d in g.nodes:
                    if not g.reachable(hn, d):
                        raise point.fail(("dests", j), f"{hn} cannot reach {d}")
                    di = g.nodes[d].intfs[0]
                    dests += [a.ip for a in (di.ip4, di.ip6) if a is not None]
                else:
                    dests.append(ipaddress.ip_network(d, strict=False).network_address)
            if not o.ipv6:
                dests = [d for d in dests if d.version == 4]
            n = sum(1 for s in srcs for d in dests if s.version == d.version)
            if not n:
                raise point.fail(("hosts", k), f"{hn}: no destination of its address "
                                               f"families ({', '.join(map(str, srcs))})")
            pairs += n
        if pairs > H["NP_MAX_DESTS"]:
            raise point.fail(("dests",), f"{pairs} (source, destination) pairs, at most "
                                         f"{H['NP_MAX_DESTS']}: probe fewer destinations")

    def start(self) -> None:
        o: NoobprobeOptions = self.options  # type: ignore[assignment]
        net = self.ctx.net
        prober = self.ctx.run_cache.get("noobprobe")
        if prober is None:        # compile once per run, shared by every point and host
            prober = Prober()
            self.ctx.run_cache["noobprobe"] = prober
            self.ctx.tracker.defer_run("noobprobe: unload", prober.close)
        self.prober: Prober = prober
        self.hosts: list[_Host] = []
        self.samples: list[Sample] = []
        settings = HostSettings(o.rate, o.hop_rate, o.pass_icmp, o.hops, o.timeout)
        names = [h.name for h in net.hosts]   # node names: checked by the loader
        for hn in o.hosts:
            node = net[hn]
            dests: list[str] = []
            for d in (o.dests or [n for n in names if n != hn]):
                if d in names:
                    dn = net[d]
                    dests += interface_addresses(_node_iface(dn), _node_netns(dn))
                else:
                    dests += resolve(d)
            if not o.ipv6:
                dests = [d for d in dests if ipaddress.ip_address(d).version == 4]
            h = prober.add_host(hn, o.iface or _node_iface(node), dests, settings,
                                _node_netns(node))
            self.ctx.tracker.defer(f"noobprobe: detach {hn}",
                                   lambda h=h: prober.remove_host(h))
            self.hosts.append(h)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noobprobe-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.options.poll_interval):  # type: ignore[attr-defined]
            self.samples += self.prober.poll()

    def stop(self) -> None:
        if not getattr(self, "hosts", None):
            return
        self._stop.set()
        self._thread.join()
        for h in self.hosts:
            self.prober.detach_tc(h)
        time.sleep(0.3)             # replies to the last probes are still in flight
        self.samples += self.prober.poll()
        for h in self.hosts:
            self.prober.remove_host(h)
        self.samples += self.prober.poll(give_up_all=True)
        self.hosts = []

    def write(self) -> list[Path]:
        path = self.ctx.outdir / "noobprobe.csv"
        sink = CsvSink(path, self.ctx.t0_ns)
        sink.write(sorted(self.samples, key=lambda s: s.send_ns))
        sink.close()
        meta = self.ctx.outdir / "noobprobe_meta.json"
        meta.write_text(json.dumps({"router_sysctls": self._router_sysctls(),
                                    "lost_samples": self.prober.lost,
                                    "stats": self.prober.stats(),
                                    "compile_s": self.prober.compile_s}, indent=1))
        return [path, meta]

    def _router_sysctls(self) -> dict:
        out = {}
        keys = ["net.ipv4.icmp_ratelimit", "net.ipv4.icmp_msgs_per_sec",
                "net.ipv6.icmp.ratelimit", "net.ipv4.fib_multipath_hash_policy",
                "net.ipv4.fib_multipath_hash_fields"]
        for node in getattr(self.ctx.net, "switches", []):
            try:
                vals = node.cmd("sysctl -n " + " ".join(keys)).split()
                out[node.name] = dict(zip(keys, vals))
            except Exception:
                pass
        return out


__all__ = ["Prober", "HostSettings", "Sample", "CsvSink", "NoobprobeInstrument", "in_netns",
           "resolve", "interface_addresses", "check_support", "COLUMNS", "header_defines"]
