"""bench/noobflow.py — noobflow's collection rate and its cost on a TCP flow, with the
baselines measured in the same run.

USAGE: python bench/noobflow.py [--packets N] [--flows F] [--seconds S] [--repeat R]
                                [--generator xdp|afpacket] [--json FILE]

Two namespaces joined by a veth; noobflow (XDP, native mode) on the receiving end.

1. Packet rate. N 60-byte UDP frames over F flows, pinned to CPU 0 (veth runs the
   receiver's XDP on the sender's CPU, so collection happens on that one core), from
   an in-kernel generator by default: BPF_PROG_TEST_RUN with live frames runs a tiny
   XDP program on the sender's veth that stamps the source port and XDP_TXes each
   frame to the receiver (millions of frames per second, no userspace in the loop);
   `--generator afpacket` uses a userspace AF_PACKET sendmmsg sender instead.
   Three rounds on the same traffic: baseline (XDP_PASS-only program: what the
   generator and veth reach without a collector), noobflow, tcpdump (libpcap,
   -w /dev/null, pinned to CPU 1). Each round: frames generated, delivered (the
   receiving veth's rx counter: frames the veth dropped because the receive path could
   not keep up are not delivered), counted by the collector, lost = delivered - counted,
   rates; the ratio noobflow/tcpdump of packets per second collected; noobflow's cost
   per packet from the kernel's bpf_stats (enabled for that round only, then restored).
2. TCP overhead. iperf3 for S seconds with nothing attached, with an XDP program that
   only returns XDP_PASS (the price of XDP on veth itself: NAPI, no GSO), and with
   noobflow (swapping every 100 ms), interleaved R times; ratios of the medians.

Numbers on a shared 2-core VM are noisy: compare the ratios, not absolute values.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes as C
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
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


GEN = r"""
BPF_PERCPU_ARRAY(gen_ctr, u64, 1);
/* Runs on the sender's veth through BPF_PROG_TEST_RUN live frames: stamps a source
 * port (NFLOWS flows, round robin) and transmits the frame out of the veth. */
int gen(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + 14 + 20 + 8 > end)
        return XDP_ABORTED;
    u32 z = 0;
    u64 *c = gen_ctr.lookup(&z);
    if (c) {
        __u16 *sp = data + 14 + 20;
        *sp = bpf_htons(10000 + (*c % NFLOWS));
        (*c)++;
    }
    return XDP_TX;
}
"""


class _TestRunOpts(C.Structure):  # struct bpf_test_run_opts (libbpf 1.x)
    _fields_ = [("sz", C.c_size_t), ("data_in", C.c_void_p), ("data_out", C.c_void_p),
                ("data_size_in", C.c_uint32), ("data_size_out", C.c_uint32),
                ("ctx_in", C.c_void_p), ("ctx_out", C.c_void_p), ("ctx_size_in", C.c_uint32),
                ("ctx_size_out", C.c_uint32), ("retval", C.c_uint32), ("repeat", C.c_int),
                ("duration", C.c_uint32), ("flags", C.c_uint32), ("cpu", C.c_uint32),
                ("batch_size", C.c_uint32)]


class _XdpMd(C.Structure):
    _fields_ = [("data", C.c_uint32), ("data_end", C.c_uint32), ("data_meta", C.c_uint32),
                ("ingress_ifindex", C.c_uint32), ("rx_queue_index", C.c_uint32),
                ("egress_ifindex", C.c_uint32)]


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


class XdpGen:
    """In-kernel generator: BPF_PROG_TEST_RUN with live frames runs `gen` N times as if
    frames arrived on the sender's veth; XDP_TX sends each to the peer (the receiver).
    Pinned to CPU 0, where veth then also runs the receiver's XDP. The receiving veth
    must be in NAPI mode (an XDP program, or GRO on) to accept XDP frames."""

    name = "xdp live frames (BPF_PROG_TEST_RUN)"

    def __init__(self, flows: int):
        from bcc import BPF
        self.bpf = BPF(text=GEN, cflags=[f"-DNFLOWS={flows}"])
        self.fn = self.bpf.load_func(b"gen", BPF.XDP)
        self.lib = C.CDLL("libbpf.so.1", use_errno=True)
        self.lib.bpf_prog_test_run_opts.argtypes = [C.c_int, C.c_void_p]

    def send(self, pair: "Pair", n: int) -> float:
        from scapy.all import IP, UDP, Ether, Raw
        frame = bytes(Ether(src=pair.mac_a, dst="02:00:00:00:00:01") /
                      IP(src="10.88.0.1", dst="10.88.1.1") / UDP(sport=1, dport=9, chksum=0) /
                      Raw(b"\0" * 18))
        buf = C.create_string_buffer(frame, len(frame))
        out: dict = {}

        def run():
            os.sched_setaffinity(0, {0})  # this thread only
            with netns(pair.a):
                md = _XdpMd(0, len(frame), 0, socket.if_nametoindex(pair.ia), 0, 0)
                o = _TestRunOpts(C.sizeof(_TestRunOpts), C.addressof(buf), None, len(frame), 0,
                                 C.addressof(md), None, C.sizeof(md), 0, 0, n, 0,
                                 BPF_F_TEST_XDP_LIVE_FRAMES, 0, 64)
                t = time.perf_counter()
                rc = self.lib.bpf_prog_test_run_opts(self.fn.fd, C.byref(o))
                out["dt"] = time.perf_counter() - t
                out["rc"] = rc, C.get_errno()
        th = threading.Thread(target=run)
        th.start()
        th.join()
        if out["rc"][0] != 0:
            raise SystemExit(f"BPF_PROG_TEST_RUN failed: {os.strerror(out['rc'][1])}")
        return out["dt"]

    def close(self):
        self.bpf.cleanup()


class AfPacketGen:
    """Userspace generator: raw AF_PACKET socket, sendmmsg batches, pinned to CPU 0."""

    name = "AF_PACKET sendmmsg (userspace)"

    def __init__(self, flows: int):
        self.flows = flows

    def send(self, pair: "Pair", n: int) -> float:
        # destination MAC of nobody: the receiver's stack drops the frames right after
        # the taps (no ICMP back), so the cost measured is the collectors'
        r = subprocess.run(["ip", "netns", "exec", pair.a, "taskset", "-c", "0", sys.executable,
                            "-c", SENDER, pair.ia, str(n), str(self.flows), "02:00:00:00:00:01",
                            pair.mac_a], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"sender failed: {r.stderr.strip()}")
        return float(r.stdout.split()[1])

    def close(self):
        pass


def _delivered(pair: "Pair") -> int:
    """Frames the receiving veth took in (its rx counter)."""
    st = json.loads(pair.sh(f"ip -n {pair.b} -j -s link show {pair.ib}"))[0]["stats64"]["rx"]
    return st["packets"]


def _measure(pair, gen, n) -> dict:
    d0 = _delivered(pair)
    dt = gen.send(pair, n)
    time.sleep(0.3)
    d = _delivered(pair) - d0
    return {"generated": n, "delivered": d, "seconds": dt, "pps_generated": n / dt,
            "pps_delivered": d / dt}


def round_baseline(pair, gen, pfn, n):
    """Generator ceiling with an XDP program that only passes (NAPI mode, no collector)."""
    from bcc import BPF
    with netns(pair.b):
        BPF.attach_xdp(pair.ib, pfn, 1 << 2)
        pid = attached_prog_id(pair.ib)
    try:
        with _bpf_stats():
            m = _measure(pair, gen, n)
            m.update(_prog_cost(pid))
        return m
    finally:
        with netns(pair.b):
            BPF.remove_xdp(pair.ib, 1 << 2)


@contextlib.contextmanager
def _bpf_stats():
    """kernel.bpf_stats_enabled on for the block (run_time_ns/run_cnt), then restored."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(old)


def _prog_cost(prog_id: int) -> dict:
    info = json.loads(subprocess.run(["bpftool", "prog", "show", "id", str(prog_id), "--json"],
                                     capture_output=True, text=True).stdout)
    runs = info.get("run_cnt", 0)
    ns = info.get("run_time_ns", 0) / max(runs, 1)
    return {"prog_runs": runs, "prog_ns_per_packet": ns,
            "prog_pps_ceiling_one_core": 1e9 / ns if ns else None}


def round_noobflow(pair, gen, nf, n):
    nf.clear()
    nf.set_filter(FlowFilter())
    pt = nf.attach(pair.ib, pair.b)
    got = {"packets": 0, "intervals": 0}

    def sink(rows, t0, t1):
        got["packets"] += sum(r.packets for r in rows)
        got["intervals"] += 1
    col = Collector(nf, 0.1, sink).start()  # inherits the main thread's CPU 1
    try:
        with _bpf_stats():
            m = _measure(pair, gen, n)
            m.update(_prog_cost(pt.prog_id))
    finally:
        col.stop()
        st = nf.stats()[pt.label]
        nf.detach(pt)
    # against the receiving veth's rx counter: every frame it took in (generated or
    # not: an IPv6 router solicitation counts too) is one XDP run; non-IP frames are
    # counted by the program but not as flows
    counted = got["packets"] + st["nonip_pkts"] + st["filtered_pkts"]
    m.update({"counted": counted, "lost": m["delivered"] - counted,
              "lost_in_kernel": st["lost_pkts"], "intervals": got["intervals"],
              "pps_collected": got["packets"] / m["seconds"]})
    return m


def round_tcpdump(pair, gen, n):
    # GRO on: veth's NAPI path without an XDP program (the XDP generator needs it)
    pair.sh(f"ip netns exec {pair.b} ethtool -K {pair.ib} gro on")
    p = subprocess.Popen(["ip", "netns", "exec", pair.b, "taskset", "-c", "1", "tcpdump", "-i",
                          pair.ib, "-n", "-w", "/dev/null", "-B", "8192"],
                         stderr=subprocess.PIPE, text=True)
    err = ""
    try:
        line = p.stderr.readline()  # "listening on ..." once the capture is live
        if "listening" not in line:
            raise SystemExit(f"tcpdump did not start: {line}")
        cpu0 = _cpu_s(p.pid)  # `ip netns exec` and taskset exec: same pid
        m = _measure(pair, gen, n)
        cpu = _cpu_s(p.pid) - cpu0
    finally:
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=30)[1]
        pair.sh(f"ip netns exec {pair.b} ethtool -K {pair.ib} gro off")
    cap = int(re.search(r"(\d+) packets? captured", err).group(1))
    drop = int(re.search(r"(\d+) packets? dropped by kernel", err).group(1))
    ns = cpu * 1e9 / max(cap, 1)
    m.update({"counted": cap, "lost": m["delivered"] - cap, "dropped_by_kernel": drop,
              "pps_collected": cap / m["seconds"], "process_cpu_s": cpu,
              "process_ns_per_packet": ns})
    return m


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
    ap.add_argument("--generator", choices=("xdp", "afpacket"), default="xdp",
                    help="xdp: in-kernel live frames (fast); afpacket: userspace sendmmsg")
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
    gen = (XdpGen if a.generator == "xdp" else AfPacketGen)(a.flows)
    res["generator"] = gen.name
    cpus = os.sched_getaffinity(0)
    try:
        pair.up()
        if len(cpus) > 1:  # collectors' userspace on CPU 1, generator (its thread) on 0
            os.sched_setaffinity(0, {1})
        res["baseline"] = round_baseline(pair, gen, pfn, n)
        res["noobflow"] = round_noobflow(pair, gen, nf, n)
        res["tcpdump"] = round_tcpdump(pair, gen, n)
        nb, tc = res["noobflow"], res["tcpdump"]
        res["collected_pps_ratio_noobflow_vs_tcpdump"] = nb["pps_collected"] / max(tc["pps_collected"], 1e-9)
        os.sched_setaffinity(0, cpus)
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
        gen.close()
        passprog.cleanup()
        pair.down()

    def k(x):
        return f"{x / 1e6:.3f} Mpps"
    print(f"packet rate: {n:,} x 60 B frames, {a.flows} flows, generator: {gen.name}, "
          f"CPU 0")
    bl = res["baseline"]
    print(f"  baseline (XDP_PASS only): generated {k(bl['pps_generated'])}, delivered "
          f"{bl['delivered']:,}; empty program {bl['prog_ns_per_packet']:.0f} ns/packet "
          f"(bpf_stats' own clock reads included)")
    for name in ("noobflow", "tcpdump"):
        r = res[name]
        print(f"  {name:<9}: generated {k(r['pps_generated'])}, delivered {r['delivered']:>10,}, "
              f"counted {r['counted']:>10,} (lost {r['lost']:,}) -> {k(r['pps_collected'])} "
              f"collected")
    print(f"  ratio noobflow/tcpdump, pps collected: "
          f"{res['collected_pps_ratio_noobflow_vs_tcpdump']:.2f}x")
    nb = res["noobflow"]
    if nb["prog_pps_ceiling_one_core"]:
        print(f"  noobflow program: {nb['prog_ns_per_packet']:.0f} ns/packet over "
              f"{nb['prog_runs']:,} runs (bpf_stats) -> {nb['prog_pps_ceiling_one_core'] / 1e6:.2f} "
              f"Mpps on one core for the program alone")
    print(f"  tcpdump process: {res['tcpdump']['process_ns_per_packet']:.0f} ns/packet of its own "
          f"CPU (user+sys)")
    tp = res["tcp_bps_median"]
    print(f"TCP throughput (median of {a.repeat} interleaved rounds of {a.seconds} s): none "
          f"{tp['none'] / 1e9:.2f} Gb/s, xdp-pass {tp['xdp_pass'] / 1e9:.2f}, noobflow "
          f"{tp['noobflow'] / 1e9:.2f}")
    print(f"  ratio noobflow/none {res['tcp_ratio_noobflow_vs_none']:.3f}, xdp-pass/none "
          f"{res['tcp_ratio_xdp_pass_vs_none']:.3f}, noobflow/xdp-pass "
          f"{res['tcp_ratio_noobflow_vs_xdp_pass']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if res["noobflow"]["lost"] == 0 and res["noobflow"]["lost_in_kernel"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
