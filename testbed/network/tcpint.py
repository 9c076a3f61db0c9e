"""TCP-INT in a running network: the switch program on every switch port, the host program
in the experiment's cgroups, and the per-socket telemetry map the congestion controller reads.

Classes:
- TcpInt: one run's TCP-INT: check() before any state, start() (compile, load once, pin,
  attach), stop() (detach everything); every step also registered with the run tracker.

Functions:
- defs(): the #define constants of bpf/tcp_int_defs.h (the one definition of the option).
- ls_code(rate_mbps, scale): the LinkSpeed code of a link.
- encode_intval / decode_qdepth / decode_util: the encodings, for decoders and tests.
- sk_state(sock, pin_dir): the tcp_int_state of one of the calling process's sockets
  (call it from the root mount namespace: Mininet nodes remount /sys, hiding bpffs).
- checks(): TCP-INT's kernel features as doctor rows (TcpInt.check() raises instead).

Pins (under RunTracker.pin_dir()): tcp_int_switch (program, attached by path with
`tc … bpf da pinned`), tcp_int_ports, tcp_int_state (for the CC: reuse_map), tcp_int_events,
tcp_int_lost (for the int_trace instrument).
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from ..bpf import abi
from ..bpf.abi import Layout
from ..config.models import IntOptions
from ..errors import MissingFeature, RunError
from .tcports import QDISC_READS, TcPorts, qdisc_read

if TYPE_CHECKING:
    from ..bpf.libbpf import BpfObject, Map
    from .net import Network

DEFS_H = "tcp_int_defs.h"
STRUCTS_H = "tcp_int.h"
TC_PREF = 29258  # our tc filter priority on clsact egress (0x724a): removed by priority
PIN_NAMES = ("tcp_int_switch", "tcp_int_ports", "tcp_int_state", "tcp_int_events",
             "tcp_int_lost")


# -- the header, read (never copied) ----------------------------------------------------
def defs() -> dict[str, int]:
    """Every `#define TCP_INT_… <literal>` of tcp_int_defs.h."""
    return abi.defines(DEFS_H, "TCP_INT_")


def D(name: str) -> int:
    return defs()[f"TCP_INT_{name}"]


def layout(struct_name: str) -> Layout:
    """A struct of tcp_int.h."""
    return abi.layout(struct_name, STRUCTS_H)


def find_option(tcp: bytes) -> tuple[int, bytes] | None:
    """(offset in the TCP header, the option's bytes) of TCP-INT, wherever it stands among
    the options of a raw TCP header (e.g. bytes(scapy_pkt[TCP]) of a capture), or None."""
    kind, olen = D("OPT_KIND"), D("OPT_LEN")
    doff, i = (tcp[12] >> 4) * 4, 20
    while i < min(doff, len(tcp)):
        k = tcp[i]
        if k == 0:          # end of option list
            break
        if k == 1:          # NOP
            i += 1
            continue
        if i + 1 >= len(tcp) or tcp[i + 1] < 2:
            break           # malformed
        if k == kind and tcp[i + 1] == olen:
            return i, tcp[i:i + olen]
        i += tcp[i + 1]
    return None


# -- encodings (mirror of tcp_int.h's helpers, from the same constants) ------------------
def ls_code(rate_mbps: float | None, scale: str = "public") -> int:
    """Largest LinkSpeed code not above the rate (public: only codes for >= 10 Gb/s)."""
    if not rate_mbps:
        return 0
    codes = range(1, 8) if scale == "public" else range(1, 16)
    best, best_mbps = 0, 0
    for c in codes:
        mbps = D(f"LS_MBPS_{c}")
        if best_mbps < mbps <= rate_mbps:
            best, best_mbps = c, mbps
    return best


def ls_mbps(code: int, scale: str = "public") -> int:
    if code >= 8 and scale == "public":
        return 0
    return D(f"LS_MBPS_{code}")


def qdepth_shift(scale: str) -> int:
    return D("QDEPTH_SHIFT_FINE") if scale == "fine" else D("QDEPTH_SHIFT_PUBLIC")


def encode_intval(version: str, scale: str, backlog: int, util: float, rate_bps: int) -> int:
    """INTval of a hop (util: 0..1)."""
    low_max = D("INTVAL_LOW_MAX")
    if backlog:
        return D("INTVAL_QDEPTH") | min(backlog >> qdepth_shift(scale), low_max)
    util = min(max(util, 0.0), 1.0)
    if version == "v02":
        shift = D("V02_UTIL_SHIFT_FINE") if scale == "fine" else D("V02_UTIL_SHIFT_PUBLIC")
        return min(int(util * 100) >> shift, low_max)
    if scale == "fine":
        return min(int(util * D("V04_FINE_UTIL_FULL")), low_max)
    avail = int(rate_bps / 1e6 * (1 - util)) // D("V04_AVAILBW_UNIT_MBPS")
    return low_max - min(avail, low_max)


def decode_qdepth(ival: int, scale: str) -> int:
    if ival < D("INTVAL_QDEPTH"):
        return 0
    return (ival & D("INTVAL_LOW_MAX")) << qdepth_shift(scale)


def decode_util(ival: int, version: str, scale: str, link_mbps: int = 0) -> float:
    """Utilization 0..1 (queueing: 1)."""
    if ival >= D("INTVAL_QDEPTH"):
        return 1.0
    if version == "v02":
        shift = D("V02_UTIL_SHIFT_FINE") if scale == "fine" else D("V02_UTIL_SHIFT_PUBLIC")
        return min((ival << shift) / 100, 1.0)
    if scale == "fine":
        return min(ival / D("V04_FINE_UTIL_FULL"), 1.0)
    if not link_mbps:
        return 0.0
    avail = (D("INTVAL_LOW_MAX") - ival) * D("V04_AVAILBW_UNIT_MBPS")
    return max(0.0, (link_mbps - avail) / link_mbps)


def hop_id_of(graph, gnode) -> int:
    """HopID a port of this node writes: 0 = the packet's TTL (routers decrement it).

    Bridges leave the TTL alone, so every bridge would write the same HopID: each gets
    64 - n instead, n = its rank among the L2 switches (1..15), so HopIDEcr = n."""
    if gnode.kind != "switch":
        return 0
    l2 = [g.name for g in graph.switches if g.kind == "switch"]
    n = min(l2.index(gnode.name) + 1, D("MAX_HOPS"))
    return D("TTL_INIT") - n


# -- options (the experiment's `int:`: config.models.IntOptions) ------------------------
def version_code(o: IntOptions) -> int:
    return D("VERSION_V02") if o.version == "v02" else D("VERSION_V04")


def scale_code(o: IntOptions) -> int:
    return D("SCALE_FINE") if o.scale == "fine" else D("SCALE_PUBLIC")


# -- per-socket state from user space --------------------------------------------------
def sk_state(sock: socket.socket | int, pin_dir: Path) -> dict | None:
    """The tcp_int_state of one of this process's sockets (SK_STORAGE is keyed by fd)."""
    from ..bpf.libbpf import pinned_map

    lay = layout("tcp_int_state")
    m = pinned_map(Path(pin_dir) / "tcp_int_state", 4, lay.size)
    try:
        fd = sock if isinstance(sock, int) else sock.fileno()
        raw = m.lookup(struct.pack("<i", fd))
        return None if raw is None else lay.decode(raw)
    finally:
        os.close(m.fd)


# -- kernel features -------------------------------------------------------------------
_KSYMS = ("__cgroup_bpf_run_filter_sock_ops", "bpf_sock_ops_reserve_hdr_opt",
          "bpf_sock_ops_store_hdr_opt", "bpf_sk_storage_get", "bpf_loop",
          "cls_bpf_classify", "clsact_init")


QDISC_HOW = {"kfunc": "kfunc bpf_cast_to_kern_ctx (direct loads)",
             "probe-read": "bpf_probe_read_kernel (no kfunc before 6.2: ~250 ns more a packet)"}

# symbols of code a stock kernel has as a module (absent from kallsyms until loaded; tc
# loads it on first use)
_IN_MODULE = {"cls_bpf_classify": "cls_bpf", "clsact_init": "sch_ingress"}


def _kallsyms(names: tuple[str, ...]) -> set[str]:
    from .features import _modules
    want = set(names)
    found = {n for n in want if _IN_MODULE.get(n) in _modules()}
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in want:
                    found.add(parts[2])
    except OSError:
        return want  # unreadable: let the load report it
    return found


def checks() -> list:
    """TCP-INT's kernel features one by one, as network.features.Check rows (for doctor)."""
    from .features import Check
    from .tracker import CGROUP_ROOT

    have = _kallsyms(_KSYMS)
    rows = [
        Check("tcp-int: cgroup sockops", "__cgroup_bpf_run_filter_sock_ops" in have,
              "CONFIG_CGROUP_BPF", "a kernel with cgroup BPF", required=False),
        Check("tcp-int: sockops header options", {"bpf_sock_ops_reserve_hdr_opt",
              "bpf_sock_ops_store_hdr_opt"} <= have, "kernel >= 5.10", "newer kernel",
              required=False),
        Check("tcp-int: SK_STORAGE", "bpf_sk_storage_get" in have, "per-socket maps",
              "newer kernel", required=False),
        Check("tcp-int: egress qdisc read", True, QDISC_HOW[qdisc_read()], "",
              required=False),
        Check("tcp-int: bpf_loop", "bpf_loop" in have, "option scan", "kernel >= 5.17",
              required=False),
        Check("tcp-int: tc clsact + cls_bpf", {"cls_bpf_classify", "clsact_init"} <= have,
              "switch attach point", "kernel with NET_SCH_INGRESS and NET_CLS_BPF",
              required=False),
        Check("tcp-int: cgroup v2", (CGROUP_ROOT / "cgroup.procs").exists(), str(CGROUP_ROOT),
              f"mount -t cgroup2 none {CGROUP_ROOT}", required=False),
        Check("tcp-int: bpffs", os.path.ismount("/sys/fs/bpf"), "/sys/fs/bpf",
              "mount -t bpf bpf /sys/fs/bpf", required=False),
    ]
    return rows


# -- the run's TCP-INT -------------------------------------------------------------------
class TcpInt:
    """Compile and load both programs once per run; attach; pin; undo on stop()."""

    def __init__(self, options: IntOptions, net: "Network", qdisc: str | None = None):
        """qdisc: how the switch program reads the egress qdisc (a key of
        tcports.QDISC_READS); None = the best this kernel has."""
        self.options, self.net = options, net
        self.qdisc = qdisc
        self.tracker = net.tracker
        self.switch_obj: BpfObject | None = None
        self.host_obj: BpfObject | None = None
        self.ports: list[tuple[str, str, int, int]] = []  # (node, intf, netns, ifindex)
        self.tc = TcPorts(net, TC_PREF, "tcpint")
        self._pins: list[Path] = []
        self.started = False

    # -- checks ---------------------------------------------------------------------
    @staticmethod
    def check() -> None:
        """Raise MissingFeature before any state if this kernel/machine cannot run TCP-INT."""
        from ..bpf import libbpf
        from .tracker import CGROUP_ROOT

        libbpf.available()
        if not Path("/sys/kernel/btf/vmlinux").exists():
            raise MissingFeature("TCP-INT: kernel BTF (/sys/kernel/btf/vmlinux) missing",
                                 "a kernel with CONFIG_DEBUG_INFO_BTF=y")
        if not (CGROUP_ROOT / "cgroup.procs").exists():
            raise MissingFeature(f"TCP-INT: cgroup v2 not mounted at {CGROUP_ROOT}",
                                 f"mount -t cgroup2 none {CGROUP_ROOT}")
        if not os.path.ismount("/sys/fs/bpf"):
            raise MissingFeature("TCP-INT: bpffs not mounted at /sys/fs/bpf (tc attaches the "
                                 "switch program by its pin)", "mount -t bpf bpf /sys/fs/bpf")
        missing = set(_KSYMS) - _kallsyms(_KSYMS)
        what = {"__cgroup_bpf_run_filter_sock_ops": "cgroup sockops (CONFIG_CGROUP_BPF)",
                "bpf_sock_ops_reserve_hdr_opt": "sockops header options (kernel >= 5.10)",
                "bpf_sock_ops_store_hdr_opt": "sockops header options (kernel >= 5.10)",
                "bpf_sk_storage_get": "SK_STORAGE maps",
                "bpf_loop": "bpf_loop (kernel >= 5.17)",
                "cls_bpf_classify": "tc cls_bpf (CONFIG_NET_CLS_BPF)",
                "clsact_init": "tc clsact (CONFIG_NET_SCH_INGRESS)"}
        if missing:
            names = sorted({what[m] for m in missing})
            raise MissingFeature("TCP-INT needs " + ", ".join(names),
                                 "a kernel >= 5.17 with BPF, BTF, cgroup sockops and cls_bpf")
        for t, pkg in (("tc", "iproute2"), ("nsenter", "util-linux"), ("clang", "clang"),
                       ("bpftool", "bpftool")):
            if not shutil.which(t):
                raise MissingFeature(f"TCP-INT: {t} not found", f"apt-get install {pkg}")

    # -- bring-up ------------------------------------------------------------------
    def start(self) -> "TcpInt":
        if self.started or not self.options.enabled:
            return self
        self.check()
        from ..bpf.build import compile_bpf

        self.tracker.defer("tcp-int", self.stop)
        self.started = True
        switch_o = compile_bpf("tcp_int_switch", QDISC_READS[self.qdisc or qdisc_read()])
        host_o = compile_bpf("tcp_int_host")
        pins = self.tracker.pin_dir()
        self._load_switch(switch_o, pins)
        self._load_host(host_o, pins)
        self._attach_switches(pins / "tcp_int_switch")
        self._attach_hosts()
        return self

    def _pin(self, fn, name: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        fn(name, path)
        self._pins.append(path)

    def _load_switch(self, obj_path: Path, pins: Path) -> None:
        from ..bpf.libbpf import BpfObject

        o = self.options
        every = [1] * 16
        every[D("TFK_SWITCH_DEFAULT")] = o.switch_tag_every
        every[D("TFK_CONGESTED")] = o.congested_every
        every[D("TFK_UNCONGESTED")] = o.uncongested_every
        every[D("TFK_APPLIMITED")] = o.applimited_every
        self.switch_obj = BpfObject(obj_path)
        self.switch_obj.set_rodata(version=version_code(o), scale=scale_code(o),
                                   util_window_ns=int(o.util_window * 1e9),
                                   tag_every_key=struct.pack("<16I", *every))
        self.switch_obj.load()
        self._pin(self.switch_obj.pin_program, "tcp_int_switch", pins / "tcp_int_switch")
        self._pin(self.switch_obj.pin_map, "tcp_int_ports", pins / "tcp_int_ports")

    def _load_host(self, obj_path: Path, pins: Path) -> None:
        from ..bpf.libbpf import BpfObject

        o = self.options
        self.host_obj = BpfObject(obj_path)
        self.host_obj.set_rodata(version=version_code(o), scale=scale_code(o),
                                 tag_every=o.host_tag_every, dynamic_tagging=int(o.dynamic_tagging),
                                 echo=int(o.echo), hop_mbps=int(o.hop_mbps or 0),
                                 trace=int(o.trace))
        self.host_obj.load()
        for m in ("tcp_int_state", "tcp_int_events", "tcp_int_lost"):
            self._pin(self.host_obj.pin_map, m, pins / m)

    def trace_maps(self) -> "tuple[Map, Map]":
        """(tcp_int_events ring buffer, tcp_int_lost per-CPU counter) for a reader of the
        hosts' telemetry events; the caller closes their fds."""
        from ..bpf.libbpf import pinned_map
        pins = self.tracker.pin_dir()
        return (pinned_map(pins / "tcp_int_events", 0, 0),
                pinned_map(pins / "tcp_int_lost", 4, 8, percpu=True))

    def stamping_nodes(self) -> list:
        sel = self.options.switches
        # bmv2 nodes stamp in their P4 program; the eBPF program would stamp twice
        return [g for g in self.net.graph.switches if (sel is None or g.name in sel)
                and g.spec.backend == "kernel"]

    def _attach_switches(self, prog_pin: Path) -> None:
        ports_map = self.switch_obj.map("tcp_int_ports")
        key_l, port_l = layout("tcp_int_port_key"), layout("tcp_int_port")
        for g in self.stamping_nodes():
            netns = self.tc.netns(g.name)
            self.tc.attach(g.name, [intf.name for intf in g.intfs], prog_pin)
            ifindexes = self.tc.ifindexes(g.name, [intf.name for intf in g.intfs])
            for intf in g.intfs:
                ifindex = ifindexes[intf.name]
                bw = intf.link.params.bw
                ports_map.update(key_l.encode(netns=netns, ifindex=ifindex),
                                 port_l.encode(rate_bps=int(bw * 1e6) if bw else 0,
                                               hop_id=hop_id_of(self.net.graph, g),
                                               ls_code=ls_code(bw, self.options.scale)))
                self.ports.append((g.name, intf.name, netns, ifindex))

    def _attach_hosts(self) -> None:
        sel = self.options.hosts
        for g in self.net.graph.hosts:
            if sel is None or g.name in sel:
                self.host_obj.attach_cgroup("tcp_int_host", self.tracker.node_cgroup(g.name))

    # -- reading -------------------------------------------------------------------
    def port_states(self) -> list[dict]:
        """Per switch port: its settings and what the program kept (see tcp_int_port)."""
        m = self.switch_obj.map("tcp_int_ports")
        lay = layout("tcp_int_port")
        out = []
        for node, intf, netns, ifindex in self.ports:
            raw = m.lookup(layout("tcp_int_port_key").encode(netns=netns, ifindex=ifindex))
            if raw is not None:
                out.append({"node": node, "iface": intf, **lay.decode(raw)})
        return out

    def state_map(self) -> "Map":
        return self.host_obj.map("tcp_int_state")

    # -- teardown ------------------------------------------------------------------
    def stop(self) -> None:
        """Detach from every port and cgroup, unpin, free. Idempotent."""
        if not self.started:
            return
        self.started = False
        errors = []
        if self.host_obj is not None:
            self.host_obj.close()  # destroys the cgroup links
            self.host_obj = None
        errors += self.tc.detach()
        self.ports.clear()
        if self.switch_obj is not None:
            self.switch_obj.close()
            self.switch_obj = None
        for p in self._pins:
            p.unlink(missing_ok=True)
        self._pins.clear()
        if errors:
            raise RunError("tcp-int teardown: " + "; ".join(errors))
