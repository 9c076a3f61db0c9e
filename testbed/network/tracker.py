"""Tracking of everything one run creates, so every exit path can remove it.

Classes:
- RunTracker: one run's id and names (cgroup, bpffs dir, state file, CC names) and a
  LIFO of undo actions. Every process the run starts lives in the run's cgroup v2
  subtree, so ending them is one `cgroup.kill` there: by cgroup, never by name.
- Leftover: a crashed run's state found on disk; `clean_leftovers()` removes it.

Names: everything of ours carries the prefix `testbed-<id>` (cgroups, pins, state) or
`tb<id>` where the kernel limits the length (CC names, 16 bytes).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed"))
CGROUP_ROOT = Path(os.environ.get("TESTBED_CGROUP_ROOT", "/sys/fs/cgroup/unified"))
BPFFS = Path("/sys/fs/bpf")
NAME_PREFIX = "testbed-"


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks: (pid, start) names a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    now = _proc_start_time(pid)
    return now is not None and (start is None or now == start)


def cgroup_pids(cg: Path) -> list[int]:
    pids: list[int] = []
    for procs in cg.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


def kill_cgroup(cg: Path, timeout: float = 3.0) -> None:
    """End every process in a cgroup subtree, then remove the subtree (deepest first)."""
    if not cg.exists():
        return
    kill = cg / "cgroup.kill"
    if kill.exists():
        try:
            kill.write_text("1")
        except OSError:
            pass
    else:  # kernels before 5.14: signal each member by PID
        for pid in cgroup_pids(cg):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while cgroup_pids(cg) and time.monotonic() < deadline:
        time.sleep(0.01)
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir_retry(d, deadline)
    _rmdir_retry(cg, deadline)


def _rmdir_retry(d: Path, deadline: float) -> None:
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _remove_pins(d: Path) -> None:
    if not d.exists():
        return
    # a congestion controller registered without a kernel link (kernels before 6.4) stays
    # registered after its process died: unregister it before its pin goes
    errors = []
    for p in d.glob("struct_ops_*"):
        from ..bpf import libbpf
        try:
            libbpf.unregister_pinned_struct_ops(p)
        except Exception as e:   # the pins still go; the failure is reported after
            errors.append(f"{p.name}: {e}")
    for p in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
        (p.rmdir if p.is_dir() else p.unlink)()
    d.rmdir()
    if errors:
        raise RuntimeError("unregistering " + "; ".join(errors))


@dataclass
class RunTracker:
    """One run's names and undo stack. Use as a context manager: close() always runs."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)
    _run_undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)
    _open: bool = False

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.run_id}"

    @property
    def short(self) -> str:
        """For kernel names limited to 15 characters (CC names, interfaces)."""
        return f"tb{self.run_id}"

    @property
    def cgroup(self) -> Path:
        return CGROUP_ROOT / self.name

    @property
    def bpffs(self) -> Path:
        return BPFFS / self.name

    @property
    def workdir(self) -> Path:
        """Scratch files of the run (node scripts, sockets); removed on close."""
        return STATE_DIR / self.name

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.name}.json"

    def open(self) -> "RunTracker":
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self.state_file.write_text(json.dumps(
            {"run_id": self.run_id, "pid": pid, "pid_start": _proc_start_time(pid),
             "cgroup": str(self.cgroup), "bpffs": str(self.bpffs), "started": time.time()}))
        self.cgroup.mkdir(exist_ok=True)
        self.workdir.mkdir(exist_ok=True)
        self._open = True
        return self

    def node_cgroup(self, node: str) -> Path:
        """A cgroup of the run for one node: its processes, and its sockops attach point."""
        cg = self.cgroup / node
        cg.mkdir(exist_ok=True)
        return cg

    def pin_dir(self) -> Path:
        """The run's directory in bpffs, created on first use, removed on close."""
        self.bpffs.mkdir(parents=True, exist_ok=True)
        return self.bpffs

    def enter_fn(self, cgroup: Path) -> Callable[[], None]:
        """A Popen preexec_fn that moves the child into `cgroup` before it runs."""
        procs = str(cgroup / "cgroup.procs")

        def _enter() -> None:
            with open(procs, "w") as f:
                f.write("0")
        return _enter

    def defer(self, what: str, undo: Callable[[], None]) -> None:
        """Register an undo action; close() runs them newest first."""
        self._undo.append((what, undo))

    def defer_run(self, what: str, undo: Callable[[], None]) -> None:
        """Register an undo that outlives every scope (e.g. a BPF object compiled once per
        run and reused by every sweep point); close() runs it last."""
        self._run_undo.append((what, undo))

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Undo on exit only what was registered inside (e.g. one sweep point's network)."""
        mark = len(self._undo)
        try:
            yield
        finally:
            errors = self.unwind(mark)
            if errors and sys.exc_info()[0] is None:
                raise RuntimeError("teardown: " + "; ".join(errors))

    def unwind(self, mark: int = 0) -> list[str]:
        errors: list[str] = []
        while len(self._undo) > mark:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # keep going: the rest must still be removed
                errors.append(f"{what}: {e}")
        return errors

    def close(self) -> list[str]:
        """Undo everything, newest first. Returns the failures (each already handled)."""
        errors: list[str] = []
        # Ctrl-C during teardown must not leave half the state behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            errors += self.unwind(0)
            self._undo, self._run_undo = self._run_undo, []
            errors += self.unwind(0)
            for what, fn in (("cgroup", lambda: kill_cgroup(self.cgroup)),
                             ("bpf pins", lambda: _remove_pins(self.bpffs)),
                             ("workdir", lambda: shutil.rmtree(self.workdir, True))):
                try:
                    fn()
                except Exception as e:
                    errors.append(f"{what}: {e}")
            self.state_file.unlink(missing_ok=True)
            self._open = False
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        return errors

    def __enter__(self) -> "RunTracker":
        return self.open() if not self._open else self

    def __exit__(self, *exc) -> None:
        self.close()


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


@dataclass
class Leftover:
    run_id: str
    cgroup: Path | None
    bpffs: Path | None
    state_file: Path | None


def find_leftovers(include_live: bool = False) -> list[Leftover]:
    """State of runs whose owning process is gone (or all, with include_live)."""
    found: dict[str, Leftover] = {}
    live: set[str] = set()
    for sf in STATE_DIR.glob(f"{NAME_PREFIX}*.json") if STATE_DIR.exists() else []:
        try:
            st = json.loads(sf.read_text())
        except (OSError, ValueError):
            st = {}
        rid = sf.stem[len(NAME_PREFIX):]
        if st and _alive(st.get("pid", -1), st.get("pid_start")) and not include_live:
            live.add(rid)
            continue
        found[rid] = Leftover(rid, None, None, sf)
    for root, attr in ((CGROUP_ROOT, "cgroup"), (BPFFS, "bpffs")):
        if not root.exists():
            continue
        for d in root.glob(f"{NAME_PREFIX}*"):
            rid = d.name[len(NAME_PREFIX):]
            if rid in live:
                continue
            lo = found.setdefault(rid, Leftover(rid, None, None, None))
            setattr(lo, attr, d)
    return list(found.values())


def remove_leftover(lo: Leftover) -> None:
    """Remove one crashed run's state: its processes (by cgroup), cgroups, pins, files."""
    if lo.cgroup:
        kill_cgroup(lo.cgroup)
    if lo.bpffs:
        _remove_pins(lo.bpffs)
    if lo.state_file:
        lo.state_file.unlink(missing_ok=True)
    shutil.rmtree(STATE_DIR / f"{NAME_PREFIX}{lo.run_id}", ignore_errors=True)


def clean_leftovers(include_live: bool = False) -> list[Leftover]:
    """Remove what crashed runs left (only runs whose owning process is gone)."""
    gone = find_leftovers(include_live)
    for lo in gone:
        remove_leftover(lo)
    return gone
