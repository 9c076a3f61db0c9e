"""Two namespaces joined by a veth, for the CC tests (until testbed/testing.py is used).

Classes:
- NsPair: namespaces `<short>a`/`<short>b` of a RunTracker (10.211.0.1 ↔ 10.211.0.2),
  optionally an HTB bottleneck on a's side; run()/popen() in either; all removed through
  the tracker (namespaces by name, processes through the run's cgroup).
"""
from __future__ import annotations

import subprocess
import time


class NsPair:
    def __init__(self, tracker, rate_mbit: int | None = None, limit_pkts: int = 100):
        self.tracker = tracker
        self.a, self.b = f"{tracker.short}a", f"{tracker.short}b"
        self.ip_a, self.ip_b = "10.211.0.1", "10.211.0.2"
        cg = tracker.node_cgroup("cc")
        self._enter = tracker.enter_fn(cg)
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            tracker.defer(f"netns {ns}", lambda ns=ns: subprocess.run(
                ["ip", "netns", "del", ns], check=False))
        va, vb = f"{tracker.short}-a", f"{tracker.short}-b"
        subprocess.run(["ip", "link", "add", va, "netns", self.a, "type", "veth",
                        "peer", "name", vb, "netns", self.b], check=True)
        for ns, dev, ip in ((self.a, va, self.ip_a), (self.b, vb, self.ip_b)):
            self.run(ns, f"ip link set lo up && ip addr add {ip}/24 dev {dev} && "
                         f"ip link set {dev} up && ethtool -K {dev} tso off gso off gro off "
                         f">/dev/null")
        # No delayed ACKs (see docs/powertcp.md): the receiver ACKs every segment.
        self.run(self.b, f"ip route replace 10.211.0.0/24 dev {vb} quickack 1")
        if rate_mbit:
            self.run(self.a, f"tc qdisc add dev {va} root handle 1: htb default 1 && "
                             f"tc class add dev {va} parent 1: classid 1:1 htb rate "
                             f"{rate_mbit}mbit ceil {rate_mbit}mbit && "
                             f"tc qdisc add dev {va} parent 1:1 handle 10: pfifo "
                             f"limit {limit_pkts}")
        self.dev_a, self.dev_b = va, vb

    def run(self, ns: str, cmd: str, check: bool = True) -> str:
        r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True,
                           text=True, preexec_fn=self._enter, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
        return r.stdout

    def popen(self, ns: str, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], preexec_fn=self._enter,
                                **kw)

    def iperf3_server(self, port: int = 5201) -> subprocess.Popen:
        p = self.popen(self.b, ["iperf3", "-s", "-1", "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while f":{port}" not in self.run(self.b, "ss -ltn"):
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not listen")
            time.sleep(0.05)
        return p
