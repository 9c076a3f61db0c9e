"""The base RTT of a run's paths, probed before the workload (τ for `base_rtt_us: probe`).

A delay-based CC's τ is the RTT of an empty path. The socket's own min RTT is a poor
estimate where the forwarding latency itself varies: through BMv2 it is the switch's best
moment (135-250 µs, while an empty path typically answers in 300-600 µs), and a flow that
connects during a burst never sees the empty path at all. Here every (src, dst) pair of
the run's flows is pinged with full-sized frames on the idle network, one pair at a time; a
pair's base RTT is its median, the run's the median over pairs, and τ adds one frame's
transmission at the hosts' rate: a lone probe is not held for it by an emulated rate
limiter (HTB, BMv2's queue rate), while each segment of a flow filling the link is.

probe(net, pairs, count) → {"rtt_us": run's median, "pairs": {"h1→h0": {median, p10,
p90, min, n}}}; tau_us(probed, host_bw_mbps) → the τ the CC gets.
"""
from __future__ import annotations

import re
import statistics
import subprocess

from ..config.units import FRAME_BYTES
from ..errors import RunError

PROBE_BYTES = FRAME_BYTES - 42   # ICMP payload (Ethernet 14 + IPv4 20 + ICMP 8): a full frame
_TIME = re.compile(r"time=([\d.]+) ms")


def probe(net, pairs: list[tuple[str, str]], count: int = 20,
          interval_s: float = 0.002) -> dict:
    """Ping every pair `count` times (+1 discarded: it may wait for neighbour resolution),
    one pair after the other — all at once, pairs sharing a bottleneck would queue behind
    each other's probes (11 pairs at 5 ms: 27 Mb/s into a 20 Mb/s link). Medians in µs."""
    out: dict[str, dict] = {}
    for src, dst in sorted(set(pairs)):
        p = net.mn[src].popen(
            ["ping", "-n", "-c", str(count + 1), "-i", f"{interval_s:g}", "-s",
             str(PROBE_BYTES), "-W", "1", net.ip(dst)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            text, _ = p.communicate(timeout=count * interval_s + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
        rtts = sorted(float(x) * 1000 for x in _TIME.findall(text)[1:])
        if len(rtts) < count // 2:
            raise RunError(f"probing the base RTT {src}→{dst}: {len(rtts)} of {count} "
                           f"pings answered: {text.strip()[-300:]}")
        out[f"{src}→{dst}"] = {"median_us": round(statistics.median(rtts)),
                               "p10_us": round(rtts[len(rtts) // 10]),
                               "p90_us": round(rtts[len(rtts) * 9 // 10]),
                               "min_us": round(rtts[0]), "n": len(rtts)}
    return {"rtt_us": round(statistics.median(v["median_us"] for v in out.values())),
            "probe": f"{count} pings of {FRAME_BYTES} B frames per pair, "
                     f"{interval_s * 1e3:g} ms apart, one pair at a time, on the idle "
                     f"network",
            "pairs": out}


def frame_us(bw_mbps: float) -> int:
    """One full frame's transmission at bw_mbps, µs."""
    return round(FRAME_BYTES * 8 / bw_mbps)


def tau_us(probed: dict, host_bw_mbps: float) -> int:
    return probed["rtt_us"] + frame_us(host_bw_mbps)
