"""Flows of a point: iperf3 for long flows, `burst` for sized incast transfers.

Classes:
- Flow: one resolved flow (a FlowSpec, or one sender of an IncastSpec).
- IperfWorkload: starts the servers (a one-off iperf3 server per iperf3 flow, one burst
  sink per receiver of bursts) before the point's clock starts, pre-spawns every client
  blocked on its stdin, and releases each at its start time — so the ten senders of an
  incast start within microseconds of each other instead of one fork apart.
  Incast bursts with `warm: true` connect when spawned and prepare() waits until each
  says so: their handshakes happen before t0 on an idle network; the release only sends.
  (iperf3 flows cannot be warm: its client connects and starts its test in one go.)
  Reports land in <outdir>/iperf/: <flow>.client.json and <flow>.server.txt (iperf3;
  the server's text intervals stamped with CLOCK_MONOTONIC by workload.stamp),
  <flow>.burst.json and <host>.sink.json (burst).
"""
from __future__ import annotations

import json
import select
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config.models import Experiment
from ..errors import RunError

BASE_PORT = 5201
SINK_PORT = 6000
REPORT_INTERVAL = 0.1  # iperf3's smallest interval


@dataclass
class Flow:
    name: str
    src: str
    dst: str
    start: float
    duration: float | None
    bytes: int | None
    cc: str
    parallel: int = 1
    protocol: str = "tcp"
    rate: float | None = None
    port: int = 0
    group: str = ""          # "incast" name for burst members
    released_ns: int = 0     # CLOCK_MONOTONIC when the client was let go
    kernel_cc: str = ""      # the kernel's name of `cc` (eBPF CCs: per run), TCP only
    ipv6: bool = False       # to the destination's IPv6 address
    warm: bool = False       # connected before t0, released to send at its start
    wire_start_ns: int = 0   # its first data at the receiver (the flows instrument's)
    wire_sent_ns: int = 0    # its first data segment leaving the sender (same)

    @property
    def tool(self) -> str:
        """Sized incast transfers use `burst`: iperf3 cannot time a 64 KB transfer."""
        return "burst" if self.group and self.bytes is not None else "iperf3"


def resolve_flows(exp: Experiment) -> list[Flow]:
    flows: list[Flow] = []
    for i, f in enumerate(exp.workload.flows):
        dur = f.duration if f.duration is not None or f.bytes is not None \
            else exp.duration - f.start
        flows.append(Flow(f.name or f"f{i + 1}", f.src, f.dst, f.start, dur, f.bytes,
                          f.cc or exp.cc, f.parallel, f.protocol, f.rate, ipv6=f.ipv6))
    for b in exp.workload.incast:
        for s in b.senders:
            flows.append(Flow(f"{b.name}-{s}", s, b.dst, b.start, b.duration, b.bytes,
                              b.cc or exp.cc, group=b.name, ipv6=b.ipv6, warm=b.warm))
    ports: dict[str, int] = {}
    for fl in flows:
        if fl.tool == "burst":
            fl.port = SINK_PORT
            continue
        fl.port = BASE_PORT + ports.get(fl.dst, 0)
        ports[fl.dst] = ports.get(fl.dst, 0) + 1
    return flows


class IperfWorkload:
    def __init__(self, net, flows: list[Flow], outdir: Path, cc_name: Callable[[str], str]):
        self.net, self.flows, self.outdir = net, flows, outdir / "iperf"
        self.cc_name = cc_name
        self.clients: dict[str, subprocess.Popen] = {}
        self.servers: dict[str, subprocess.Popen] = {}
        self.notes: list[str] = []   # what runs otherwise than asked (meta.json notes)

    def prepare(self) -> None:
        """Servers listening and clients spawned (blocked), before the clock starts."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        sinks: dict[str, int] = {}
        for f in self.flows:
            if f.tool == "burst":
                sinks[f.dst] = sinks.get(f.dst, 0) + 1
        for dst, n in sinks.items():
            self.servers[f"sink-{dst}"] = self.net[dst].popen(
                [sys.executable, "-m", "testbed.workload.burst", "sink", "--port",
                 str(SINK_PORT), "--expect", str(n), "-o", str(self.outdir / f"{dst}.sink.json")],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for f in self.flows:
            if f.tool == "burst":
                continue
            log = self.outdir / f"{f.name}.server.txt"
            server = shlex.join(["iperf3", "-s", "-1", "-p", str(f.port), "-i",
                                 str(REPORT_INTERVAL), "--forceflush", "-f", "k"])
            stamp = shlex.join([sys.executable, "-m", "testbed.workload.stamp", "-o", str(log)])
            self.servers[f.name] = self.net[f.dst].popen(
                ["sh", "-c", f"{server} | {stamp}"], stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT)
        self._wait_listening()
        for f in self.flows:
            if f.protocol == "tcp":
                f.kernel_cc = self.cc_name(f.cc)
            if f.tool == "burst":
                # Python starts before the release and waits on stdin: no start-up delay.
                self.clients[f.name] = self.net[f.src].popen(
                    [sys.executable, "-m", "testbed.workload.burst", "send", "--dst",
                     self.net.ip(f.dst, f.ipv6), "--port", str(f.port), "--bytes", str(f.bytes),
                     "--cc", f.kernel_cc, "-o", str(self.outdir / f"{f.name}.burst.json")]
                    + (["--warm"] if f.warm else []),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE if f.warm else subprocess.DEVNULL,
                    stderr=subprocess.PIPE)
                continue
            cmd = ["iperf3", "-c", self.net.ip(f.dst, f.ipv6), "-p", str(f.port), "-J",
                   "-i", str(REPORT_INTERVAL), "--logfile", str(self.outdir / f"{f.name}.client.json"),
                   "--connect-timeout", "3000"]
            if f.bytes is not None:
                cmd += ["-n", str(f.bytes)]
            else:
                # iperf3 (3.12) reads -t as whole seconds (atoi: "2.5" runs 2 s, "0.5" is
                # 0): give it what it will run, and say so where that differs
                secs = max(1, int(f.duration))
                if secs != f.duration:
                    self.notes.append(f"{f.name}: iperf3 runs whole seconds: {f.duration:g} s "
                                      f"asked, {secs} s run (give bytes: or whole seconds)")
                cmd += ["-t", str(secs)]
            if f.protocol == "udp":
                cmd += ["-u", "-b", f"{(f.rate or 1.0) * 1e6:.0f}"]
            else:
                cmd += ["-C", f.kernel_cc]
                if f.rate:
                    cmd += ["-b", f"{f.rate * 1e6:.0f}"]
            if f.parallel > 1:
                cmd += ["-P", str(f.parallel)]
            wrapped = [sys.executable, "-m", "testbed.workload.at", "--stamp",
                       str(self.outdir / f"{f.name}.start"), "--", *cmd]
            self.clients[f.name] = self.net[f.src].popen(
                wrapped, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        self._wait_warm()

    def _wait_warm(self, timeout: float = 20.0) -> None:
        """Every warm sender connected (it says so) before the clock starts: its
        handshake then happens on an idle network, not in the experiment."""
        deadline = time.monotonic() + timeout
        for f in self.flows:
            if not f.warm:
                continue
            p = self.clients[f.name]
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = p.stdout.readline().decode().strip() if ready else ""
            if line != "connected":
                err = "" if ready else f"not connected after {timeout:g} s"
                raise RunError(f"{f.name}: warm connection to {f.dst} failed: "
                               f"{line or err or 'sender exited'}")

    def _cc_mismatches(self) -> list[str]:
        """A flow whose socket ran another CC than asked (the kernel's word, from the
        sender's report) would make every figure of the point wrong."""
        out = []
        for f in self.flows:
            rep = (self.outdir / (f"{f.name}.burst.json" if f.tool == "burst"
                                  else f"{f.name}.client.json"))
            try:
                d = json.loads(rep.read_text())
            except (OSError, ValueError):
                continue   # no report: the client's own error says why
            ran = d.get("kernel_cc") or d.get("end", {}).get("sender_tcp_congestion")
            if f.kernel_cc and ran and ran != f.kernel_cc:
                out.append(f"{f.name}: ran {ran}, not {f.kernel_cc} (cc: {f.cc})")
        return out

    def _wait_listening(self, timeout: float = 5.0) -> None:
        want: dict[str, set[int]] = {}
        for f in self.flows:
            want.setdefault(f.dst, set()).add(f.port)
        deadline = time.monotonic() + timeout
        while want:
            for dst in list(want):
                out = self.net[dst].cmd("ss -Hltnu")
                have = {int(l.split()[4].rsplit(":", 1)[1]) for l in out.splitlines()
                        if len(l.split()) > 4 and l.split()[4].rsplit(":", 1)[1].isdigit()}
                want[dst] -= have
                if not want[dst]:
                    del want[dst]
            if want and time.monotonic() > deadline:
                raise RunError(f"iperf3 servers not listening after {timeout}s: {want}")
            if want:
                time.sleep(0.02)

    def arm(self, t0_ns: int) -> None:
        """Give every client its absolute start time; they start on their own."""
        for f in self.flows:
            p = self.clients[f.name]
            p.stdin.write(f"{t0_ns + int(f.start * 1e9)}\n".encode())
            p.stdin.close()

    def started(self) -> None:
        """Read when each client actually started (stamped by the client itself)."""
        for f in self.flows:
            try:
                if f.tool == "burst":
                    rep = json.loads((self.outdir / f"{f.name}.burst.json").read_text())
                    f.released_ns = int(rep["start_ns"])
                else:
                    f.released_ns = int((self.outdir / f"{f.name}.start").read_text())
            except (OSError, ValueError, KeyError):
                f.released_ns = 0

    def finish(self, grace: float = 3.0) -> list[str]:
        """Wait for clients (bounded), then servers; returns the failures."""
        errors = []
        for p in self.clients.values():  # not armed (an error before the clock): cancel
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
        deadline = time.monotonic() + grace
        for name, p in self.clients.items():
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                errors.append(f"{name}: client still running at the end; stopped")
                continue
            rep = self.outdir / f"{name}.client.json"
            # iperf3 3.12 with --logfile exits 0 even when it could not connect: its
            # report's error counts as a failure too
            failed = _json_error(rep) or _json_error(self.outdir / f"{name}.burst.json")
            if p.returncode != 0 or failed:
                err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
                errors.append(f"{name}: {failed or err or f'exit {p.returncode}'}")
        errors += self._cc_mismatches()
        for name, p in self.servers.items():
            try:
                p.wait(timeout=max(0.05, deadline + 1 - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in list(self.clients.values()):
            for pipe in (p.stderr, p.stdout):
                if pipe:
                    pipe.close()
        return errors


def _json_error(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("error")
    except (OSError, ValueError):
        return None
