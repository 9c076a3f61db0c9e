"""Entering another network namespace from this thread: netlink sockets (pyroute2) and
bcc's attach calls act in the namespace of the calling thread, while BPF objects are
global. setns() changes only the calling thread, so other threads are unaffected.

Functions:
- ns_path(target): the path of a namespace given as a path, a PID or an `ip netns` name.
- netns(target): a context manager running its body in that namespace (None: stay);
  the thread always returns to its own namespace.
- resolve(target): the path of an existing namespace, or a ConfigError naming the fix.
- enter(target): move the calling thread (or a child before exec) for good.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Iterator

from ..errors import ConfigError, RunError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ns_path(target: str | int) -> str:
    t = str(target)
    if t.isdigit():
        return f"/proc/{t}/ns/net"
    return t if "/" in t else f"/var/run/netns/{t}"


def _setns(fd: int, path: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RunError(f"setns({path}): {os.strerror(err)}")


def _open(target: str | int) -> tuple[int, str]:
    path = ns_path(target)
    try:
        return os.open(path, os.O_RDONLY), path
    except OSError as e:
        raise ConfigError(f"network namespace {target!r} not found ({e.strerror}); "
                          f"give a name from `ip netns list` or a PID", key="--netns") from None


def resolve(target: str | int | None) -> str | None:
    """The absolute path of an existing namespace (None: none given); ConfigError naming
    the fix otherwise — checked before anything is attached."""
    if target is None:
        return None
    path = ns_path(target)
    if not os.path.exists(path):
        raise ConfigError(f"no network namespace {target!r} (fix: a name from `ip netns "
                          f"list`, a PID or a /proc/PID/ns/net path)", key="--netns")
    return os.path.abspath(path)


def enter(target: str | int) -> None:
    """Move the calling thread into the namespace for good (e.g. a child before exec)."""
    fd, path = _open(target)
    try:
        _setns(fd, path)
    finally:
        os.close(fd)


@contextmanager
def netns(target: str | int | None) -> Iterator[None]:
    """Run the body with this thread in the namespace `target` (None: stay)."""
    if target is None or target == "":
        yield
        return
    fd, path = _open(target)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(fd, path)
        try:
            yield
        finally:
            # a thread left in the wrong namespace would act on the wrong interfaces
            _setns(own, "own network namespace")
    finally:
        os.close(fd)
        os.close(own)
