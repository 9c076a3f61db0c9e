"""ECN marking at the kernel backend's switch ports (eBPF, `bpf/ecn_mark.bpf.c`).

A link with `ecn_mark:` (config.models.EcnMark) marks CE at the shaped egress of every
kernel-backend forwarding node on it, on the queue each packet finds at the port's root
qdisc (the HTB bottleneck): above K (DCTCP), or a RED-like ramp between min and max.
BMv2 nodes apply the same rule in their P4 program. Hosts' own egress never marks.

Classes:
- EcnMarking: check() before any state; start() compiles, loads once, pins the program
  and attaches it to each marking port (`tc filter … egress pref ECN_PREF bpf da pinned`);
  counters() per port; stop() detaches and unpins (idempotent, registered with the tracker).

Functions:
- marking_ports(net, backend): (node, Intf, EcnMark) of the ports a backend must mark.
- write_csv(rows, path): the per-port counters as `ecn.csv` beside `queue.csv`.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingFeature, RunError
from ..bpf.abi import defines, layout
from .tcports import QDISC_READS, TcPorts, qdisc_read

if TYPE_CHECKING:
    from ..config.models import EcnMark
    from .net import Network

ECN_H = "ecn_mark.h"
ECN_PREF = 29259  # our tc filter priority on clsact egress (TCP-INT's is 29258)
P_ONE = defines(ECN_H, "ECN_MARK_")["ECN_MARK_P_ONE"]  # probability 1.0 in p_max
COUNTERS = ("ip_pkts", "ect_pkts", "over_pkts", "marked_pkts", "not_ect_over")


def marking_ports(net: "Network", backend: str) -> list[tuple[str, object, "EcnMark"]]:
    out = []
    for g in net.graph.switches:
        if g.spec.backend != backend:
            continue
        for i in g.intfs:
            m = i.link.params.ecn_mark
            if m is not None and i.link.params.bw is not None:
                out.append((g.name, i, m))
    return out


def port_value(mark: "EcnMark") -> bytes:
    lo, hi = mark.bounds()
    return layout("ecn_port", ECN_H).encode(
        min=lo, max=hi, p_max=min(P_ONE, round(mark.p * P_ONE)),
        unit=1 if mark.unit == "packets" else 0)


class EcnMarking:
    """One network's eBPF marking: loaded once, attached to every marking port."""

    def __init__(self, net: "Network", qdisc: str | None = None):
        """qdisc: how the program reads the egress qdisc (a key of tcports.QDISC_READS);
        None = the best this kernel has."""
        self.net, self.tracker = net, net.tracker
        self.qdisc = qdisc
        self.obj = None
        self.ports: list[tuple[str, str, int, int, "EcnMark"]] = []
        self.tc = TcPorts(net, ECN_PREF, "ecn")
        self._pin: Path | None = None
        self.started = False

    @staticmethod
    def check() -> None:
        from ..bpf import libbpf
        from .tcpint import _kallsyms

        libbpf.available()
        need = ("cls_bpf_classify", "clsact_init")
        missing = set(need) - _kallsyms(need)
        if missing:
            raise MissingFeature("ECN marking needs " + ", ".join(sorted(missing)),
                                 "a kernel with cls_bpf and clsact")
        if not os.path.ismount("/sys/fs/bpf"):
            raise MissingFeature("ECN marking: bpffs not mounted at /sys/fs/bpf",
                                 "mount -t bpf bpf /sys/fs/bpf")

    def start(self) -> "EcnMarking":
        todo = marking_ports(self.net, "kernel")
        if self.started or not todo:
            return self
        self.check()
        from ..bpf.build import compile_bpf
        from ..bpf.libbpf import BpfObject

        self.tracker.defer("ecn marking", self.stop)
        self.started = True
        obj = compile_bpf("ecn_mark", QDISC_READS[self.qdisc or qdisc_read()])
        self.obj = BpfObject(obj).load()
        self._pin = self.tracker.pin_dir() / "ecn_mark"
        self._pin.unlink(missing_ok=True)
        self.obj.pin_program("ecn_mark", self._pin)
        ports_map = self.obj.map("ecn_ports")
        key_l = layout("ecn_port_key", ECN_H)
        by_node: dict[str, list] = {}
        for node, intf, mark in todo:
            by_node.setdefault(node, []).append((intf, mark))
        for node, items in by_node.items():
            netns = self.tc.netns(node)
            ifindex = self.tc.ifindexes(node, [intf.name for intf, _ in items])
            for intf, mark in items:   # the rule in the map before the first packet
                key = key_l.encode(netns=netns, ifindex=ifindex[intf.name])
                ports_map.update(key, port_value(mark))
                self.ports.append((node, intf.name, netns, ifindex[intf.name], mark))
            self.tc.attach(node, [intf.name for intf, _ in items], self._pin)
        return self

    # -- reading -------------------------------------------------------------------
    def counters(self) -> list[dict]:
        """Per marking port: its rule and what the program counted so far."""
        if self.obj is None:
            return []
        m = self.obj.map("ecn_ports")
        key_l, val_l = layout("ecn_port_key", ECN_H), layout("ecn_port", ECN_H)
        out = []
        for node, intf, netns, ifindex, mark in self.ports:
            raw = m.lookup(key_l.encode(netns=netns, ifindex=ifindex))
            if raw is None:
                continue
            v = val_l.decode(raw)
            out.append({"node": node, "iface": intf, "unit": mark.unit, "min": v["min"],
                        "max": v["max"], "p": v["p_max"] / P_ONE,
                        **{c: v[c] for c in COUNTERS}})
        return out

    # -- teardown ------------------------------------------------------------------
    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        errors = self.tc.detach()
        self.ports.clear()
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        if self._pin is not None:
            self._pin.unlink(missing_ok=True)
            self._pin = None
        if errors:
            raise RunError("ecn marking teardown: " + "; ".join(errors))


def write_csv(rows: list[dict], path: Path) -> Path:
    cols = ["node", "iface", "unit", "min", "max", "p", *COUNTERS]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path
