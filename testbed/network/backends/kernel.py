"""The kernel backend: forwarding by Linux in the node's own namespace.

- switch: a Linux bridge (no STP; the topology refuses L2 loops) joining every port;
  bridged frames bypass netfilter.
- router: IPv4/IPv6 forwarding with the graph's routes (multipath for ECMP, 5-tuple hash),
  TTL decrement and ICMP time-exceeded by the kernel, ICMP rate limits off for the run
  so every probe is answered (recorded in the results' meta).
Egress queues are the HTB+FIFO of each shaped port (network.shaping); the TCP-INT
switch program attaches to those ports (network.tcpint), and so does the ECN marking
program on links with `ecn_mark:` (network.ecn), started and stopped with the backend.
"""
from __future__ import annotations

from pathlib import Path

from .base import SwitchBackend

# Recorded in meta.json by the runner: what routers run with.
ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv4.icmp_msgs_per_sec": 1000000,
    "net.ipv4.icmp_msgs_burst": 1000000,
    "net.ipv6.icmp.ratelimit": 0,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}

# ECMP next-hop choice. `l4` is a hash of the 5-tuple, as a hardware switch computes it:
# policy 3 (custom) over fields 0x37 = src/dst address, protocol, src/dst port. Policy 1
# ("L4") would not do: for a forwarded packet that already carries an L4 hash it takes that
# hash, and a packet from a host's socket carries the socket's random txhash (veth keeps
# it) — so two connections with the same 5-tuple took different spines (measured: a reused
# ephemeral port split one N3 flow's probes over two spines), and TCP re-rolls the txhash
# on a retransmission timeout, moving a flow mid-way.
ECMP_HASH = {
    "l3": {"fib_multipath_hash_policy": 0},
    "l4": {"fib_multipath_hash_policy": 3, "fib_multipath_hash_fields": "0x0037"},
}

# Switches: bridged frames skip netfilter. With br_netfilter in the kernel (built in here)
# every namespace starts with bridge-nf-call-* = 1, and each bridged IP packet then runs
# the IP hooks of a switch that has no rules: measured, one flow through a switch went
# 1.5× faster with it off (MTU-sized packets; 1.08× with TSO). A switch is L2.
SWITCH_SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.bridge.bridge-nf-call-ip6tables": 0,
    "net.bridge.bridge-nf-call-arptables": 0,
}
BR_NETFILTER = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


class KernelBackend(SwitchBackend):
    name = "kernel"

    def configure(self, gnode, mnode) -> list[str]:
        if gnode.kind == "switch":
            sysctls = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
            if BR_NETFILTER.exists():   # absent where br_netfilter is not in the kernel
                sysctls.update(SWITCH_SYSCTLS)
            # One `ip` for the bridge and all its ports (a process per port made a
            # 256-port switch cost seconds).
            batch = ["link add br0 type bridge stp_state 0 forward_delay 0"]
            batch += [f"link set {i.name} master br0" for i in gnode.intfs]
            batch.append("link set br0 up")
            return ["sysctl -qw " + " ".join(f"{k}={v}" for k, v in sysctls.items()),
                    "ip -batch - <<'EOF'\n" + "\n".join(batch) + "\nEOF"]
        sysctls = dict(ROUTER_SYSCTLS)
        for fam in ("ipv4", "ipv6"):
            sysctls.update({f"net.{fam}.{k}": v
                            for k, v in ECMP_HASH[gnode.spec.ecmp_hash].items()})
        return ["sysctl -qw " + " ".join(f"{k}={v}" for k, v in sysctls.items())]

    def start(self) -> None:
        from ..ecn import EcnMarking

        self.ecn = EcnMarking(self.net).start()

    def stop(self) -> None:
        ecn = getattr(self, "ecn", None)
        if ecn is not None:
            ecn.stop()

    def ecn_counters(self) -> list[dict]:
        ecn = getattr(self, "ecn", None)
        return ecn.counters() if ecn is not None else []


BACKEND = KernelBackend
