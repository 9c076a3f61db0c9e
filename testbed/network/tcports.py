"""Pinned BPF programs on the clsact egress of node ports: the one owner of the tc
bookkeeping TCP-INT's switch program and ECN marking share.

Each user attaches at its own filter priority (TCP-INT 29258, ECN 29259), so removing
its filters by priority touches nothing else; the clsact qdiscs it had to add are
removed with its filters unless another filter (someone else's) uses them by then.

tc runs in the node's network namespace but OUR mount namespace: nodes remount /sys,
hiding bpffs, where the pinned programs live.

Classes:
- TcPorts(net, pref, label): attach(node, ifnames, pin), detach() → errors (idempotent),
  and the facts its users key their maps by: netns(node), ifindexes(node, ifnames).

Functions:
- qdisc_read(): how this kernel's port programs read the egress qdisc, a key of
  QDISC_READS (the cflags that build bpf/common/egress_qdisc.h that way).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RunError

if TYPE_CHECKING:
    from .net import Network


# How a port program reads skb->dev->qdisc (bpf/common/egress_qdisc.h): the kfunc
# bpf_cast_to_kern_ctx (6.2+: direct loads), or bpf_probe_read_kernel from the context's
# address (any kernel with BTF: one helper call per field).
QDISC_READS = {"kfunc": [], "probe-read": ["-DEGRESS_QDISC_PROBE_READ"]}


def qdisc_read() -> str:
    """"kfunc" where the kernel has bpf_cast_to_kern_ctx, else "probe-read"."""
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                if line.rstrip().endswith(" bpf_cast_to_kern_ctx"):
                    return "kfunc"
    except OSError:
        pass
    return "probe-read"


class TcPorts:
    def __init__(self, net: "Network", pref: int, label: str):
        self.net, self.pref, self.label = net, pref, label
        self.attached: list[tuple[str, str]] = []       # (node, ifname) with our filter
        self._clsact_added: list[tuple[str, str]] = []  # (node, ifname) we gave a clsact

    def netns(self, node: str) -> int:
        """The inode of the node's network namespace (half of a port's map key)."""
        return os.stat(f"/proc/{self.net[node].pid}/ns/net").st_ino

    def ifindexes(self, node: str, ifnames: list[str]) -> dict[str, int]:
        """Each port's ifindex in the node's namespace (the other half of the key)."""
        links = self.out(node, "ip", "-o", "link", "show")
        have = {m.group(2): int(m.group(1))
                for m in re.finditer(r"^(\d+): ([^@:\s]+)[@:]", links, re.M)}
        missing = [n for n in ifnames if n not in have]
        if missing:
            raise RunError(f"{node}: no interface {missing[0]}")
        return {n: have[n] for n in ifnames}

    def attach(self, node: str, ifnames: list[str], pin: Path) -> None:
        """The pinned program on each port's egress (a clsact added where none is)."""
        qdiscs = self.out(node, "tc", "qdisc", "show")
        lines = []
        for ifn in ifnames:
            if not re.search(rf"qdisc clsact \S+ dev {re.escape(ifn)} ", qdiscs):
                lines.append(f"qdisc add dev {ifn} clsact")
                self._clsact_added.append((node, ifn))
            lines.append(f"filter add dev {ifn} egress pref {self.pref} bpf da pinned {pin}")
        self.tc(node, lines)
        self.attached += [(node, ifn) for ifn in ifnames]

    def detach(self) -> list[str]:
        """Our filters off every port, and the clsact qdiscs we added; the errors (a
        node's namespace may be gone already: the rest still goes)."""
        errors: list[str] = []
        if self.net.mn is not None:
            by_node: dict[str, list[str]] = {}
            for node, ifn in self.attached:
                by_node.setdefault(node, []).append(f"filter del dev {ifn} egress pref "
                                                    f"{self.pref}")
            for node, lines in by_node.items():
                try:
                    self.tc(node, lines, force=True)
                except Exception as e:
                    errors.append(str(e))
            for node, ifn in self._clsact_added:
                try:
                    if not any(self.out(node, "tc", "filter", "show", "dev", ifn, d).strip()
                               for d in ("egress", "ingress")):
                        self.tc(node, [f"qdisc del dev {ifn} clsact"], force=True)
                except Exception as e:
                    errors.append(str(e))
        self.attached.clear()
        self._clsact_added.clear()
        return errors

    # -- tc and ip in the node's network namespace ------------------------------------
    def _nsenter(self, node: str) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.net[node].pid}/ns/net"]

    def out(self, node: str, *argv: str) -> str:
        return subprocess.run(self._nsenter(node) + list(argv), capture_output=True,
                              text=True, timeout=30).stdout

    def tc(self, node: str, lines: list[str], force: bool = False) -> None:
        batch = self.net.tracker.workdir / f"{node}.{self.label}.tc"
        batch.write_text("\n".join(lines) + "\n")
        r = subprocess.run(self._nsenter(node) + ["tc", *(["-force"] if force else []),
                                                  "-batch", str(batch)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RunError(f"{node}: tc -batch {batch} failed: {r.stderr.strip()}")
