"""Benchmark noobprobe against its baselines, all measured in the same run.

1. Overhead: TCP throughput h1→h2 over the 4-router chain with and without probing
   (interleaved, `--reps` each, at 20 and 5 probes/s per hop); prints the ratios
   (goal ≥ 0.99).
2. Emission delay: how long after the app packet its probe leaves (timestamps of the
   same capture on h1-eth0), noobprobe vs a userspace prober (AF_PACKET: sees the app's
   outgoing packet, sends a TTL-limited copy).
3. RTT jitter: per-hop RTT standard deviation of noobprobe (kernel timestamps) vs the
   userspace prober (timestamps around sendto/recvfrom of a raw ICMP socket), same path,
   same app (ping at 200/s); prints the ratio (goal ≥ 10). And the jitter each prober
   adds: the standard deviation of (its RTT − the same probe's RTT on the wire: leaving
   h1, its time-exceeded leaving r1 for h1). Twice: on an idle machine, and with h1 busy
   (NP_HOGS CPU-bound processes beside the app, default 2, as on a host doing real work).

USAGE: python bench/noobprobe.py [--reps N] [--seconds S]
(the userspace prober runs as `python bench/noobprobe.py --userspace IFACE DST S OUT`
inside h1's namespace.)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROUTERS = 4
HOGS = int(os.environ.get("NP_HOGS", "2"))


# ---- the userspace prober (runs inside h1's namespace) -------------------------------

def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def userspace_prober(iface: str, dst: str, seconds: float, out: str) -> None:
    """Clone each outgoing echo request to `dst` (as seen on AF_PACKET) into a probe with
    TTL 1..ROUTERS round robin; match time-exceeded on a raw ICMP socket."""
    ETH_P_ALL = 3
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, 0))
    sniff.settimeout(0.01)
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.setblocking(False)
    dst_b = socket.inet_aton(dst)
    sent: dict[int, tuple[int, int, int]] = {}     # echo seq → (send ns, ttl, app cap ns)
    rtts: list[tuple[int, float, int]] = []
    hop, seq = 1, 0x8000
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame, addr = sniff.recvfrom(2048)
        except socket.timeout:
            frame, addr = None, None
        if frame and addr[2] == socket.PACKET_OUTGOING and len(frame) >= 42 and \
                frame[12:14] == b"\x08\x00" and frame[30:34] == dst_b and frame[23] == 1 \
                and frame[34] == 8 and frame[22] == 64:
            t_app = time.monotonic_ns()
            ip = bytearray(frame[14:34])
            ic = bytearray(frame[34:42])
            ip[8] = hop
            ip[2:4] = struct.pack("!H", 28)
            ip[10:12] = b"\0\0"
            ip[10:12] = struct.pack("!H", _csum(bytes(ip)))
            ic[6:8] = struct.pack("!H", seq)
            ic[2:4] = b"\0\0"
            ic[2:4] = struct.pack("!H", _csum(bytes(ic)))
            t = time.monotonic_ns()
            sniff.send(frame[:14] + bytes(ip) + bytes(ic))
            sent[seq] = (t, hop, t_app)
            hop = hop % ROUTERS + 1
            seq = 0x8000 + (seq + 1) % 0x7fff
        while True:
            try:
                msg = icmp.recv(2048)
            except BlockingIOError:
                break
            t = time.monotonic_ns()
            ihl = (msg[0] & 0xf) * 4
            if msg[ihl] != 11 or len(msg) < ihl + 8 + 28:
                continue
            inner = msg[ihl + 8:]
            iq = (inner[0] & 0xf) * 4
            s = struct.unpack("!H", inner[iq + 6:iq + 8])[0]
            if s in sent:
                t0, h, _ = sent.pop(s)
                rtts.append((h, (t - t0) / 1e6, s))
    Path(out).write_text(json.dumps({"rtts": rtts}))


# ---- the benchmark -----------------------------------------------------------------

def iperf_mbps(h1, h2, dst: str, seconds: float) -> float:
    srv = h2.popen(["iperf3", "-s", "-1", "-J"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    # cubic named: a namespace inherits the machine's default CC (bbr on some)
    out = h1.cmd(f"iperf3 -c {dst} -t {seconds} -C cubic -J")
    srv.wait(10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def capture(node, iface: str, path: Path):
    p = node.popen(["tcpdump", "-i", iface, "-w", str(path), "-U", "-s", "96", "-Q", "out",
                    "--time-stamp-precision=nano", "icmp"], stderr=subprocess.PIPE, text=True)
    p.stderr.readline()
    time.sleep(0.1)
    return p


def stop_capture(p, path: Path) -> None:
    """tcpdump drops what it has not read yet when signalled: wait until it caught up."""
    size, still, deadline = -1, 0, time.monotonic() + 10
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        now = path.stat().st_size
        still, size = (still + 1, size) if now == size else (0, now)
    p.terminate()
    p.wait(5)


def emission_delays(pcap: Path) -> list[float]:
    """µs from each app echo request (TTL 64) to the probe (TTL ≤ ROUTERS) following it."""
    from scapy.all import ICMP, IP, PcapReader
    out, last_app = [], None
    with PcapReader(str(pcap)) as r:
        for p in r:
            if IP not in p or ICMP not in p or p[ICMP].type != 8:
                continue
            if p[IP].ttl == 64:
                last_app = p.time
            elif p[IP].ttl <= ROUTERS and last_app is not None:
                out.append(float(p.time - last_app) * 1e6)
                last_app = None
    return out


def jitter(rtts: list[tuple[int, float, int]]) -> dict[int, float]:
    return {h: statistics.pstdev([r for hh, r, _ in rtts if hh == h])
            for h in range(1, ROUTERS + 1) if sum(1 for hh, _, _ in rtts if hh == h) > 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    from testbed.instruments.noobprobe import HostSettings, Prober
    from testbed.testing import running_network
    prober = Prober()
    with running_network({"builtin": "chain", "routers": ROUTERS}) as net:
        h1, h2 = net["h1"], net["h2"]
        dst = net.ip("h2")
        # 1. overhead, at the default per-hop rate, 5× and a quarter of it
        without: list[float] = []
        with_: dict[float, list[float]] = {100.0: [], 20.0: [], 5.0: []}
        nprobes: dict[float, int] = {}
        for _ in range(a.reps):
            without.append(iperf_mbps(h1, h2, dst, a.seconds))
            for hr in with_:
                h = prober.add_host("h1", "h1-eth0", [dst], HostSettings(hop_rate=hr), h1.netns)
                try:
                    with_[hr].append(iperf_mbps(h1, h2, dst, a.seconds))
                    nprobes[hr] = len(prober.poll(give_up_all=True))
                finally:
                    prober.remove_host(h)
        base = statistics.mean(without)
        print(f"throughput without probing       {base:8.1f} Mb/s {[round(x) for x in without]}")
        for hr, v in with_.items():
            print(f"throughput, hop rate {hr:4.0f}/s     {statistics.mean(v):8.1f} Mb/s "
                  f"{[round(x) for x in v]} ({nprobes[hr] / a.seconds:.0f} probes/s)")
            print(f"  ratio with/without            {statistics.mean(v) / base:8.4f}   "
                  f"(goal >= 0.99)")

        # 2+3. noobprobe and the userspace prober on a ping at 200/s, idle and busy
        tmp = Path(net.tracker.workdir)
        runs = {label: probe_both(prober, net, dst, a.seconds, tmp / label, busy)
                for label, busy in (("idle", False), ("busy", True))}
    prober.close()

    for label, run in runs.items():
        print(f"-- h1 {label}")
        report(run)


def probe_both(prober, net, dst: str, seconds: float, tmp: Path, busy: bool):
    """Per prober: (RTTs (hop, ms, seq), emission delays, wire RTTs {seq: ms})."""
    from testbed.instruments.noobprobe import HostSettings
    h1, r1 = net["h1"], net["r1"]
    _, r1_if = net.graph.neighbor_addr("r1", "h1")
    tmp.mkdir()
    hogs = [h1.popen(["timeout", str(4 * seconds + 10), sys.executable, "-c",
                      "while True: pass"]) for _ in range(HOGS if busy else 0)]
    try:
        h = prober.add_host("h1", "h1-eth0", [dst], HostSettings(hop_rate=50), h1.netns)
        try:
            cap = capture(h1, "h1-eth0", tmp / "np.pcap")
            back = capture(r1, r1_if, tmp / "np-r1.pcap")
            h1.cmd(f"ping -q -c {int(seconds * 200)} -i 0.005 {dst}")
            stop_capture(cap, tmp / "np.pcap")
            stop_capture(back, tmp / "np-r1.pcap")
            np_rtts = [(s.outttl, s.latency_ms, s.seq) for s in prober.poll() if s.recv_ns > 0]
        finally:
            prober.remove_host(h)
        # the userspace prober, same path, same app, probing every app packet it sees
        out = tmp / "us.json"
        cap = capture(h1, "h1-eth0", tmp / "us.pcap")
        back = capture(r1, r1_if, tmp / "us-r1.pcap")
        us = h1.popen([sys.executable, __file__, "--userspace", "h1-eth0", dst,
                       str(seconds + 1), str(out)])
        time.sleep(0.5)
        h1.cmd(f"ping -q -c {int(seconds * 200)} -i 0.005 {dst}")
        us.wait(30)
        stop_capture(cap, tmp / "us.pcap")
        stop_capture(back, tmp / "us-r1.pcap")
        us_rtts = [tuple(x) for x in json.loads(out.read_text())["rtts"]]
    finally:
        for p in hogs:
            p.kill()
            p.wait()
    return {name: (rtts, emission_delays(tmp / f"{name}.pcap"),
                   wire_rtts(tmp / f"{name}.pcap", tmp / f"{name}-r1.pcap"))
            for name, rtts in (("np", np_rtts), ("us", us_rtts))}


def wire_rtts(out_pcap: Path, back_pcap: Path) -> dict[int, float]:
    """Probe echo seq → ms from the probe leaving h1 to its time-exceeded leaving r1 for h1."""
    from scapy.all import ICMP, IP, ICMPerror, PcapReader
    sent, rtt = {}, {}
    with PcapReader(str(out_pcap)) as r:
        for p in r:
            if IP in p and ICMP in p and p[ICMP].type == 8 and p[IP].ttl <= ROUTERS:
                sent[p[ICMP].seq] = p.time
    with PcapReader(str(back_pcap)) as r:
        for p in r:
            if ICMP in p and p[ICMP].type == 11 and ICMPerror in p and p[ICMPerror].seq in sent:
                rtt[p[ICMPerror].seq] = float(p.time - sent.pop(p[ICMPerror].seq)) * 1e3
    return rtt


def report(run) -> None:
    (np_rtts, np_delay, np_wire), (us_rtts, us_delay, us_wire) = run["np"], run["us"]

    def q(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
    print(f"emission delay noobprobe  median {q(np_delay, .5):8.1f} us  p99 {q(np_delay, .99):8.1f} us"
          f"  (n={len(np_delay)})")
    print(f"emission delay userspace  median {q(us_delay, .5):8.1f} us  p99 {q(us_delay, .99):8.1f} us"
          f"  (n={len(us_delay)})")
    print(f"emission delay ratio (userspace/noobprobe, median) "
          f"{q(us_delay, .5) / max(q(np_delay, .5), 1e-3):8.1f}")
    jn, ju = jitter(np_rtts), jitter(us_rtts)
    for hop in range(1, ROUTERS + 1):
        if hop in jn and hop in ju:
            print(f"hop {hop}: RTT stdev noobprobe {jn[hop] * 1e3:7.1f} us, userspace "
                  f"{ju[hop] * 1e3:7.1f} us, ratio {ju[hop] / max(jn[hop], 1e-9):6.1f}")
    common = [h for h in jn if h in ju]
    if common:
        ratio = statistics.mean(ju[h] for h in common) / statistics.mean(jn[h] for h in common)
        print(f"RTT jitter ratio (userspace/noobprobe, mean over hops) {ratio:8.1f}   "
              f"(goal >= 10)")
    # what each prober adds to the network's own jitter: its error against the wire
    added = {}
    for name, rtts, wire in (("noobprobe", np_rtts, np_wire), ("userspace", us_rtts, us_wire)):
        err = [(ms - wire[seq]) * 1e3 for _, ms, seq in rtts if seq in wire]
        added[name] = statistics.pstdev(err) if len(err) > 2 else float("nan")
        print(f"{name:9s} RTT - wire RTT: median {q(err, .5):7.1f} us, stdev "
              f"{added[name]:7.1f} us (n={len(err)})")
    print(f"added jitter ratio (userspace/noobprobe) "
          f"{added['userspace'] / max(added['noobprobe'], 1e-9):8.1f}   (goal >= 10)")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--userspace":
        userspace_prober(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
    else:
        main()
