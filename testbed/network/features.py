"""What this kernel and machine can do, found without creating any state.

Functions:
- has_qdisc(name): the qdisc is built in (its enqueue function is in /proc/kallsyms).
- tool(name): the path of a command, or None.
- checks(): every feature the testbed uses, each (name, ok, detail, fix) — for `doctor`.
- require_base(): raise MissingFeature for what every run needs (root, tools, cgroup v2).
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingFeature
from .tracker import CGROUP_ROOT


@functools.lru_cache(maxsize=1)
def _kallsyms() -> frozenset[str]:
    names = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].endswith("_enqueue"):
                    names.add(parts[2])
    except OSError:
        pass
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def _modules() -> frozenset[str]:
    """Loadable modules of the running kernel (modules.dep), `-` spelt `_`: a stock
    kernel has netem, fq, AQMs and dctcp as modules that load on first use."""
    try:
        text = Path(f"/lib/modules/{os.uname().release}/modules.dep").read_text()
    except OSError:
        return frozenset()
    return frozenset(Path(line.split(":", 1)[0]).name.split(".ko")[0].replace("-", "_")
                     for line in text.splitlines() if ":" in line)


# enqueue functions not named <qdisc>_enqueue
_ENQUEUE = {"codel": "codel_qdisc_enqueue", "pie": "pie_qdisc_enqueue"}


def has_qdisc(name: str) -> bool:
    """Built in (its enqueue function is in kallsyms) or a loadable module (sch_<name>)."""
    if f"sch_{name}" in _modules():
        return True
    syms = _kallsyms()
    if not syms:  # kallsyms unreadable: assume the common ones
        return name in ("htb", "pfifo", "bfifo", "tbf")
    return _ENQUEUE.get(name, f"{name}_enqueue") in syms


def kernel_ccs() -> list[str]:
    """TCP congestion controls this kernel offers: registered ones, and tcp_<name>
    modules (the kernel loads one when a socket asks for it)."""
    try:
        ccs = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    except OSError:
        ccs = []
    ccs += sorted(m[4:] for m in _modules() if m.startswith("tcp_") and m[4:] not in ccs
                  and m not in ("tcp_diag", "tcp_probe"))
    return ccs


VM_HINT = "run it in the stock-kernel VM: python -m testbed run EXP --vm"


def tool(name: str) -> str | None:
    return shutil.which(name)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _btf() -> bool:
    return Path("/sys/kernel/btf/vmlinux").exists()


def checks() -> list[Check]:
    out = [Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run as root (sudo)")]
    for t, pkg in (("mnexec", "mininet"), ("ip", "iproute2"), ("tc", "iproute2"),
                   ("iperf3", "iperf3"), ("ethtool", "ethtool"), ("clang", "clang"),
                   ("bpftool", "bpftool"), ("tcpdump", "tcpdump")):
        p = tool(t)
        out.append(Check(f"tool {t}", p is not None, p or "missing", f"apt-get install {pkg}"))
    out.append(Check("tool tshark", tool("tshark") is not None, tool("tshark") or "missing",
                     "apt-get install tshark", required=False))
    out.append(Check("cgroup v2", (CGROUP_ROOT / "cgroup.procs").exists(), str(CGROUP_ROOT),
                     "mount -t cgroup2 none /sys/fs/cgroup/unified (or set TESTBED_CGROUP_ROOT)"))
    rel = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    out.append(Check("cgroup.kill", rel >= (5, 14), f"kernel {os.uname().release}",
                     "older kernels: processes are ended by PID from cgroup.procs",
                     required=False))
    out.append(Check("BTF", _btf(), "/sys/kernel/btf/vmlinux", "kernel with CONFIG_DEBUG_INFO_BTF"))
    out.append(Check("bpffs", Path("/sys/fs/bpf").is_dir() and os.path.ismount("/sys/fs/bpf"),
                     "/sys/fs/bpf", "mount -t bpf bpf /sys/fs/bpf"))
    hdr = Path(f"/lib/modules/{os.uname().release}/build")
    out.append(Check("kernel headers (bcc)", hdr.exists(), str(hdr),
                     "scripts/setup.sh links Debian's linux-headers-amd64 there"))
    try:
        import bcc  # noqa: F401  (presence check)
        out.append(Check("bcc (python3-bpfcc)", True, "importable"))
    except Exception as e:
        out.append(Check("bcc (python3-bpfcc)", False, str(e),
                         "apt-get install python3-bpfcc; venv with --system-site-packages"))
    for q, req in (("htb", True), ("pfifo", True), ("bfifo", True), ("tbf", False)):
        ok = has_qdisc(q)
        out.append(Check(f"qdisc {q}", ok, "present" if ok else "absent",
                         "" if ok else f"kernel with sch_{q}", required=req))
    # what a stock kernel has and this one may lack: each absent one points at the VM
    for q, use in (("netem", "link delay/jitter/loss"), ("fq", "aqm: fq (pacing)"),
                   ("fq_codel", "aqm: fq_codel"), ("codel", "aqm: codel"),
                   ("red", "aqm: red"), ("pie", "aqm: pie")):
        ok = has_qdisc(q)
        out.append(Check(f"qdisc {q}", ok, (("module" if f"sch_{q}" in _modules() else
                                             "built in") if ok else "absent") + f" ({use})",
                         "" if ok else f"{use} is refused here; {VM_HINT}", required=False))
    ok = "dctcp" in kernel_ccs()
    out.append(Check("kernel TCP CC dctcp", ok, "tcp_dctcp present" if ok else "absent",
                     "" if ok else f"`cc: dctcp` runs our eBPF DCTCP here; the kernel's own "
                     f"is in the stock-kernel VM (python -m testbed vm)", required=False))
    return out


def require_base() -> None:
    """Everything a run needs before it creates anything."""
    for c in checks():
        if c.required and not c.ok and c.name in ("root", "tool mnexec", "tool ip", "tool tc",
                                                   "tool iperf3", "cgroup v2", "qdisc htb"):
            raise MissingFeature(f"{c.name}: {c.detail}", c.fix)
