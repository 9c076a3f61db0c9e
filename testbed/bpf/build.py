"""Compile `bpf/*.bpf.c` for libbpf (CO-RE, against the running kernel's BTF).

vmlinux.h is generated from /sys/kernel/btf/vmlinux at build time into the build
directory (never committed, so it never goes stale). Objects are rebuilt when the source,
any header beside it or the kernel changes. Compile once per run, not once per host.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from ..errors import MissingFeature, RunError

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "bpf"
BUILD = Path(os.environ.get("TESTBED_BUILD", REPO / "build" / "bpf"))
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
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(text)
    tmp.replace(out)
    stamp.write_text(kernel)
    return out


def _digest(src: Path, extra: list[str]) -> str:
    h = hashlib.sha256()
    for p in [src, *sorted(SRC.glob("*.h"))]:
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
           "-I", str(vm.parent), "-I", str(SRC), *cflags, "-c", str(src), "-o", str(obj) + ".tmp"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RunError(f"compiling {src.name} failed:\n{r.stderr.strip()}")
    os.replace(str(obj) + ".tmp", obj)
    for old in BUILD.glob(f"{name}.*.o"):  # keep one object per program
        if old != obj:
            old.unlink(missing_ok=True)
    return obj
