"""Compile `bpf/*.bpf.c` for libbpf (CO-RE, against the running kernel's BTF).

vmlinux.h is generated from /sys/kernel/btf/vmlinux at build time into the build
directory (build_dir(): $TESTBED_BUILD, else $XDG_CACHE_HOME/testbed/bpf or
~/.cache/testbed/bpf; never committed, so it never goes stale). Objects are rebuilt when the source,
any header beside it or the kernel changes. Compile once per run, not once per host.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import MissingFeature, RunError

from .abi import BPF_DIR as SRC


def build_dir() -> Path:
    """Where compiled objects and vmlinux.h go: $TESTBED_BUILD if set, else the user's
    cache ($XDG_CACHE_HOME/testbed/bpf, by default ~/.cache/testbed/bpf) — outside the
    checkout, so a clean clone stays clean and checkouts of one machine share it (objects
    are named by a digest of their sources, flags and kernel)."""
    if os.environ.get("TESTBED_BUILD"):
        return Path(os.environ["TESTBED_BUILD"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "testbed" / "bpf"


BUILD = build_dir()
ARCH = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _need(tool: str, pkg: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise MissingFeature(f"{tool} not found", f"apt-get install {pkg} (or run scripts/setup.sh)")
    return path


def vmlinux_h() -> Path:
    """bpf/vmlinux.h for the running kernel, regenerated when the kernel changes."""
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / "vmlinux.h"
    stamp = BUILD / "vmlinux.kernel"
    kernel = platform.release()
    if out.exists() and stamp.exists() and stamp.read_text() == kernel:
        return out
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise MissingFeature("kernel BTF (/sys/kernel/btf/vmlinux) missing",
                             "a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    bpftool = _need("bpftool", "bpftool")
    text = subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                           "format", "c"], check=True, capture_output=True).stdout
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(text)
    tmp.replace(out)
    stamp.write_text(kernel)
    return out


def _digest(src: Path, extra: list[str]) -> str:
    h = hashlib.sha256()
    for p in [src, *sorted(SRC.rglob("*.h"))]:
        h.update(p.read_bytes())
    h.update(platform.release().encode())
    h.update(" ".join(extra).encode())
    return h.hexdigest()[:16]


def compile_bpf(name: str, cflags: list[str] | None = None) -> Path:
    """Build bpf/<name>.bpf.c into an object libbpf loads; cached by content."""
    src = SRC / f"{name}.bpf.c"
    if not src.exists():
        raise RunError(f"no BPF source {src}")
    cflags = list(cflags or [])
    vm = vmlinux_h()
    obj = BUILD / f"{name}.{_digest(src, cflags)}.o"
    if obj.exists():
        return obj
    clang = _need("clang", "clang")
    cmd = [clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{ARCH}",
           "-I", str(vm.parent), "-I", str(SRC), *cflags, "-c", str(src), "-o", f"{obj}.{os.getpid()}.tmp"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RunError(f"compiling {src.name} failed:\n{r.stderr.strip()}")
    os.replace(f"{obj}.{os.getpid()}.tmp", obj)
    # The cache is shared by every checkout of the machine (each may build another
    # version of a program, and be about to load it): prune only objects unused a day.
    for old in BUILD.glob(f"{name}.*.o"):
        try:
            if old != obj and time.time() - old.stat().st_atime > 86400:
                old.unlink(missing_ok=True)
        except OSError:
            pass
    return obj
