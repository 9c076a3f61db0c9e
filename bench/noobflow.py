"""bench/noobflow.py — noobflow's collection rate and its cost on a TCP flow, with the
baselines measured in the same run.

USAGE: python bench/noobflow.py [--packets N] [--flows F] [--seconds S] [--repeat R]
                                [--json FILE]

Two namespaces joined by a veth; noobflow (XDP, native mode) on the receiving end.

1. Packet rate. A raw AF_PACKET sender (sendmmsg, 64-byte UDP frames over F flows,
   pinned to one CPU — veth runs the receiver's XDP on the sender's CPU, so collection
   happens on that one core) sends N frames as fast as it can, in four rounds:
   no collector (the generator's own ceiling), an XDP_PASS-only program, noobflow,
   tcpdump (libpcap, -w /dev/null). Reported: the rate each round reached, what each
   collector counted, the ratio noobflow/tcpdump of packets per second collected, and
   noobflow's own cost per packet from the kernel's bpf_stats (run_time_ns / run_cnt,
   enabled for that round only) with the one-core ceiling it implies.
2. TCP overhead. iperf3 for S seconds with nothing attached, with an XDP program that
   only returns XDP_PASS (the price of XDP on veth itself: NAPI, no GSO), and with
   noobflow (swapping every 100 ms), interleaved R times; ratios of the medians.

Numbers on a shared 2-core VM are noisy: compare the ratios, not absolute values.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.instruments.noobflow import (  # noqa: E402
    Collector, FlowFilter, Noobflow, attached_prog_id, netns)

SENDER = r"""
import ctypes as C, socket, sys, time
iface, n, nflows, dmac, smac = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
from scapy.all import Ether, IP, UDP, Raw
frames = [bytes(Ether(src=smac, dst=dmac) / IP(src="10.88.0.1", dst="10.88.1.1") /
                UDP(sport=10000 + i, dport=9) / Raw(b"\0" * 18)) for i in range(nflows)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS: straight to the driver
class iovec(C.Structure):
    _fields_ = [("base", C.c_void_p), ("len", C.c_size_t)]
class msghdr(C.Structure):
    _fields_ = [("name", C.c_void_p), ("namelen", C.c_uint32), ("iov", C.POINTER(iovec)),
                ("iovlen", C.c_size_t), ("control", C.c_void_p), ("controllen", C.c_size_t),
                ("flags", C.c_int)]
class mmsghdr(C.Structure):
    _fields_ = [("hdr", msghdr), ("len", C.c_uint)]
B = 256
bufs = [C.create_string_buffer(f, len(f)) for f in frames]
iovs = (iovec * B)()
msgs = (mmsghdr * B)()
for i in range(B):
    b = bufs[i % nflows]
    iovs[i].base, iovs[i].len = C.addressof(b), len(frames[i % nflows])
    msgs[i].hdr.iov, msgs[i].hdr.iovlen = C.pointer(iovs[i]), 1
libc = C.CDLL(None, use_errno=True)
fd = s.fileno()
sent, retries = 0, 0
t0 = time.perf_counter()
while sent < n:
    k = min(B, n - sent)
    # batches start at a multiple of nflows so every flow gets its exact share
    r = libc.sendmmsg(fd, msgs, k, 0)
    if r < 0:
        retries += 1
        time.sleep(0.0001)
        continue
    sent += r
t1 = time.perf_counter()
print(sent, t1 - t0, retries)
"""

XDP_PASS = "int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }"


class Pair:
    def __init__(self):
        p = f"tbnfb{secrets.token_hex(2)}"
        self.a, self.b, self.ia, self.ib = f"{p}a", f"{p}b", f"{p}0", f"{p}1"

    def sh(self, cmd: str) -> str:
        return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout

    def up(self) -> "Pair":
        a, b, ia, ib = self.a, self.b, self.ia, self.ib
        self.sh(f"ip netns add {a}; ip netns add {b}")
        self.sh(f"ip link add {ia} netns {a} type veth peer name {ib} netns {b}")
        self.sh(f"ip -n {a} addr add 10.88.0.1/24 dev {ia}; ip -n {b} addr add 10.88.0.2/24 dev {ib}")
        self.sh(f"ip -n {a} link set {ia} up; ip -n {b} link set {ib} up")
        self.sh(f"ip -n {a} link set lo up; ip -n {b} link set lo up")
        self.mac_a = self.sh(f"ip netns exec {a} cat /sys/class/net/{ia}/address").strip()
        return self

    def down(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def send(pair: Pair, n: int, flows: int) -> tuple[int, float]:
    # destination MAC of nobody: the receiver's stack drops the frames right after the
    # taps (no ICMP back), so the cost measured is the collectors', not the stack's
    r = subprocess.run(["ip", "netns", "exec", pair.a, "taskset", "-c", "0", sys.executable,
                        "-c", SENDER, pair.ia, str(n), str(flows), "02:00:00:00:00:01",
                        pair.mac_a], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"sender failed: {r.stderr.strip()}")
    sent, dt, _ = r.stdout.split()
    return int(sent), float(dt)


def round_none(pair, n, flows):
    sent, dt = send(pair, n, flows)
    return {"sent": sent, "seconds": dt, "pps_sent": sent / dt}


def round_noobflow(pair, nf, n, flows):
    nf.clear()
    nf.set_filter(FlowFilter())
    pt = nf.attach(pair.ib, pair.b)
    got = {"packets": 0, "intervals": 0}

    def sink(rows, t0, t1):
        got["packets"] += sum(r.packets for r in rows if r.dport == 9)
        got["intervals"] += 1
    col = Collector(nf, 0.1, sink).start()
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats_path.read_text().strip()
    stats_path.write_text("1")  # run_time_ns/run_cnt of the program; restored below
    try:
        sent, dt = send(pair, n, flows)
        time.sleep(0.2)
        info = json.loads(subprocess.run(["bpftool", "prog", "show", "id", str(pt.prog_id),
                                          "--json"], capture_output=True, text=True).stdout)
    finally:
        stats_path.write_text(old)
        col.stop()
        st = nf.stats()[pt.label]
        nf.detach(pt)
    ns_per_pkt = info.get("run_time_ns", 0) / max(info.get("run_cnt", 0), 1)
    return {"sent": sent, "seconds": dt, "pps_sent": sent / dt, "counted": got["packets"],
            "lost": sent - got["packets"], "lost_in_kernel": st["lost_pkts"],
            "intervals": got["intervals"], "pps_collected": got["packets"] / dt,
            "prog_runs": info.get("run_cnt", 0), "prog_ns_per_packet": ns_per_pkt,
            "prog_pps_ceiling_one_core": 1e9 / ns_per_pkt if ns_per_pkt else None}


def round_xdp_pass(pair, pfn, n, flows):
    """The same frames with an XDP program that only passes: veth's NAPI mode alone."""
    from bcc import BPF
    with netns(pair.b):
        BPF.attach_xdp(pair.ib, pfn, 1 << 2)
    try:
        sent, dt = send(pair, n, flows)
    finally:
        with netns(pair.b):
            BPF.remove_xdp(pair.ib, 1 << 2)
    return {"sent": sent, "seconds": dt, "pps_sent": sent / dt}


def round_tcpdump(pair, n, flows):
    p = subprocess.Popen(["ip", "netns", "exec", pair.b, "tcpdump", "-i", pair.ib, "-n", "-w",
                          "/dev/null", "-B", "8192", "udp port 9"],
                         stderr=subprocess.PIPE, text=True)
    err = ""
    try:
        line = p.stderr.readline()  # "listening on ..." once the capture is live
        if "listening" not in line:
            raise SystemExit(f"tcpdump did not start: {line}")
        cpu0 = _cpu_s(p.pid)  # `ip netns exec` execs tcpdump: same pid
        sent, dt = send(pair, n, flows)
        time.sleep(0.5)
        cpu = _cpu_s(p.pid) - cpu0
    finally:
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=30)[1]
    cap = int(re.search(r"(\d+) packets? captured", err).group(1))
    drop = int(re.search(r"(\d+) packets? dropped by kernel", err).group(1))
    ns = cpu * 1e9 / max(cap, 1)
    return {"sent": sent, "seconds": dt, "pps_sent": sent / dt, "counted": cap,
            "lost": sent - cap, "dropped_by_kernel": drop, "pps_collected": cap / dt,
            "process_cpu_s": cpu, "process_ns_per_packet": ns,
            "process_pps_ceiling_one_core": 1e9 / ns if ns else None}


def _cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def iperf(pair, seconds) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", pair.b, "iperf3", "-s", "-1", "-p", "5311"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = subprocess.run(["ip", "netns", "exec", pair.a, "iperf3", "-c", "10.88.0.2", "-p",
                            "5311", "-t", str(seconds), "-J"], capture_output=True, text=True,
                           timeout=seconds + 30)
        srv.wait(timeout=10)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--flows", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved TCP rounds")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/noobflow.py: needs root", file=sys.stderr)
        return 2
    n = a.packets - a.packets % 256 - (a.packets - a.packets % 256) % a.flows
    pair = Pair()
    res: dict = {"packets": n, "flows": a.flows, "cpus": os.cpu_count()}
    from bcc import BPF
    t = time.monotonic()
    nf = Noobflow(points=1)
    res["compile_s"] = round(time.monotonic() - t, 2)
    passprog = BPF(text=XDP_PASS)
    pfn = passprog.load_func(b"xdp_pass", BPF.XDP)
    try:
        pair.up()
        res["none"] = round_none(pair, n, a.flows)
        res["xdp_pass"] = round_xdp_pass(pair, pfn, n, a.flows)
        res["noobflow"] = round_noobflow(pair, nf, n, a.flows)
        res["tcpdump"] = round_tcpdump(pair, n, a.flows)
        nb, tc = res["noobflow"], res["tcpdump"]
        res["collected_pps_ratio_noobflow_vs_tcpdump"] = nb["pps_collected"] / max(tc["pps_collected"], 1e-9)
        # TCP: rounds of none / xdp-pass / noobflow, interleaved; medians per mode
        tp: dict[str, list[float]] = {"none": [], "xdp_pass": [], "noobflow": []}
        for _ in range(a.repeat):
            tp["none"].append(iperf(pair, a.seconds))
            with netns(pair.b):
                BPF.attach_xdp(pair.ib, pfn, 1 << 2)
            try:
                tp["xdp_pass"].append(iperf(pair, a.seconds))
            finally:
                with netns(pair.b):
                    BPF.remove_xdp(pair.ib, 1 << 2)
            nf.clear()
            pt = nf.attach(pair.ib, pair.b)
            col = Collector(nf, 0.1, lambda *x: None).start()
            try:
                tp["noobflow"].append(iperf(pair, a.seconds))
            finally:
                col.stop()
                nf.detach(pt)
        med = {m: statistics.median(v) for m, v in tp.items()}
        res["tcp_bps"] = tp
        res["tcp_bps_median"] = med
        res["tcp_ratio_noobflow_vs_none"] = med["noobflow"] / med["none"]
        res["tcp_ratio_xdp_pass_vs_none"] = med["xdp_pass"] / med["none"]
        res["tcp_ratio_noobflow_vs_xdp_pass"] = med["noobflow"] / med["xdp_pass"]
        with netns(pair.b):
            assert attached_prog_id(pair.ib) == 0
    finally:
        nf.close()
        passprog.cleanup()
        pair.down()

    def k(x):
        return f"{x / 1e3:,.0f} kpps"
    print(f"packet rate ({n:,} x 64 B frames, {a.flows} flows, sender on CPU 0)")
    print(f"  generator alone      : {k(res['none']['pps_sent'])}")
    print(f"  with XDP_PASS only   : {k(res['xdp_pass']['pps_sent'])}")
    for name in ("noobflow", "tcpdump"):
        r = res[name]
        print(f"  {name:<9} sent {k(r['pps_sent']):>12}, counted {r['counted']:>10,} of "
              f"{r['sent']:,} (lost {r['lost']:,}) -> {k(r['pps_collected'])} collected")
    print(f"  ratio noobflow/tcpdump, pps collected: "
          f"{res['collected_pps_ratio_noobflow_vs_tcpdump']:.2f}x (both bounded by the generator "
          f"when neither loses)")
    nb, tc = res["noobflow"], res["tcpdump"]
    if nb["prog_pps_ceiling_one_core"]:
        print(f"  noobflow program: {nb['prog_ns_per_packet']:.0f} ns/packet over "
              f"{nb['prog_runs']:,} runs (bpf_stats) -> ceiling "
              f"{nb['prog_pps_ceiling_one_core'] / 1e6:.2f} Mpps on one core for the program")
    if tc["process_pps_ceiling_one_core"]:
        print(f"  tcpdump process : {tc['process_ns_per_packet']:.0f} ns/packet "
              f"(its user+sys CPU; the kernel's copy into its ring, on the sender's core, not "
              f"included) -> ceiling {tc['process_pps_ceiling_one_core'] / 1e6:.2f} Mpps")
        res["ceiling_ratio_noobflow_vs_tcpdump"] = (nb["prog_pps_ceiling_one_core"] or 0) / \
            tc["process_pps_ceiling_one_core"]
        print(f"  ceiling ratio noobflow/tcpdump: {res['ceiling_ratio_noobflow_vs_tcpdump']:.2f}x "
              f"(per-packet cost only; favours tcpdump)")
    tp = res["tcp_bps_median"]
    print(f"TCP throughput (median of {a.repeat} interleaved rounds of {a.seconds} s): none "
          f"{tp['none'] / 1e9:.2f} Gb/s, xdp-pass {tp['xdp_pass'] / 1e9:.2f}, noobflow "
          f"{tp['noobflow'] / 1e9:.2f}")
    print(f"  ratio noobflow/none {res['tcp_ratio_noobflow_vs_none']:.3f}, xdp-pass/none "
          f"{res['tcp_ratio_xdp_pass_vs_none']:.3f}, noobflow/xdp-pass "
          f"{res['tcp_ratio_noobflow_vs_xdp_pass']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if res["noobflow"]["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
