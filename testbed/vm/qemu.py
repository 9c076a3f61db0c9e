"""Boot the stock-kernel image and run one command in it (`python -m testbed vm run`).

qemu boots the image's kernel directly (-kernel/-initrd) with a tiny init
(/sbin/testbed-init: boot.sh, which runs init.sh from the control share) that mounts three 9p shares — the checkout (read-only,
copied into the guest), an output folder, a private control folder (the command, its exit
code) — runs the command as root and powers off. The guest's console is the command's
output, streamed here. Network: qemu's user-mode NIC only (no bridge, tap or namespace on
the host). The disk is opened with snapshot=on: every boot starts from the built image and
runs can share it. qemu is killed by its PID and the temporary folders are removed on
every way out, Ctrl-C included.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingFeature, RunError
from . import image as vmimage

QEMU = "qemu-system-x86_64"
# under TCG, qemu64 runs 2.5–4x faster than `max` (fewer features to emulate); the guest
# kernel needs nothing beyond it
# plus the x86-64-v2 features: pyarrow's and numpy's wheels die with SIGILL on bare qemu64
CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+lahf-lm"
APPEND = ("console=ttyS0 root=/dev/vda rw init=/sbin/testbed-init quiet loglevel=3 "
          "panic=-1 fsck.mode=skip")


@dataclass
class VmOptions:
    kernel: str = "stable"
    memory_mb: int = 2560
    cpus: int = 2
    out: Path | None = None           # shared read-write as /mnt/out (else a temp folder)
    timeout: float | None = None      # seconds; the VM is killed after it
    accel: str = "auto"               # auto (KVM if it really works, else TCG), kvm, tcg
    quiet: bool = False               # no notices (the command's output still streams)
    # TCG only: the guest's clock counts executed instructions (2^icount ns each) instead
    # of following the host's: the host taking the CPU away pauses guest time too
    icount: int | None = None


def kvm_works(kernel: Path) -> bool:
    """/dev/kvm present is not enough: nested KVM can abort (`-cpu host`: an MSR write
    fails) or hang without a word (`-cpu qemu64` here). Boot the guest kernel alone with
    KVM and see it print its banner within a few seconds (TCG prints it in under one).
    The verdict is kept for this host boot (cache dir, keyed by boot_id)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    memo = vmimage.cache_dir() / "kvm-probe"
    try:
        seen_boot, verdict = memo.read_text().split()
        if seen_boot == boot:
            return verdict == "yes"
    except (OSError, ValueError):
        pass
    p = subprocess.Popen([QEMU, "-accel", "kvm", "-cpu", CPU, "-m", "256", "-nodefaults",
                          "-display", "none", "-no-reboot", "-serial", "stdio",
                          "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, start_new_session=True,
                         preexec_fn=_die_with_parent)
    ok = False
    try:
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + 6
        while not ok and time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                ok = b"Linux version" in buf
    finally:
        _kill(p)
        p.stdout.close()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(f"{boot} {'yes' if ok else 'no'}\n")
    except OSError:
        pass
    return ok


def preflight(opts: VmOptions) -> None:
    """Bad input or a missing tool: raised before anything starts."""
    vmimage.check_kernel(opts.kernel)
    if not shutil.which(QEMU):
        raise MissingFeature(f"{QEMU} not found", "apt-get install qemu-system-x86 "
                             "(scripts/setup.sh does)")
    if opts.out is not None and opts.out.exists() and not opts.out.is_dir():
        raise ConfigError("not a directory", str(opts.out), key="--out")
    if opts.memory_mb < 512:
        raise ConfigError(f"{opts.memory_mb} MB is too little for the guest (>= 512)",
                          key="--memory")
    if opts.accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {opts.accel!r}: auto, kvm or tcg",
                          key="--accel")
    if opts.icount is not None and (opts.accel == "kvm" or not 0 <= opts.icount <= 10):
        raise ConfigError("--icount SHIFT (0-10) is for software emulation: --accel tcg "
                          "or auto", key="--icount")


def _accel(opts: VmOptions, kernel: Path, note) -> list[str]:
    if opts.accel == "tcg" or (opts.accel == "auto" and not kvm_works(kernel)):
        if opts.accel == "auto":
            note("vm: KVM unusable here (/dev/kvm absent or aborting): software emulation "
                 "(TCG), processes start 25-45x slower than native")
        if opts.icount is not None:
            # one TCG thread (icount cannot run multi-threaded); sleep=off: an idle guest
            # skips ahead to its next timer instead of waiting for it in host time
            return ["-accel", "tcg,thread=single", "-icount", f"shift={opts.icount},sleep=off"]
        return ["-accel", "tcg,thread=multi"]
    return ["-accel", "kvm"]


def qemu_argv(img: vmimage.Image, opts: VmOptions, src: Path, out: Path, ctl: Path,
              accel: list[str]) -> list[str]:
    kernel, initrd = img.kernel(opts.kernel)

    def share(tag: str, path: Path, ro: bool = False) -> list[str]:
        return ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,"
                f"id={tag}" + (",readonly=on" if ro else "")]
    return ["nice", "-n", os.environ.get("TESTBED_VM_NICE", "19"), QEMU, "-name", "testbed-vm", *accel, "-cpu", CPU,
            # icount: one vCPU (qemu 7.2 hangs bringing up a second one under icount)
            "-smp", str(1 if "-icount" in accel else opts.cpus), "-m", str(opts.memory_mb), "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", APPEND,
            "-drive", f"file={img.disk},if=virtio,format=raw,snapshot=on",
            "-nic", "user,model=virtio-net-pci",
            "-device", "virtio-rng-pci",
            *share("src", src, ro=True), *share("out", out), *share("ctl", ctl)]


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs qemu if this process dies, even by
    SIGKILL (no finally runs then)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.kill(p.pid, sig)   # by PID: only the qemu this run started
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(command: list[str] | str, opts: VmOptions, src: Path = vmimage.REPO,
        stream=None, env: dict[str, str] | None = None) -> int:
    """Run COMMAND (argv or shell text) as root in the guest; its exit code.

    Output streams to `stream` (default stdout) as it comes. Raises RunError when the
    guest never ran the command (boot failure, timeout)."""
    stream = stream or sys.stdout
    note = (lambda s: None) if opts.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    preflight(opts)
    img = vmimage.current()
    if not img.complete():
        note("vm: no image for this recipe yet: building it (3-5 min, once)")
        img = vmimage.build(log=note)
    text = command if isinstance(command, str) else shlex.join(command)
    ctl = Path(tempfile.mkdtemp(prefix="testbed-vm-ctl-"))
    out_tmp = None
    if opts.out is None:
        out_tmp = Path(tempfile.mkdtemp(prefix="testbed-vm-out-"))
    out = opts.out or out_tmp
    out.mkdir(parents=True, exist_ok=True)
    proc = None
    old_term = None
    t0 = time.monotonic()
    try:
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
        (ctl / "cmd").write_text(exports + text + "\n")
        shutil.copy(vmimage.HERE / "init.sh", ctl / "init.sh")
        argv = qemu_argv(img, opts, src.resolve(), out.resolve(), ctl, _accel(opts, img.kernel(opts.kernel)[0], note))
        note(f"vm: booting {img.release(opts.kernel)} ({opts.kernel}), "
             f"{argv[argv.index('-smp') + 1]} CPUs, {opts.memory_mb} MB"
             + (f", icount shift {opts.icount} (guest time = instructions)"
                if "-icount" in argv else ""))
        import threading
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, _on_sigterm)  # finally below runs
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        deadline = None if opts.timeout is None else t0 + opts.timeout
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunError(f"vm: command still running after {opts.timeout:g} s: killed")
            if not sel.select(timeout=min(left, 1.0) if left is not None else 1.0):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk.replace(b"\r", b"")
            *lines, buf = buf.split(b"\n")
            for line in lines:
                stream.write(line.decode(errors="replace") + "\n")
            stream.flush()
        if buf:
            stream.write(buf.decode(errors="replace"))
        proc.wait()
        rc_file = ctl / "rc"
        if not rc_file.exists():
            why = "the guest never reached its init" if not (ctl / "booted").exists() \
                else "the guest stopped before the command ended"
            raise RunError(f"vm: {why} (qemu exit {proc.returncode})")
        rc = int(rc_file.read_text().strip() or 1)
        try:
            b = (ctl / "booted").read_text().split()
            up = f" (guest: init at {float(b[2]):.1f} s, command at {float(b[4]):.1f} s)"
        except (OSError, IndexError, ValueError):
            up = ""
        note(f"vm: exit {rc} after {time.monotonic() - t0:.1f} s{up}")
        return rc
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if proc is not None:
            _kill(proc)
            if proc.stdout:
                proc.stdout.close()
        shutil.rmtree(ctl, ignore_errors=True)
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
