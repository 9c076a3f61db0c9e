"""The bmv2 backend: forwarding nodes run BMv2 `simple_switch_grpc` with p4/tcp_int.p4.

One switch process per forwarding node, in the node's own namespace: ports
`-i N@<intf>` (N = interface index + 1), P4Runtime (gRPC) on 127.0.0.1:9559 and Thrift
on 127.0.0.1:9090 of that namespace (every node has its own loopback, so the ports never
clash), logging off (it costs throughput; TESTBED_BMV2_LOG=1 turns it on). The pipeline
and the table entries are pushed over P4Runtime with p4runtime-shell by a small client
started inside the namespace (`python -m testbed.network.backends.bmv2 push PLAN`).
The egress queue of a shaped link is BMv2's own (Thrift: set_queue_rate in packets/s,
set_queue_depth in packets), so the queue TCP-INT reports is the queue packets wait in;
the kernel's HTB on those ports is removed. The queue sampler reads it from the P4
program's registers (queue_source: testbed/instruments/bmv2_qsample.py over Thrift).

Roles (the P4 program holds both; the tables filled choose):
- router: ipv4_lpm / ipv6_lpm from the graph's routes (/32 or /128 for every neighbour
  on a connected segment, ECMP groups where a route has several next hops), MACs read
  from the nodes, time-exceeded sources per port. The node's kernel keeps the port
  addresses so it answers ARP and neighbour discovery, but forwards nothing.
- switch (L2): l2_mac with the MAC of every L3 interface of the segment, broadcast
  flooded through a multicast group.

Classes:
- SwitchPlan: everything one switch gets (ports, entries, groups, queues): plain data,
  computed from the graph, written as JSON for the in-namespace P4Runtime client.
- Bmv2Backend: the SwitchBackend — configure, start (processes, checks, pushes), stop.

Functions:
- bmv2_available(): (usable, why not) — simple_switch_grpc, the CLI, the compiled
  program and p4runtime-shell; p4c_available(): the compiler (only to rebuild p4/build).
- push(plan_path): the P4Runtime client (runs in the switch's namespace).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from ...bpf import abi
from ...bpf.abi import P4_DIR, REPO
from ...config.models import IntOptions
from ...errors import MissingFeature, RunError
from .base import QueueSource, SwitchBackend

if TYPE_CHECKING:
    from ...topology.graph import Node

P4_SRC = P4_DIR / "tcp_int.p4"
P4_JSON = P4_DIR / "build" / "tcp_int.json"
P4_INFO = P4_DIR / "build" / "tcp_int.p4info.txtpb"
DEFS_H = abi.header("tcp_int_defs.h")

GRPC_ADDR = ("127.0.0.1", 9559)
THRIFT_PORT = 9090
DEVICE_ID = 0
SWITCH_NICE = -10   # simple_switch_grpc's scheduling priority (root: may go below 0)
START_TIMEOUT_S = 15.0
FLOOD_GROUP = 1
# BMv2 counts its queues in packets: a byte limit or rate is turned into packets of this
# size (a full 1500-byte MTU frame with its Ethernet header), the P4 program's default.
_P4 = abi.defines(P4_SRC)         # the P4 program's own constants, read from its source
PKT_BYTES = _P4["TCPINT_BMV2_PKT_BYTES"]
DEFAULT_QUEUE_PACKETS = 1000     # as network.shaping: Linux's txqueuelen
UTIL_MULT_SHIFT = _P4["UTIL_MULT_SHIFT"]   # fixed points of set_port's parameters
AVAIL_SHIFT = _P4["AVAIL_SHIFT"]
SER_SHIFT = _P4["SER_SHIFT"]
SYS_PYTHON = "/usr/bin/python3"  # BMv2's Thrift CLI needs Debian's python3-thrift


# --------------------------------------------------------------------------- checks
def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/local/bin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
        None)


def p4c_available() -> tuple[bool, str]:
    p = _tool("p4c-bm2-ss") or _tool("p4c")
    if p:
        return True, p
    return False, ("p4c not found: needed only to rebuild p4/build (make -C p4); build p4c "
                   "1.2.4.8 from github.com/p4lang/p4c or install the p4lang 'p4lang-p4c' "
                   "package (see docs/bmv2.md)")


def bmv2_available() -> tuple[bool, str]:
    """Can a run use `backend: bmv2` here? (usable, what is missing and the fix)."""
    missing = []
    for t in ("simple_switch_grpc", "simple_switch_CLI"):
        if _tool(t) is None:
            missing.append(t)
    if missing:
        return False, (f"{' and '.join(missing)} not found: install BMv2 built with PI "
                       f"(p4lang 'p4lang-bmv2' package, or behavioral-model 1.15.5 "
                       f"configured --with-pi; see docs/bmv2.md)")
    for f in (P4_JSON, P4_INFO, DEFS_H):
        if not f.exists():
            return False, f"{f.relative_to(REPO)} missing: run `make -C p4` (needs p4c)"
    try:
        import p4runtime_sh  # noqa: F401
    except ImportError as e:
        return False, f"p4runtime-shell not importable ({e}): pip install p4runtime-shell"
    has_p4c, p4c = p4c_available()
    return True, (f"{_tool('simple_switch_grpc')}; "
                  + (f"p4c: {p4c}" if has_p4c else p4c.split(':')[0] + " (only needed to "
                     "rebuild p4/build: p4c 1.2.4.8, see docs/bmv2.md)"))


# --------------------------------------------------------------------------- the plan
@dataclass
class Entry:
    table: str
    action: str
    match: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    default: bool = False


@dataclass
class SwitchPlan:
    node: str
    ports: dict[str, int]                       # interface → BMv2 port
    entries: list[Entry] = field(default_factory=list)
    groups: dict[int, list[int]] = field(default_factory=dict)   # multicast id → ports
    queues: dict[int, tuple[int, float | None]] = field(default_factory=dict)  # port → (pkts, pps)
    grpc: str = f"{GRPC_ADDR[0]}:{GRPC_ADDR[1]}"
    p4info: str = str(P4_INFO)
    json: str = str(P4_JSON)

    def to_json(self) -> str:
        d = asdict(self)
        d["groups"] = {str(k): v for k, v in self.groups.items()}
        d["queues"] = {str(k): v for k, v in self.queues.items()}
        return json.dumps(d, indent=1)


def _mac(m: str) -> str:
    return m.lower()


# --------------------------------------------------------------------------- backend
class Bmv2Backend(SwitchBackend):
    name = "bmv2"

    def __init__(self, net):
        super().__init__(net)
        ok, why = bmv2_available()
        if not ok:
            raise MissingFeature(f"backend bmv2: {why}")
        from ..tcpint import defs

        self.defs = defs()
        # the same `int:` options the eBPF switches get (validated once, by the loader)
        self.int = net.experiment.tcp_int if net.experiment is not None else IntOptions()
        self.procs: dict[str, subprocess.Popen] = {}
        self.plans: dict[str, SwitchPlan] = {}
        self.log = os.environ.get("TESTBED_BMV2_LOG", "") not in ("", "0")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return bmv2_available()

    def _mine(self) -> list["Node"]:
        return [g for g in self.net.graph.switches if g.spec.backend == self.name]

    def queue_source(self, gnode) -> QueueSource:
        # The shaped ports' queues are BMv2's (set_queue_depth/rate), not qdiscs. The P4
        # program keeps per-port queue depth and counters in registers; read them over
        # Thrift with BMv2's own client (Debian's python3-thrift, bm_runtime). Polled as
        # fast as Thrift answers (~2.5 ms), the reads took the switch's CPU: one CUBIC flow
        # through a 10 Mb/s BMv2 bottleneck got 5.5 Mb/s and never filled its queue; every
        # 5 ms 8.5, every 10 ms 9.2, unsampled 9.5 Mb/s. So 10 ms unless asked otherwise.
        return QueueSource(kind="bmv2", thrift_port=THRIFT_PORT,
                           ports=dict(self.plans[gnode.name].ports), pkt_bytes=PKT_BYTES,
                           python=SYS_PYTHON, env=sys_python_env(),
                           bm_path=bm_runtime_path(), min_interval=0.010)

    # -- configure: the node's kernel stays out of the way --------------------------
    def configure(self, gnode, mnode) -> list[str]:
        # Routers keep their addresses (and the graph's kernel routes, unused) so the
        # kernel answers ARP/ND for them; it must not forward a copy of what BMv2 does.
        lines = ["sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0"]
        if gnode.kind == "switch":
            lines.append("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                         "net.ipv6.conf.default.disable_ipv6=1")
        # BMv2 reads and writes whole frames through packet sockets: no segmentation or
        # checksum offload may leave partial checksums or 64 KB frames on its ports.
        lines += [f"ethtool -K {i.name} tx off sg off tso off gso off gro off"
                  for i in gnode.intfs]
        return lines

    # -- start ------------------------------------------------------------------------
    def start(self) -> None:
        mine = self._mine()
        if not mine:
            return
        macs = self._read_macs()
        self._prepare_links(mine)
        for g in mine:
            self.plans[g.name] = self._plan(g, macs)
        for g in mine:
            self._launch(g)
        for g in mine:
            self._wait_listening(g)
        self._push_all(mine)
        for g in mine:
            self._set_queues(g)

    def _read_macs(self) -> dict[str, str]:
        """MAC of every interface of the topology (Mininet picked them at random)."""
        macs = {}
        for name in self.net.graph.nodes:
            out = self.net.mn[name].cmd(
                "for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/address); done")
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2:
                    macs[parts[0]] = _mac(parts[1])
        return macs

    def _prepare_links(self, mine: list["Node"]) -> None:
        """Queues of shaped ports move into BMv2; peers send whole, checksummed frames."""
        peers: dict[str, list[str]] = {}
        for g in mine:
            script = []
            for i in g.intfs:
                if i.link.params.bw is not None or i.link.params.queue is not None:
                    script.append(f"tc qdisc del dev {i.name} root 2>/dev/null || true")
                peers.setdefault(i.peer.node, []).append(i.peer.name)
            if script:
                self.net.run(g.name, "; ".join(script))
        for node, intfs in peers.items():
            self.net.run(node, "; ".join(f"ethtool -K {n} tx off sg off tso off gso off"
                                          for n in intfs))

    # -- the plan: table entries from the graph ---------------------------------------
    def _plan(self, g: "Node", macs: dict[str, str]) -> SwitchPlan:
        ports = {i.name: k + 1 for k, i in enumerate(g.intfs)}
        plan = SwitchPlan(g.name, ports)
        if g.kind == "switch":
            self._plan_l2(g, plan, macs)
        else:
            self._plan_router(g, plan, macs)
        self._plan_tcp_int(g, plan)
        self._plan_ecn(g, plan)
        for i in g.intfs:
            p = i.link.params
            if p.bw is None and p.queue is None:
                continue
            pkts = DEFAULT_QUEUE_PACKETS
            if p.queue is not None:
                pkts = p.queue.packets or max(1, p.queue.bytes // PKT_BYTES)
            pps = p.bw * 1e6 / 8 / PKT_BYTES if p.bw is not None else None
            plan.queues[ports[i.name]] = (pkts, pps)
        return plan

    def _plan_l2(self, g: "Node", plan: SwitchPlan, macs: dict[str, str]) -> None:
        graph = self.net.graph
        # Which port leads to each L3 interface of the segment: walk the switch tree.
        for i in g.intfs:
            seen, stack = {g.name}, [i.peer]
            while stack:
                far = stack.pop()
                node = graph.nodes[far.node]
                if node.kind == "switch":
                    if node.name in seen:
                        continue
                    seen.add(node.name)
                    stack += [x.peer for x in node.intfs if x is not far]
                    continue
                plan.entries.append(Entry("MyIngress.l2_mac", "MyIngress.l2_forward",
                                          {"hdr.ethernet.dstAddr": macs[far.name]},
                                          {"port": str(plan.ports[i.name])}))
        plan.groups[FLOOD_GROUP] = sorted(plan.ports.values())
        plan.entries.append(Entry("MyIngress.l2_mac", "MyIngress.flood",
                                  {"hdr.ethernet.dstAddr": "ff:ff:ff:ff:ff:ff"},
                                  {"group": str(FLOOD_GROUP)}))

    def _plan_router(self, g: "Node", plan: SwitchPlan, macs: dict[str, str]) -> None:
        graph = self.net.graph
        by_ip = {str(a.ip): i for n in graph.nodes.values() for i in n.intfs
                 for a in (i.ip4, i.ip6) if a is not None}

        def fwd(dev: str, nh) -> dict[str, str]:
            return {"port": str(plan.ports[dev]), "srcAddr": macs[dev],
                    "dstAddr": macs[nh.name]}

        def add(table: str, action: str, key: dict, params: dict) -> None:
            plan.entries.append(Entry(f"MyIngress.{table}", f"MyIngress.{action}", key, params))

        group = 0
        for v, lpm, forward, te_table, te in ((4, "ipv4_lpm", "ipv4_forward",
                                               "icmp_source", "time_exceeded"),
                                              (6, "ipv6_lpm", "ipv6_forward",
                                               "icmp6_source", "time_exceeded6")):
            key = f"hdr.ipv{v}.dstAddr"
            host_len = 32 if v == 4 else 128
            addr = attrgetter(f"ip{v}")
            # Time-exceeded answers come from the address of the port the packet came in on.
            for i in g.intfs:
                if addr(i) is not None:
                    add(te_table, te, {"standard_metadata.ingress_port": str(plan.ports[i.name])},
                        {"addr": str(addr(i).ip), "mac": macs[i.name]})
            # Neighbours on connected segments: one host route each (no ARP/ND in the
            # data plane).
            for i in g.intfs:
                if i.segment is None or addr(i) is None:
                    continue
                for m in i.segment.members:
                    if m.node != g.name and addr(m) is not None:
                        add(lpm, forward, {key: f"{addr(m).ip}/{host_len}"}, fwd(i.name, m))
            for r in graph.routes.get(g.name, []):
                if r.dst.version != v:
                    continue
                hops = [(dev, by_ip[via]) for via, dev in zip(r.via, r.dev)]
                if len(hops) == 1:
                    add(lpm, forward, {key: str(r.dst)}, fwd(*hops[0]))
                    continue
                group += 1
                add(lpm, "ecmp_group", {key: str(r.dst)},
                    {"group": str(group), "size": str(len(hops))})
                for k, h in enumerate(hops):
                    add("ecmp_nhop", forward, {"meta.ecmpGroup": str(group),
                                               "meta.ecmpMember": str(k)}, fwd(*h))

    def _plan_tcp_int(self, g: "Node", plan: SwitchPlan) -> None:
        """The switch rule's settings: the same `int:` options the eBPF switch gets."""
        from ..tcpint import hop_id_of, ls_code

        d, o = self.defs, self.int
        fine = o.scale == "fine"
        stamp = o.enabled and (o.switches is None or g.name in o.switches)
        shift = d["TCP_INT_QDEPTH_SHIFT_FINE" if fine else "TCP_INT_QDEPTH_SHIFT_PUBLIC"]
        window_us = max(1, int(round(o.util_window * 1e6)))
        plan.entries.append(Entry("MyEgress.tcpint_params", "MyEgress.set_tcpint_params",
                                  params={"stamp": str(int(stamp)),
                                          "v02": str(int(o.version == "v02")),
                                          "fineScale": str(int(fine)),
                                          "qdepthShift": str(shift),
                                          "pktBytes": str(PKT_BYTES),
                                          "windowUs": str(window_us)},
                                  default=True))
        every = {d["TCP_INT_TFK_SWITCH_DEFAULT"]: o.switch_tag_every,
                 d["TCP_INT_TFK_CONGESTED"]: o.congested_every,
                 d["TCP_INT_TFK_UNCONGESTED"]: o.uncongested_every,
                 d["TCP_INT_TFK_APPLIMITED"]: o.applimited_every}
        for key, n in sorted(every.items()):
            if n > 1:
                plan.entries.append(Entry("MyEgress.tcpint_tag_every",
                                          "MyEgress.set_tag_every",
                                          {"meta.tagFreqKey": str(key)}, {"every": str(n)}))
        # HopID of an L2 switch's ports: the eBPF switch's rule (routers: 0 = the TTL).
        hop_id = hop_id_of(self.net.graph, g)
        one = d["TCP_INT_UTIL_ONE"]
        for i in g.intfs:
            rate = i.link.params.bw     # Mb/s, or None: unknown
            util_mult = avail_mult = ser = 0
            if rate:
                rate_bps = rate * 1e6
                # util (ONE = 100 %) = window bytes * 8 / (rate_bps * window) * ONE
                util_mult = int(8 * one * (1 << UTIL_MULT_SHIFT) / (rate_bps * window_us * 1e-6))
                # available Gb/s = rate_mbps * (ONE - util) / ONE / 1000
                avail_mult = int(rate * (1 << AVAIL_SHIFT) /
                                 (one * d["TCP_INT_V04_AVAILBW_UNIT_MBPS"]))
                ser = int(8e9 / rate_bps * (1 << SER_SHIFT))   # ns per byte
            plan.entries.append(Entry(
                "MyEgress.tcpint_port", "MyEgress.set_port",
                {"standard_metadata.egress_port": str(plan.ports[i.name])},
                {"lsCode": str(ls_code(rate, o.scale)), "hopId": str(hop_id),
                 "utilMult": str(util_mult), "availMult": str(avail_mult),
                 "serNs": str(ser)}))

    def _plan_ecn(self, g: "Node", plan: SwitchPlan) -> None:
        """ECN marking (docs/ecn.md) on the ports of links with `ecn_mark:`: thresholds in
        BMv2's queued packets (bytes / PKT_BYTES, floored: q·PKT_BYTES > K ⇔ q > ⌊K/PKT⌋)."""
        from ..ecn import marking_ports

        for node, intf, mark in marking_ports(self.net, "bmv2"):
            if node != g.name:
                continue
            lo, hi = mark.bounds()
            if mark.unit == "bytes":
                lo, hi = lo // PKT_BYTES, hi // PKT_BYTES
            step = int(round(mark.p * (1 << 32) / (hi - lo))) if hi > lo else 0
            plan.entries.append(Entry(
                "MyEgress.ecn_mark", "MyEgress.set_ecn_mark",
                {"standard_metadata.egress_port": str(plan.ports[intf.name])},
                {"minPkts": str(lo), "maxPkts": str(hi), "step": str(step)}))

    def ecn_counters(self) -> list[dict]:
        """The P4 program's marking registers, per marking port (Thrift CLI)."""
        from ..ecn import COUNTERS, marking_ports

        regs = {"ip_pkts": "ecnIpPkts", "ect_pkts": "ecnEctPkts", "over_pkts": "ecnOverPkts",
                "marked_pkts": "ecnMarkedPkts", "not_ect_over": "ecnNotEctOver"}
        out = []
        for node, intf, mark in marking_ports(self.net, "bmv2"):
            if node not in self.plans or self.net.mn is None:
                continue
            port = self.plans[node].ports[intf.name]
            text = thrift_cli(self.net.mn[node], [f"register_read MyEgress.{regs[c]} {port}"
                                                  for c in COUNTERS])
            vals = [int(v) for v in re.findall(r"\[\d+\]\s*=\s*(\d+)", text)]
            if len(vals) != len(COUNTERS):
                raise RunError(f"{node}: reading ECN registers: {text.strip()[-300:]}")
            lo, hi = mark.bounds()
            out.append({"node": node, "iface": intf.name, "unit": mark.unit, "min": lo,
                        "max": hi, "p": mark.p, **dict(zip(COUNTERS, vals))})
        return out

    # -- processes --------------------------------------------------------------------
    def _launch(self, g: "Node") -> None:
        node = self.net.mn[g.name]
        plan = self.plans[g.name]
        logpath = self.net.tracker.workdir / f"{g.name}-bmv2.log"
        # Above the hosts' processes (nice −10, threads inherit it): the kernel backend
        # forwards in softirq, ahead of every process; BMv2 at the senders' priority was
        # preempted by them and by anything else on the machine — its latency jumped from
        # 0.2 to 8-11 ms, which a delay-based CC reads as queueing (docs/bmv2.md).
        cmd = ["nice", "-n", str(SWITCH_NICE),
               _tool("simple_switch_grpc"), "--device-id", str(DEVICE_ID),
               "--thrift-port", str(THRIFT_PORT), "--no-p4"]
        for intf, port in plan.ports.items():
            cmd += ["-i", f"{port}@{intf}"]
        if self.log:
            cmd += ["--log-file", str(logpath.with_suffix("")) + "-events", "--log-flush"]
        cmd += ["--", "--grpc-server-addr", f"{GRPC_ADDR[0]}:{GRPC_ADDR[1]}"]
        out = open(logpath, "wb")
        try:
            p = node.popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=subprocess.STDOUT)
        finally:
            out.close()
        self.procs[g.name] = p
        self.net.tracker.defer(f"simple_switch_grpc {g.name} (pid {p.pid})",
                               lambda p=p: _stop_process(p))

    def _wait_listening(self, g: "Node") -> None:
        p = self.procs[g.name]
        want = {GRPC_ADDR[1], THRIFT_PORT}
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if p.poll() is not None:
                raise RunError(f"{g.name}: simple_switch_grpc exited with {p.returncode}: "
                               f"{self._log_tail(g)}")
            if want <= _listening_ports(p.pid):
                return
            if time.monotonic() > deadline:
                raise RunError(f"{g.name}: simple_switch_grpc not listening on gRPC "
                               f"{GRPC_ADDR[1]} and Thrift {THRIFT_PORT} after "
                               f"{START_TIMEOUT_S:.0f} s: {self._log_tail(g)}")
            time.sleep(0.05)

    def _log_tail(self, g: "Node", lines: int = 15) -> str:
        path = self.net.tracker.workdir / f"{g.name}-bmv2.log"
        try:
            tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return " | ".join(tail) or "(empty log)"

    def _push_all(self, mine: list["Node"]) -> None:
        """Pipeline + entries, one P4Runtime client per switch, all in parallel."""
        clients = {}
        for g in mine:
            path = self.net.tracker.workdir / f"{g.name}-p4rt.json"
            path.write_text(self.plans[g.name].to_json())
            env = dict(os.environ, PYTHONPATH=str(REPO))
            clients[g.name] = self.net.mn[g.name].popen(
                [sys.executable, "-m", "testbed.network.backends.bmv2", "push", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, cwd=str(REPO))
        errors = []
        for name, c in clients.items():
            try:
                out, _ = c.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                _stop_process(c)
                out = b"timed out after 60 s"
            if c.returncode != 0:
                errors.append(f"{name}: {out.decode(errors='replace').strip()[-800:]}")
        if errors:
            raise RunError("P4Runtime push failed: " + "; ".join(errors))

    def _set_queues(self, g: "Node") -> None:
        plan = self.plans[g.name]
        cmds = []
        for port, (pkts, pps) in sorted(plan.queues.items()):
            cmds.append(f"set_queue_depth {pkts} {port}")
            if pps is not None:
                cmds.append(f"set_queue_rate {max(1, int(round(pps)))} {port}")
        if cmds:
            thrift_cli(self.net.mn[g.name], cmds)

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        errors = []
        for name, p in list(self.procs.items()):
            try:
                _stop_process(p)
            except Exception as e:
                errors.append(f"{name}: {e}")
        self.procs.clear()
        if errors:
            raise RunError("stopping simple_switch_grpc: " + "; ".join(errors))


def _stop_process(p: subprocess.Popen, timeout: float = 3.0) -> None:
    """End one process by PID: TERM, then KILL."""
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout)


def _listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN in the network namespace of `pid` (its /proc/net/tcp)."""
    ports = set()
    for f in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{f}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def sys_python_env() -> dict[str, str]:
    """Our environment without the venv's: for Debian's python3 running BMv2's tools."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@functools.cache
def bm_runtime_path() -> str:
    """Directory with BMv2's bm_runtime Python package: where its CLI looks for it."""
    cli = _tool("simple_switch_CLI")
    m = re.search(r'sys\.path\.append\("([^"]+)"\)', Path(cli).read_text()) if cli else None
    return m.group(1) if m else ""


def thrift_cli(node, commands: list[str]) -> str:
    """Run simple_switch_CLI commands in a switch's namespace; raise on any error."""
    cli = _tool("simple_switch_CLI")
    p = node.popen([SYS_PYTHON, cli, "--thrift-port", str(THRIFT_PORT)],
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   env=sys_python_env())
    out, _ = p.communicate("\n".join(commands).encode() + b"\n", timeout=60)
    text = out.decode(errors="replace")
    if p.returncode != 0 or re.search(r"Error|Invalid|Traceback|exception", text):
        raise RunError(f"{node.name}: simple_switch_CLI {commands}: {text.strip()[-800:]}")
    return text


# --------------------------------------------------------------------------- P4Runtime
def push(plan_path: str) -> int:
    """Set the pipeline and write the plan's entries (run inside the switch's netns)."""
    import logging

    import p4runtime_sh.shell as sh

    logging.basicConfig(level=logging.ERROR)
    plan = json.loads(Path(plan_path).read_text())
    try:
        sh.setup(device_id=DEVICE_ID, grpc_addr=plan["grpc"], election_id=(0, 1),
                 config=sh.FwdPipeConfig(plan["p4info"], plan["json"]), verbose=False)
    except SystemExit:
        print(f"{plan['node']}: could not set the pipeline on {plan['grpc']}")
        return 1
    try:
        for e in plan["entries"]:
            te = sh.TableEntry(e["table"])(action=e["action"])
            for k, v in e["match"].items():
                te.match[k] = v
            for k, v in e["params"].items():
                te.action[k] = v
            if e["default"]:
                te.is_default = True
                te.modify()
            else:
                te.insert()
        for gid, ports in plan["groups"].items():
            mg = sh.MulticastGroupEntry(int(gid))
            for port in ports:
                mg.add(port, 1)
            mg.insert()
    except Exception as ex:  # report which entry failed, then exit non-zero
        print(f"{plan['node']}: {type(ex).__name__}: {ex}")
        return 1
    finally:
        sh.teardown()
    return 0


BACKEND = Bmv2Backend

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "push":
        sys.exit(push(sys.argv[2]))
    print("usage: python -m testbed.network.backends.bmv2 push PLAN.json", file=sys.stderr)
    sys.exit(2)
