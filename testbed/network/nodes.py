"""Mininet node classes of the testbed: every node in its own namespace and cgroup.

Classes:
- TbNode: mixin; the node's processes (its shell and everything started through it)
  live in the node's cgroup of the run, so teardown ends them all by cgroup, not by name.
- TbHost: an end host.
- TbSwitch: a forwarding node (switch or router) in its own namespace — never the root
  namespace, unlike Mininet's default switches. Backends configure what it forwards with.
"""
from __future__ import annotations

from subprocess import Popen

from mininet.node import Host, Switch


class TbNode:
    """Needs params `cgroup` (Path) and `enter` (a preexec function) from the Network."""

    def _popen(self, cmd, **params):  # noqa: D401 - Mininet's hook for every spawn
        cgroup = self.params.get("cgroup")
        if cgroup is not None and self.shell is None:
            # The node's shell: a sh moves itself into the cgroup, then execs mnexec,
            # which execs bash in place (same PID throughout). The child does the move,
            # so a runner killed right after the spawn cannot leave the shell outside
            # (where `clean` would not find it); and no preexec_fn (a slow fork). Before
            # mnexec: it mounts a fresh /sys, without the cgroup tree, for the shell.
            # No second move from here: Mininet waits for the shell's prompt, which
            # comes after the move (a write from here raced the child's exec: ms a node).
            procs = cgroup / "cgroup.procs"
            return Popen(["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd],
                         **params)
        enter = self.params.get("enter")
        if enter is not None and "preexec_fn" not in params:
            # Anything else may fork at once: enter the cgroup before exec.
            params["preexec_fn"] = enter
        return Popen(cmd, **params)

    @property
    def netns(self) -> str:
        """Path of the node's network namespace (for setns/pyroute2/bcc helpers)."""
        return f"/proc/{self.pid}/ns/net"


class TbHost(TbNode, Host):
    pass


class TbSwitch(TbNode, Switch):
    def __init__(self, name, **params):
        params.setdefault("inNamespace", True)
        super().__init__(name, **params)

    def start(self, controllers):  # no OpenFlow: forwarding is configured by the backend
        pass

    def stop(self, deleteIntfs=False):
        pass

    def defaultIntf(self):
        return Host.defaultIntf(self)
