"""A topology graph brought up as a running network, and taken down again.

Classes:
- Network: builds every node (Mininet host/switch classes of network.nodes, each in its
  own namespace and cgroup), the veth links (network.link: created straight inside the
  namespaces, so nothing of a topology ever appears in the root namespace), addresses,
  routes, offloads and egress shaping; returns once every link carries traffic; hands
  forwarding nodes to their backend; tears everything down through the RunTracker on
  every exit path.

Bring-up cost is linear in the number of nodes and near bare Mininet's (see
docs/scale.md): every veth pair of the topology in one `ip -batch`; one configuration
script per node (ip/tc in batch mode, sysctls written by shell builtins), all nodes at
once; then one wait, in this process, until every link carries traffic (reading each
node's own sysfs through /proc/<pid>/root: no process per check). Bare Mininet returns
before its links carry traffic; we return once they do.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

from mininet.net import Mininet

from ..config.models import EmulationOptions, HostDefaults, Offloads
from ..errors import RunError
from ..topology.graph import Graph, Node
from . import shaping
from .backends import backend_class
from .backends.base import QueueSource, SwitchBackend
from .nodes import TbHost, TbSwitch
from .link import VethLink
from .tracker import RunTracker, cgroup_pids

HOST_SYSCTLS = ("net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 "
                "net.ipv6.conf.all.router_solicitations=0 "
                "net.ipv6.conf.default.router_solicitations=0")


class Network:
    def __init__(self, graph: Graph, tracker: RunTracker,
                 hosts: HostDefaults | None = None, emulation: EmulationOptions | None = None,
                 experiment=None):
        """experiment: the point's Experiment, for backends that configure from it (BMv2
        stamps TCP-INT in its P4 program from `int:`)."""
        self.graph, self.tracker = graph, tracker
        self.experiment = experiment
        self.host_defaults = hosts or HostDefaults()
        self.emulation = emulation or EmulationOptions()
        self.mn: Mininet | None = None
        self.backends: dict[str, SwitchBackend] = {}
        self.started = False

    # -- access --------------------------------------------------------------------
    def __getitem__(self, name: str):
        return self.mn[name]

    @property
    def hosts(self) -> list:
        return [self.mn[n.name] for n in self.graph.hosts]

    @property
    def switches(self) -> list:
        """Every forwarding node (switches and routers)."""
        return [self.mn[n.name] for n in self.graph.switches]

    def nodes(self) -> Iterator:
        for n in self.graph.nodes:
            yield self.mn[n]

    def ip(self, name: str, v6: bool = False) -> str:
        return self.graph.ip(name, v6)

    def backend_of(self, gnode: Node) -> SwitchBackend:
        return self.backends[gnode.spec.backend]

    def queue_ports(self) -> list[tuple[str, str]]:
        """(node, interface) of every forwarding node's shaped egress queue."""
        out = []
        for g in self.graph.switches:
            out += [(g.name, i.name) for i in self.backend_of(g).queue_ports(g)]
        return out

    def queue_source(self, node: str) -> QueueSource:
        """Where the queue sampler reads that forwarding node's queues."""
        g = self.graph.nodes[node]
        return self.backend_of(g).queue_source(g)

    def ecn_counters(self) -> list[dict]:
        """ECN marks so far, per marking port (network.ecn)."""
        return [r for b in self.backends.values() for r in b.ecn_counters()]

    # -- bring-up ------------------------------------------------------------------
    def start(self) -> "Network":
        if self.started:
            return self
        # Registered first: whatever exists when anything below fails is removed.
        self.tracker.defer("network", self.stop)
        self.mn = Mininet(topo=None, build=False, controller=None, autoSetMacs=False)
        for g in self.graph.switches:
            b = g.spec.backend
            if b not in self.backends:
                self.backends[b] = backend_class(b)(self)
        for g in self.graph.nodes.values():
            cg = self.tracker.node_cgroup(g.name)
            params = {"cgroup": cg, "enter": self.tracker.enter_fn(cg)}
            if g.kind == "host":
                self.mn.addHost(g.name, cls=TbHost, ip=None, **params)
            else:
                params.update(self.backend_of(g).node_params(g))
                self.mn.addSwitch(g.name, cls=TbSwitch, dpid=f"{len(self.mn.switches) + 1:016x}",
                                  inNamespace=True, **params)
        links = [
            # up=None: no per-interface ifconfig round-trips; the node script brings them up.
            # Indexes from 10 up, two per link: no two interfaces of the run share one.
            VethLink(self.mn[l.a.node], self.mn[l.b.node], 10 + 2 * k, 11 + 2 * k,
                     intfName1=l.a.name, intfName2=l.b.name, params1={"up": None},
                     params2={"up": None})
            for k, l in enumerate(self.graph.links)]
        self._make_links(links)
        self._run_scripts({g.name: self._script(g) for g in self.graph.nodes.values()})
        self._wait_ready()
        for g in self.graph.nodes.values():  # so Mininet's CLI (`h1 ping h2`) knows them
            for i in g.intfs:
                if i.ip4:
                    mi = self.mn[g.name].nameToIntf[i.name]
                    mi.ip, mi.prefixLen = str(i.ip4.ip), i.ip4.network.prefixlen
        for b in self.backends.values():
            b.start()
        self.started = True
        return self

    def _script(self, g: Node) -> list[str]:
        """The node's configuration as a shell script: few execs (ip/tc in batch mode)."""
        host = g.kind == "host"
        sysctls, ip, tc, cmds = [], ["link set lo up"], [], []
        if host:
            sysctls.append(HOST_SYSCTLS)
            if self.host_defaults.ecn is not None:
                sysctls.append(f"net.ipv4.tcp_ecn={int(self.host_defaults.ecn)}")
        if any(i.ip6 for i in g.intfs):
            # The interfaces exist already: DAD is skipped only where both `all` and the
            # interface say so; a tentative link-local address breaks neighbour discovery.
            # keep_addr_on_down: IPv6 otherwise drops its addresses on a link_down event.
            sysctls.append("net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.all.keep_addr_on_down=1 "
                           + " ".join(f"net.ipv6.conf.{i.name}.accept_dad=0 "
                                      f"net.ipv6.conf.{i.name}.keep_addr_on_down=1"
                                      for i in g.intfs))
        for i in g.intfs:
            if i.ip4:
                ip.append(f"addr add {i.ip4} dev {i.name}")
            if i.ip6:
                ip.append(f"addr add {i.ip6} dev {i.name} nodad")
        if host:
            off = self._offloads(g)
            opts = "" if off is None else " ".join(
                f"{k} {'on' if v else 'off'}" for k, v in off.model_dump().items() if v is not None)
            if opts:
                cmds += [f"ethtool -K {i.name} {opts}" for i in g.intfs]
        else:
            cmds += self.backend_of(g).configure(g, self.mn[g.name])
        if self.emulation.rps:
            # the node's own sysfs (mnexec mounts one per namespace)
            mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
            cmds += [f"for q in /sys/class/net/{i.name}/queues/rx-*/rps_cpus; "
                     f"do echo {mask} > $q; done" for i in g.intfs]
        ip += [f"link set {i.name} up" for i in g.intfs]
        for i in g.intfs:
            tc += shaping.tc_lines(i.name, i.link.params)
        quick = " quickack 1" if host and self.host_defaults.quickack else ""
        if quick:
            ip += [f"route replace {i.ip4.network} dev {i.name} proto kernel scope link "
                   f"src {i.ip4.ip}{quick}" for i in g.intfs if i.ip4]
        ip += self._route_lines(g, quick)
        lines = [_sysctl_builtins(" ".join(sysctls))] if sysctls else []
        lines += cmds
        base = self.tracker.workdir / g.name
        Path(f"{base}.ip").write_text("\n".join(ip) + "\n")
        lines.append(f"ip -batch {base}.ip")
        if tc:
            Path(f"{base}.tc").write_text("\n".join(tc) + "\n")
            lines.append(f"tc -batch {base}.tc")
        return lines

    def _make_links(self, links: list[VethLink]) -> None:
        """Every veth pair in one `ip -batch` from here, each end created in its node's
        namespace (never in the root namespace): one process for the whole topology."""
        if not links:
            return
        r = subprocess.run(["ip", "-batch", "-"], input="\n".join(l.batch_line() for l in links)
                           + "\n", capture_output=True, text=True)
        if r.returncode != 0:
            raise RunError(f"creating veths: {(r.stderr or r.stdout).strip()}")

    def _wait_ready(self, seconds: float = 5.0) -> None:
        """Wait (bounded) until every link carries traffic: the kernel learns of a veth's
        carrier in its linkwatch work, after `ip link set up` returns, and until then the
        qdisc drops and a bridge port drops as not forwarding (seen: a run's first ARP
        lost, 1 s lost to its retry; see network.link). Every interface's operstate up;
        on a bridge, every port forwarding (state 3). Read from each node's own sysfs
        (mnexec mounts one per namespace) through /proc/<pid>/root."""
        todo = [(g.name, i.name, Path(f"/proc/{self.mn[g.name].pid}/root/sys/class/net/{i.name}"))
                for g in self.graph.nodes.values() for i in g.intfs]
        deadline = time.monotonic() + seconds
        while True:
            todo = [t for t in todo if not _ready(t[2])]
            if not todo:
                return
            if time.monotonic() > deadline:
                raise RunError(f"links not up after {seconds:g} s: "
                               + ", ".join(f"{n}:{i}" for n, i, _ in todo[:20])
                               + (f" (+{len(todo) - 20} more)" if len(todo) > 20 else ""))
            time.sleep(0.002)

    def _route_lines(self, g: Node, quick: str = "") -> list[str]:
        """`ip route replace` lines (batch syntax) for the graph's routes of a node."""
        out = []
        for r in self.graph.routes.get(g.name, []):
            if len(r.via) == 1:
                out.append(f"route replace {r.dst} via {r.via[0]} dev {r.dev[0]}{quick}")
            else:
                hops = " ".join(f"nexthop via {v} dev {d}" for v, d in zip(r.via, r.dev))
                out.append(f"route replace {r.dst}{quick} {hops}")
        return out

    def _offloads(self, g: Node) -> Offloads | None:
        spec = self.graph.host_spec(g.name).offloads
        exp = self.host_defaults.offloads
        if exp is None:
            return spec
        if spec is None:
            return exp
        merged = spec.model_dump()
        merged.update({k: v for k, v in exp.model_dump().items() if v is not None})
        return Offloads.model_validate(merged)

    def _run_scripts(self, scripts: dict[str, list[str]]) -> None:
        """Configure every node at once (each node's shell runs its script in parallel)."""
        for name, lines in scripts.items():
            path = self.tracker.workdir / f"{name}.sh"
            path.write_text("set -e\n" + "\n".join(lines) + "\n")
            self.mn[name].sendCmd(f"bash {path} 2>&1; echo __rc=$?")
        failed = []
        for name in scripts:
            out = self.mn[name].waitOutput()
            body, _, rc = out.rpartition("__rc=")
            if rc.strip() != "0":
                failed.append(f"{name}: {body.strip() or 'rc=' + rc.strip()} "
                              f"(script {self.tracker.workdir / name}.sh)")
        if failed:
            raise RunError("configuring nodes failed: " + "; ".join(failed))

    def run(self, node: str, cmd: str) -> str:
        """Run a command on a node; raise RunError (with its output) if it fails."""
        out = self.mn[node].cmd(f"{cmd} 2>&1; echo __rc=$?")
        body, _, rc = out.rpartition("__rc=")
        if rc.strip() != "0":
            raise RunError(f"{node}: `{cmd}` failed: {body.strip()}")
        return body

    # -- events --------------------------------------------------------------------
    def set_link(self, a: str, b: str, up: bool) -> None:
        l = self.graph.link_between(a, b)
        state = "up" if up else "down"
        for i in (l.a, l.b):
            self.run(i.node, f"ip link set {i.name} {state}")
        if up:  # the kernel deleted the routes through the interface when it went down
            for i in (l.a, l.b):
                g = self.graph.nodes[i.node]
                if g.is_l3:
                    quick = " quickack 1" if g.kind == "host" and self.host_defaults.quickack else ""
                    for line in self._route_lines(g, quick):
                        if f"dev {i.name}" in line:
                            self.run(i.node, f"ip {line}")

    # -- teardown ------------------------------------------------------------------
    def stop(self) -> None:
        """End every node's processes (by cgroup) and release Mininet's handles."""
        errors = []
        for b in list(self.backends.values()):
            try:
                b.stop()
            except Exception as e:
                errors.append(f"backend {b.name}: {e}")
        self.backends.clear()
        if self.mn is None:
            return
        cgs = [self.tracker.cgroup / n for n in self.graph.nodes]
        for cg in cgs:  # ask all at once; the kernel ends them in parallel
            kill = cg / "cgroup.kill"
            if kill.exists():
                try:
                    kill.write_text("1")
                except OSError as e:
                    errors.append(f"{cg.name}: {e}")
        deadline = time.monotonic() + 5
        while any(cgroup_pids(cg) for cg in cgs if cg.exists()):
            if time.monotonic() > deadline:
                errors.append("node processes did not exit within 5 s")
                break
            time.sleep(0.005)
        for node in list(self.mn.hosts) + list(self.mn.switches):
            try:
                if node.shell:
                    node.stdin.close()
                    os.close(node.slave)
                    node.shell.wait(timeout=2)
                    node.shell = None
            except Exception as e:
                errors.append(f"{node.name}: {e}")
            TbHost.inToNode.pop(getattr(node, "master", None), None)
            TbHost.outToNode.pop(getattr(node, "master", None), None)
        for cg in cgs:
            try:
                cg.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                errors.append(f"{cg}: {e}")
        self.mn = None
        self.started = False
        if errors:
            raise RunError("teardown: " + "; ".join(errors))


def _ready(sysdir: Path) -> bool:
    try:
        if (sysdir / "operstate").read_text().strip() != "up":
            return False
        return (sysdir / "brport/state").read_text().strip() == "3"
    except FileNotFoundError:  # not a bridge port: carrier is all it needs
        return (sysdir / "operstate").exists()


def _sysctl_builtins(settings: str) -> str:
    """`a.b.c=v …` as shell builtins writing /proc/sys (no sysctl process per node)."""
    out = []
    for kv in settings.split():
        k, v = kv.split("=", 1)
        out.append(f"echo {v} > /proc/sys/{k.replace('.', '/')}")
    return "; ".join(out)
