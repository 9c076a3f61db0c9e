"""Helpers for tests and benchmarks: a real network from a few lines of YAML.

    with running_network({"builtin": "chain", "routers": 4}) as net:
        net["h1"].cmd("ping -c1 " + net.ip("h2"))

The argument is anything an experiment's `topology:` key accepts (a builtin with its
parameters, an inline topology, or a file path), or a whole experiment (a mapping with
`topology:`), in which case its `hosts:` and `emulation:` settings apply too. Teardown
always runs.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from .preflight import load_experiment
from .network.net import Network
from .network.tracker import RunTracker


def experiment_text(topology: Any, **experiment: Any) -> str:
    exp = {"name": "test", "duration": 1, "topology": topology, **experiment}
    return yaml.safe_dump(exp, sort_keys=False)


@contextlib.contextmanager
def running_network(spec: Any, **experiment: Any) -> Iterator[Network]:
    if isinstance(spec, str) and "\n" in spec:
        spec = yaml.safe_load(spec)
    if isinstance(spec, dict) and "topology" in spec:
        text = yaml.safe_dump({"name": "test", "duration": 1, **spec, **experiment})
    else:
        text = experiment_text(spec, **experiment)
    plan = load_experiment("<test>", text=text)
    point = plan.points[0]
    with RunTracker() as tracker:
        net = Network(point.graph, tracker, point.experiment.hosts,
                      point.experiment.emulation, experiment=point.experiment)
        net.start()
        yield net


def ping_all(net: Network, v6: bool = False) -> dict[tuple[str, str], bool]:
    """Every host pings every other host once (all sources in parallel):
    (source, address) → answered."""
    hosts = [h.name for h in net.hosts]
    for h in hosts:
        targets = " ".join(net.ip(o, v6) for o in hosts if o != h)
        net[h].sendCmd(f"for a in {targets}; do ping {'-6 ' if v6 else ''}-c1 -W2 $a "
                       f">/dev/null 2>&1 && echo OK $a || echo FAIL $a; done")
    res = {}
    for h in hosts:
        out = net[h].waitOutput()
        for st, addr in re.findall(r"(OK|FAIL) (\S+)", out):
            res[(h, addr)] = st == "OK"
    return res


def iperf_server(node, port: int = 5201, *, one_off: bool = True,
                 ready_s: float = 10.0) -> subprocess.Popen:
    """An iperf3 server on node, returned once it listens (a fixed sleep before the
    client loses that race on a loaded machine or in the slow VM guest)."""
    srv = node.popen(["iperf3", "-s", *(["-1"] if one_off else []), "-p", str(port)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + ready_s
    while f":{port} " not in node.popen(["ss", "-ltnH"], stdout=subprocess.PIPE,
                                        text=True).communicate()[0]:
        if srv.poll() is not None or time.monotonic() > deadline:
            srv.kill()
            raise AssertionError(f"iperf3 server on {node.name}:{port} did not listen "
                                 f"(exit {srv.poll()})")
        time.sleep(0.05)
    return srv


class Iperf:
    """One iperf3 test src → dst: a one-off server on dst, waited for until it listens,
    then the client; each a process of its own (not the node's Mininet shell: flows may
    start from several threads at once). wait() returns iperf3's JSON report.

    cc: the client's TCP_CONGESTION (iperf3 -C); without it the namespace inherits the
    machine's default (bbr on some hosts, which keeps a FIFO near empty)."""

    def __init__(self, net: Network, src: str, dst: str, seconds: float = 1, *,
                 port: int = 5201, cc: str | None = None, extra: str = "", v6: bool = False,
                 ready_s: float = 10.0):
        # iperf3 reads -t as a whole number (0 would mean forever)
        self.seconds = max(1, int(seconds))
        self.server = iperf_server(net[dst], port, ready_s=ready_s)
        cmd = ["iperf3", "-c", net.ip(dst, v6), "-p", str(port), "-t", str(self.seconds),
               "-J", *(["-C", cc] if cc else []), *extra.split()]
        self.client = net[src].popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)

    def running(self) -> bool:
        return self.client.poll() is None

    def wait(self) -> dict:
        out, _ = self.client.communicate(timeout=self.seconds + 20)
        self.server.wait(timeout=10)
        res = json.loads(out)
        assert self.client.returncode == 0 and "error" not in res, res.get("error")
        return res


def iperf_json(net: Network, src: str, dst: str, secs: int = 3, extra: str = "",
               port: int = 5301, ready_s: float = 10.0) -> dict:
    """iperf3's JSON report of one test src → dst."""
    return Iperf(net, src, dst, secs, port=port, extra=extra, ready_s=ready_s).wait()


class Capture:
    """tcpdump on one interface of a node into a pcap; stop() returns the packets (scapy).

    Capturing has begun when the constructor returns (tcpdump said "listening").
    --immediate-mode: without it packets wait in the ring's block until its timeout, and
    what is still there when tcpdump is signalled is lost."""

    def __init__(self, node, iface: str, path: Path, filt: str = "ip or ip6", *,
                 direction: str | None = None, count: int | None = None,
                 snaplen: int = 200, nano: bool = False, drain_s: float = 10.0):
        """drain_s: how long stop() may wait for the file to stop growing (traffic that
        goes on while stopping would make it wait that long)."""
        self.path, self.drain_s = Path(path), drain_s
        cmd = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", str(snaplen),
               "-w", str(self.path)]
        cmd += ["-Q", direction] if direction else []
        cmd += ["-c", str(count)] if count else []
        cmd += ["--time-stamp-precision=nano"] if nano else []
        self.p = node.popen(cmd + [filt], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
        deadline, line = time.monotonic() + 5, ""
        while "listening" not in line and time.monotonic() < deadline:
            line = self.p.stderr.readline()   # "-i any" first says which data link type
        assert "listening" in line, f"tcpdump did not start: {line}"
        time.sleep(0.1)

    @classmethod
    def in_run(cls, net: Network, node: str, iface: str, filt: str = "ip or ip6",
               **kw) -> "Capture":
        """A capture whose file lives in the run's work dir (removed with the run)."""
        path = net.tracker.workdir / f"cap-{node}-{iface}-{time.monotonic_ns()}.pcap"
        return cls(net[node], iface, path, filt, **kw)

    def stop(self) -> list:
        from scapy.all import rdpcap
        # tcpdump drops what it has not written yet when signalled: wait until it caught up
        size, still, deadline = -1, 0, time.monotonic() + self.drain_s
        while still < 3 and time.monotonic() < deadline and self.p.poll() is None:
            time.sleep(min(0.2, self.drain_s))
            now = self.path.stat().st_size if self.path.exists() else 0
            still, size = (still + 1, size) if now == size else (0, now)
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        self.p.wait(timeout=5)
        return list(rdpcap(str(self.path))) if self.path.exists() else []
