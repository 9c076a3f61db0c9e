"""Congestion controllers of a run: the kernel's by name, ours (eBPF struct_ops) built per run.

A flow's `cc:` names either a kernel CC (cubic, bbr, reno…: passed through) or an entry
of EBPF_CCS: one `bpf/<source>.bpf.c` and one params model. An eBPF CC is compiled with
its run-unique kernel name (`-DCC_NAME`, e.g. `tb3fa2c1_pwr`; libbpf 1.1 cannot edit a
struct_ops map's initial value), its parameters written into `const volatile` rodata,
loaded with libbpf and registered through a kernel bpf_link held by this process: it is
unregistered on close(), by the tracker on any exit path, and by the kernel if the
process dies. A kernel without struct_ops links (before 6.4) registers it by a map
update instead: the map is then pinned in the run's bpffs directory, so `testbed clean`
unregisters what a killed run left. A kernel whose cong_control hook is (sk, rs) (before
6.10) gets the programs built for that signature (-DCONG_CONTROL_SK_RS). Its trace events (powertcp.h `struct powertcp_event`) arrive through a ring
buffer read in a thread and are handed to whoever records (the cc_trace instrument).

Classes:
- EbpfCC: one registry entry (source file, kernel-name suffix, params → rodata); its
  parameter model and needs (INT, receiver, ECN) are config.models.EBPF_CC_KINDS'.
- TraceEvent: one decoded trace record; TraceRecorder: events of one recording window.
- LoadedCC: one registered eBPF CC: object, link, trace thread.
- CongestionControls: the run's CCs: kernel_name(name, params), recorders, close().

Adding a CC: write `bpf/<name>.bpf.c` (struct_ops named like the source, `.name = CC_NAME`,
include powertcp.h for the trace ring buffer if it traces), its parameter model and
CCKind in config.models (EBPF_CC_KINDS), and one EbpfCC entry here.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pydantic import ValidationError

from ..config.models import (EBPF_CC_KINDS, CCKind, CCParams, PowerTCPParams,  # noqa: F401
                             Section, ThetaPowerTCPParams)
from ..errors import ConfigError, MissingFeature, RunError
from . import abi, build

KERNEL_AVAILABLE = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
CC_NAME_MAX = 15  # TCP_CA_NAME_MAX - 1

# From bpf/powertcp.h: the trace event and the fixed-point shifts.
_PT = abi.defines("powertcp.h", "POWERTCP_")
CWND_SHIFT = _PT["POWERTCP_CWND_SHIFT"]
POWER_SHIFT = _PT["POWERTCP_POWER_SHIFT"]
GAMMA_SHIFT = _PT["POWERTCP_GAMMA_SHIFT"]
EVENT = abi.layout("powertcp_event", "powertcp.h")


# ----------------------------------------------------------------------------- parameters
# The parameter models and what each CC needs are configuration (config.models
# EBPF_CC_KINDS); here: which program and `const volatile` values each becomes.
def theta_powertcp_rodata(p: ThetaPowerTCPParams) -> dict[str, int]:
    if p.base_rtt_us == "probe":
        raise RunError("base_rtt_us: probe is measured by the runner before the CC loads; "
                       "give a number of µs (or 0) to load it directly")
    return {
        "gamma_fp": max(1, round(p.gamma * (1 << GAMMA_SHIFT))),
        "beta_fp": round(p.beta * (1 << CWND_SHIFT)) if p.beta else 0,
        "expected_flows": p.expected_flows,
        "base_rtt_us": p.base_rtt_us,
        "host_bw_mbps": p.host_bw_mbps,
        "trace_interval_us": p.trace_interval_us,
        "min_cwnd": p.min_cwnd,
    }


def powertcp_rodata(p: PowerTCPParams) -> dict[str, int]:
    return {**theta_powertcp_rodata(p), "hop_bw_mbps": p.hop_bw_mbps}


@dataclass(frozen=True)
class EbpfCC:
    source: str                 # bpf/<source>.bpf.c; its struct_ops variable has this name
    suffix: str                 # kernel name: <tracker.short>_<suffix>[<n>]
    rodata: Callable[[Any], dict[str, int]]   # params → the program's const volatiles

    @property
    def kind(self) -> CCKind:
        return EBPF_CC_KINDS[self.source]   # a CC's name in `cc:` is its source's

    @property
    def params(self) -> type[CCParams]:
        return self.kind.params

    @property
    def needs_int(self) -> bool:
        return self.kind.needs_int

    @property
    def receiver(self) -> bool:
        return self.kind.receiver

    @property
    def ecn(self) -> bool:
        return self.kind.ecn


EBPF_CCS: dict[str, EbpfCC] = {
    "powertcp": EbpfCC("powertcp", "pwr", powertcp_rodata),
    "theta_powertcp": EbpfCC("theta_powertcp", "tpw", theta_powertcp_rodata),
}
from . import dccs as _dccs  # noqa: E402  (the comparison set: DCTCP, HPCC, TIMELY)

EBPF_CCS.update({
    "dctcp": EbpfCC("dctcp", "dct", _dccs.dctcp_rodata),
    "hpcc": EbpfCC("hpcc", "hpc", _dccs.hpcc_rodata),
    "timely": EbpfCC("timely", "tml", _dccs.timely_rodata),
})
assert set(EBPF_CCS) == set(EBPF_CC_KINDS), "an eBPF CC needs its entry in both tables"
INT_MAP = "tcp_int_state"
# cong_control without ACK flags (before 6.10) loses FLAG_ECE, which DCTCP's sender needs
NEEDS_ACK_FLAGS = {"dctcp"}
STRUCT_OPS_PIN = "struct_ops_"   # pinned registrations without a link: <bpffs>/struct_ops_<name>


def is_ebpf(name: str) -> bool:
    return name in EBPF_CCS


def needs_int(name: str) -> bool:
    return name in EBPF_CCS and EBPF_CCS[name].needs_int


def runs_at_receiver(name: str) -> bool:
    return name in EBPF_CCS and EBPF_CCS[name].receiver


def needs_ecn(name: str) -> bool:
    return name in EBPF_CCS and EBPF_CCS[name].ecn


def kernel_ccs() -> list[str]:
    """Registered kernel CCs and tcp_<name> modules (a stock kernel loads one when a
    socket asks for it: bbr, dctcp are modules there)."""
    from ..network import features
    return features.kernel_ccs()


def parse_params(name: str, raw: Mapping[str, Any] | CCParams | None,
                 where: str | None = None) -> CCParams:
    """Validate one CC's parameters; a bad one is a ConfigError naming the key and range."""
    entry = EBPF_CCS.get(name)
    if entry is None:
        if raw:
            raise ConfigError(f"{name!r} is a kernel CC and takes no parameters "
                              f"(eBPF CCs: {', '.join(EBPF_CCS)})", file=where,
                              key=f"congestion_control.{name}")
        return CCParams()
    if isinstance(raw, entry.params):
        return raw
    try:
        return entry.params.model_validate(dict(raw or {}))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in ("congestion_control", name, *err["loc"]))
        fields = ", ".join(entry.params.model_fields)
        hint = f" (parameters of {name}: {fields})" if err["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{err['msg']}{hint}", file=where, key=key) from None


def check(names: list[str] | None = None) -> None:
    """Raise MissingFeature, before any state exists, if these CCs cannot run here."""
    names = list(names or EBPF_CCS)
    unknown = [n for n in names if n not in EBPF_CCS and n not in kernel_ccs()]
    if unknown:
        raise ConfigError(f"unknown congestion control {unknown[0]!r}: kernel offers "
                          f"{' '.join(kernel_ccs())}; eBPF: {' '.join(EBPF_CCS)}", key="cc")
    if not any(n in EBPF_CCS for n in names):
        return
    from . import libbpf
    libbpf.available()
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise MissingFeature("kernel BTF (/sys/kernel/btf/vmlinux) missing: no struct_ops CCs",
                             "a kernel with CONFIG_DEBUG_INFO_BTF=y")
    header = build.vmlinux_h().read_text(errors="replace")
    if "bpf_struct_ops_tcp_congestion_ops" not in header:
        raise MissingFeature("kernel lacks struct_ops congestion control "
                             "(no bpf_struct_ops_tcp_congestion_ops in BTF)",
                             "a kernel with CONFIG_BPF_JIT and CONFIG_BPF_SYSCALL (>= 5.6)")
    sig = cong_control_cflags()   # raises where the hook has neither known signature
    no_flags = [n for n in names if n in NEEDS_ACK_FLAGS]
    if sig and no_flags:
        raise MissingFeature(f"eBPF {no_flags[0]} needs the ACK flags (ECE) of the 6.10+ "
                             "cong_control hook; this kernel's is (sk, rate_sample)",
                             "a kernel >= 6.10, or the kernel's own dctcp (a stock kernel's "
                             "tcp_dctcp module)")


def cong_control_cflags() -> list[str]:
    """Build flags for this kernel's tcp_congestion_ops.cong_control signature (its BTF):
    none for (sk, ack, flag, rs) (6.10+), -DCONG_CONTROL_SK_RS for (sk, rs)."""
    header = build.vmlinux_h().read_text(errors="replace")
    if re.search(r"void \(\*cong_control\)\(struct sock \*, u32, int, "
                 r"const struct rate_sample \*\);", header):
        return []
    if re.search(r"void \(\*cong_control\)\(struct sock \*, "
                 r"const struct rate_sample \*\);", header):
        return ["-DCONG_CONTROL_SK_RS"]
    raise MissingFeature("kernel's tcp_congestion_ops.cong_control has neither the "
                         "(sk, ack, flag, rs) nor the (sk, rs) signature our CCs are built for",
                         "a kernel with struct_ops congestion control (>= 5.6)")


# ----------------------------------------------------------------------------- tracing
@dataclass(frozen=True)
class TraceEvent:
    cc: str          # the name the experiment used (powertcp, theta_powertcp)
    time_ns: int
    rate: int        # pacing rate, bytes/s
    tx_bytes: int
    hash: int
    sport: int
    dport: int
    cwnd: int        # segments × 2^10
    p_norm: int      # × 2^16
    p_smooth: int    # × 2^16
    qlen: int        # bytes
    delta_t: int     # ns
    rtt_grad: int    # × 2^16
    rtt_us: int
    base_rtt_us: int
    old_cwnd: int    # segments × 2^10
    beta: int        # segments × 2^10
    seq: int         # the socket's update count
    snd_cwnd: int    # the kernel's snd_cwnd when the update began, segments

    @classmethod
    def decode(cls, cc: str, raw: bytes) -> "TraceEvent":
        return cls(cc, **EVENT.decode(raw))


class TraceRecorder:
    """Collects the trace events of every eBPF CC of the run between start and stop()."""

    def __init__(self, owner: "CongestionControls"):
        self._owner = owner
        self.events: list[TraceEvent] = []
        self.lost_at_start = owner.lost()

    def add(self, ev: TraceEvent) -> None:
        self.events.append(ev)  # list.append is atomic under the GIL

    def stop(self) -> list[TraceEvent]:
        self._owner.flush()
        self._owner._recorders.discard(self)
        if not self._owner._recorders:
            self._owner._set_tracing(False)
        self.lost = self._owner.lost() - self.lost_at_start
        return self.events


# ----------------------------------------------------------------------------- loading
@dataclass
class LoadedCC:
    name: str
    kernel_name: str
    params: CCParams
    obj: Any                        # libbpf.BpfObject
    link: Any                       # libbpf.Link
    pin: Path | None = None         # the struct_ops map, pinned where no link holds it
    ring: Any = None                # libbpf.RingBuffer
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    int_map_id: int = 0             # the TCP-INT state map it reads (0: none)

    def set_tracing(self, on: bool) -> None:
        """Emit trace events (the kernel side skips them, ring buffer and all, when off)."""
        if not self.closed:
            self.obj.map("trace_ctl").update(b"\0\0\0\0", int(on).to_bytes(4, "little"))

    def lost(self) -> int:
        if self.closed:
            return 0
        raw = self.obj.map(".bss").lookup(b"\0\0\0\0")
        return int.from_bytes(raw[:8], "little") if raw else 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=2)
        # Unregister first (the link), then free the ring and the object.
        self.link.destroy()
        if self.pin:
            self.pin.unlink(missing_ok=True)
        with self.lock:
            if self.ring:
                self.ring.free()
                self.ring = None
        self.obj.close()


class CongestionControls:
    """The run's congestion controllers: `kernel_name()` resolves (and, for ours, builds,
    loads and registers once per distinct parameter set) and close() unregisters all."""

    def __init__(self, tracker, params: Section | Mapping[str, Any] | None = None,
                 where: str | None = None, require_int: bool = True):
        """`params`: the experiment's `congestion_control:` (or name → raw parameters).
        `require_int=False` lets an INT-fed CC load without TCP-INT (it then sees no
        telemetry and holds its initial window): for tests of registration only."""
        self.tracker = tracker
        self.require_int = require_int
        if isinstance(params, Section):
            params = params.chosen()
        # Validated now: a broken parameter fails before anything is loaded.
        self.params = {n: parse_params(n, p, where) for n, p in (params or {}).items()}
        self.loaded: dict[tuple[str, CCParams], LoadedCC] = {}
        self._names: dict[str, int] = {}   # kernel names given so far, by suffix
        self._recorders: set[TraceRecorder] = set()
        self._closed = False
        tracker.defer("congestion controls", self.close)

    def kernel_name(self, name: str, params: Mapping[str, Any] | CCParams | None = None) -> str:
        """The name a socket uses (TCP_CONGESTION, iperf3 -C) for the experiment's `name`."""
        if name not in EBPF_CCS:
            if name not in kernel_ccs():
                raise ConfigError(f"unknown congestion control {name!r}: kernel offers "
                                  f"{' '.join(kernel_ccs())}; eBPF: {' '.join(EBPF_CCS)}",
                                  key="cc")
            return name
        p = parse_params(name, params) if params is not None else \
            self.params.get(name) or parse_params(name, None)
        key = (name, p)
        old = self.loaded.get(key)
        if old is not None and not old.closed and EBPF_CCS[name].needs_int and \
                old.int_map_id != self._int_map_id():
            # Each sweep point starts TCP-INT anew, with a new state map: a CC loaded in an
            # earlier point would read the old one and see no telemetry (with repetitions,
            # PowerTCP would run blind from the second point on). Load it again.
            old.close()
        if old is None or old.closed:
            self.loaded[key] = self._load(name, p)
        return self.loaded[key].kernel_name

    @contextmanager
    def _pinned_int_map(self) -> Iterator[tuple[int, int] | None]:
        """(fd, kernel id) of the TCP-INT state map pinned now for the run, or None; the
        fd is closed on exit."""
        from . import libbpf

        pin = self.tracker.bpffs / INT_MAP
        if not pin.exists():
            yield None
            return
        m = libbpf.pinned_map(pin, 0, 0)
        try:
            yield m.fd, libbpf.map_id(m.fd)
        finally:
            os.close(m.fd)

    def _int_map_id(self) -> int:
        """Id of the TCP-INT state map pinned now for the run (0: none pinned)."""
        with self._pinned_int_map() as pinned:
            return pinned[1] if pinned else 0

    def _unique_name(self, entry: EbpfCC) -> str:
        # never a name used before in this run: an unregistered CC's name may not be free
        # again at once
        n = self._names[entry.suffix] = self._names.get(entry.suffix, -1) + 1
        name = f"{self.tracker.short}_{entry.suffix}{n if n else ''}"
        if len(name) > CC_NAME_MAX:
            raise RunError(f"CC name {name!r} longer than {CC_NAME_MAX} characters")
        return name

    def _load(self, name: str, params: CCParams) -> LoadedCC:
        from . import libbpf

        entry = EBPF_CCS[name]
        kname = self._unique_name(entry)
        obj_path = build.compile_bpf(entry.source,
                                     [f'-DCC_NAME="{kname}"', *cong_control_cflags()])
        obj = libbpf.BpfObject(obj_path)
        try:
            obj.set_rodata(**EBPF_CCS[name].rodata(params))
            int_id = 0
            if entry.needs_int:
                with self._pinned_int_map() as pinned:
                    if pinned:
                        obj.reuse_map(INT_MAP, pinned[0])  # libbpf dups the fd
                        int_id = pinned[1]
                    elif self.require_int:
                        raise RunError(f"{name} reads TCP-INT telemetry but "
                                       f"{self.tracker.bpffs / INT_MAP} is not pinned: enable "
                                       f"TCP-INT on the senders (experiment key `int:`)")
            obj.load()
            pin = None
            if not libbpf.struct_ops_links():
                # registered by a map update that outlives a killed process: pinned (before
                # it registers) so `testbed clean` finds and unregisters it
                pin = obj.pin_map(entry.source,
                                  self.tracker.pin_dir() / f"{STRUCT_OPS_PIN}{kname}")
            try:
                link = obj.attach_struct_ops(entry.source)
            except BaseException:
                if pin:
                    pin.unlink(missing_ok=True)
                raise
        except BaseException:
            obj.close()
            raise
        cc = LoadedCC(name, kname, params, obj, link, pin=pin, int_map_id=int_id)
        cc.set_tracing(bool(self._recorders))
        # Registered: every exit path unregisters it: close() (deferred with the tracker
        # when this registry was made: run-wide, not per sweep point, so the CC is built
        # once per run) or, if the process dies, the kernel closing the link.
        cc.ring = libbpf.RingBuffer(obj.map("events"), lambda raw, n=name: self._event(n, raw))
        cc.thread = threading.Thread(target=self._poll, args=(cc,), name=f"trace-{kname}",
                                     daemon=True)
        cc.thread.start()
        return cc

    def _poll(self, cc: LoadedCC) -> None:
        while not cc.stop.is_set():
            with cc.lock:
                if cc.ring is None:
                    return
                cc.ring.poll(100)

    def _event(self, name: str, raw: bytes) -> None:
        if not self._recorders:
            return
        ev = TraceEvent.decode(name, raw)
        for r in list(self._recorders):
            r.add(ev)

    def flush(self) -> None:
        """Deliver what is already in the ring buffers (called before a recorder stops)."""
        for cc in self.loaded.values():
            with cc.lock:
                if cc.ring is not None:
                    cc.ring.poll(0)

    def lost(self) -> int:
        return sum(cc.lost() for cc in self.loaded.values())

    def record(self) -> TraceRecorder:
        r = TraceRecorder(self)
        self._recorders.add(r)
        self._set_tracing(True)
        return r

    def _set_tracing(self, on: bool) -> None:
        for cc in self.loaded.values():
            cc.set_tracing(on)

    def close(self) -> None:
        """Unregister every eBPF CC of the run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for cc in list(self.loaded.values()):
            try:
                cc.close()
            except Exception as e:  # keep going: the others must still be unregistered
                errors.append(f"{cc.kernel_name}: {e}")
        self._recorders.clear()
        if errors:
            raise RunError("; ".join(errors))
