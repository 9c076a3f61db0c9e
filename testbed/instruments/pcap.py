"""Instrument `pcap`: packet captures with tcpdump on chosen nodes' interfaces.

Off unless listed under `instruments:`. One tcpdump per interface of `nodes` (default:
every host; `interfaces` narrows it), inside the node's
namespace and cgroup, in immediate mode (each packet handed over as it arrives, written
packet by packet), keeping `snaplen` bytes of each packet (headers and TCP options —
TCP-INT's included — fit in the default 128), in a ring of `files` files of `file_mb`
MB (10^6 bytes, tcpdump's unit) each: the newest data survives, the disk use is bounded.

Files: <point>/pcap/<iface>.pcap<N> (interfaces are named <node>-eth<i>; N: the ring's
slot, 0…files-1, tcpdump's numbering; the highest-numbered file is not always the newest). A capture that lost packets in the kernel is noted in meta.json "notes".

    instruments:
      pcap: {nodes: [h1, s1], interfaces: [s1-eth2], snaplen: 128, file_mb: 10, files: 4,
             filter: "tcp port 5201"}
"""
from __future__ import annotations

import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..config.models import PcapOptions
from ..errors import MissingFeature, RunError
from .base import Instrument, register

READY_TIMEOUT = 5.0   # s for tcpdump to open its interface


@register
class Pcap(Instrument):
    name = "pcap"
    Options = PcapOptions
    options: PcapOptions

    @classmethod
    def check(cls, options: PcapOptions) -> None:
        if shutil.which("tcpdump") is None:
            raise MissingFeature("tcpdump (instrument pcap)", "apt-get install tcpdump")

    @classmethod
    def validate(cls, options: PcapOptions, point) -> None:
        g = point.graph
        have = {i.name for n in (options.nodes or [h.name for h in g.hosts])
                for i in g.nodes[n].intfs}
        for k, i in enumerate(options.interfaces):
            if i not in have:
                raise point.fail(("interfaces", k), f"no interface {i!r} on "
                                 f"{', '.join(options.nodes) or 'the hosts'} (has "
                                 f"{', '.join(sorted(have))})")

    @staticmethod
    def ports(o: PcapOptions, graph) -> list[tuple[str, str]]:
        """(node, interface) captured (names checked by the loader: validate())."""
        return [(node, i.name) for node in o.nodes or [h.name for h in graph.hosts]
                for i in graph.nodes[node].intfs if not o.interfaces or i.name in o.interfaces]

    def _ports(self) -> list[tuple[str, str]]:
        return self.ports(self.options, self.ctx.net.graph)

    def start(self) -> None:
        o = self.options
        self.dir = self.ctx.outdir / "pcap"
        self.dir.mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ctx.tracker.defer("pcap", self.stop)
        for node, iface in self._ports():
            cmd = ["tcpdump", "-i", iface, "--immediate-mode", "-U", "-n",
                   "-s", str(o.snaplen), "-C", str(o.file_mb), "-W", str(o.files),
                   "-Z", "root",   # files stay root's, in the root-owned bundle
                   "-w", str(self.dir / f"{iface}.pcap")]
            if o.filter:
                cmd.append(o.filter)
            self.procs[f"{node}:{iface}"] = self.ctx.net[node].popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # the workload starts only once every capture listens
        deadline = time.monotonic() + READY_TIMEOUT
        self.err: dict[str, str] = {}
        for port, p in self.procs.items():
            line = b""
            while b"listening on" not in line:
                left = deadline - time.monotonic()
                if p.poll() is not None or left <= 0 or \
                        not select.select([p.stderr], [], [], left)[0]:
                    rest = p.stderr.read().decode(errors="replace") if p.poll() is not None \
                        else ""
                    raise RunError(f"pcap: tcpdump on {port} did not start: "
                                   f"{(line.decode(errors='replace') + rest).strip()[:300]}")
                line = p.stderr.readline()

    def stop(self) -> None:
        for p in getattr(self, "procs", {}).values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)   # tcpdump flushes and prints its counts
        for port, p in getattr(self, "procs", {}).items():
            try:
                _out, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                _out, err = p.communicate()
            if port not in self.err:
                self.err[port] = (err or b"").decode(errors="replace")

    def write(self) -> list[Path]:
        for port, text in getattr(self, "err", {}).items():
            m = re.search(r"(\d+) packets? dropped by kernel", text)
            if m and int(m.group(1)):
                self.ctx.notes.append(f"pcap: {port}: the kernel dropped {m.group(1)} "
                                      f"packets before tcpdump read them")
        return sorted(self.dir.glob("*.pcap*")) if hasattr(self, "dir") else []
