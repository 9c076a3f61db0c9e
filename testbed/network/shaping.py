"""Egress shaping of one interface: HTB at the link's rate over a FIFO of the set limit.

A FIFO drained at a known rate has a queueing delay of backlog / rate, which is what
TCP-INT's hop latency and noobprobe's per-hop RTT are checked against. Where the kernel
has netem, delay/jitter/loss use netem as the HTB leaf (its own limit is then the FIFO).
An `aqm:` takes the FIFO's place: HTB → AQM, or HTB → netem → AQM as netem's child (netem
hands each packet to the AQM when its delay is over, so the AQM sees the queue that HTB's
rate builds, not the packets still in flight on the emulated wire).

Functions:
- tc_lines(intf, params): the `tc -batch` lines for one interface (empty: not shaped).
"""
from __future__ import annotations

from ..config.models import LinkParams
from ..config.units import FRAME_BYTES   # a packet limit in bytes (RED's) counts full frames

DEFAULT_FIFO_PACKETS = 1000  # Linux's default txqueuelen, when a rate is set but no queue


def _packets(p: LinkParams) -> int:
    q = p.queue
    if q is None:
        return DEFAULT_FIFO_PACKETS
    return q.packets if q.packets else max(q.bytes // FRAME_BYTES, 1)


def aqm_line(intf: str, parent: str, p: LinkParams) -> str:
    """The AQM qdisc, its limit from the link's `queue`."""
    a = p.aqm
    ecn = " ecn" if a.ecn else ""
    if a.kind == "red":
        limit = p.queue.bytes if p.queue and p.queue.bytes else _packets(p) * FRAME_BYTES
        mx = a.max or limit // 2
        mn = a.min or max(mx // 3, FRAME_BYTES)
        # tc-red(8): burst = (2·min + max) / (3·avpkt), bandwidth for the idle-time decay
        burst = (2 * mn + mx) // (3 * 1000) + 1
        bw = f" bandwidth {max(int(p.bw * 1000), 8)}kbit" if p.bw else ""
        return (f"qdisc add dev {intf} {parent} red limit {max(limit, mx + 1)} min {mn} "
                f"max {mx} avpkt 1000 burst {burst} probability {a.probability or 0.1}"
                f"{bw}{ecn}")
    opts = [f"limit {_packets(p)}"]
    if a.target is not None:
        opts.append(f"target {a.target * 1e6:.0f}us")
    if a.interval is not None:
        opts.append(f"interval {a.interval * 1e6:.0f}us")
    if a.maxrate is not None:
        opts.append(f"maxrate {max(int(a.maxrate * 1000), 8)}kbit")
    if a.kind != "fq":
        opts.append("ecn" if a.ecn else "noecn")
    return f"qdisc add dev {intf} {parent} {a.kind} " + " ".join(opts)


def tc_lines(intf: str, p: LinkParams) -> list[str]:
    if p.bw is None and not p.needs_netem() and p.aqm is None:
        return []
    lines = []
    if p.bw is not None:
        kbit = max(int(round(p.bw * 1000)), 8)
        # quantum: HTB's default (rate/r2q) is huge at Gb/s; one class makes it moot.
        lines += [f"qdisc replace dev {intf} root handle 1: htb default 1",
                  f"class add dev {intf} parent 1: classid 1:1 htb rate {kbit}kbit "
                  f"ceil {kbit}kbit quantum 60000"]
        parent = "parent 1:1 handle 10:"
    else:
        parent = "root handle 10:"
    q = p.queue
    if p.needs_netem():
        nm = [f"qdisc add dev {intf} {parent} netem"]
        if p.delay:
            nm.append(f"delay {p.delay * 1e6:.0f}us")
            if p.jitter:
                nm.append(f"{p.jitter * 1e6:.0f}us")
        if p.loss:
            nm.append(f"loss {p.loss}%")
        limit = q.packets if q and q.packets else DEFAULT_FIFO_PACKETS
        if p.aqm is not None:  # netem then holds only packets on the emulated wire
            limit = DEFAULT_FIFO_PACKETS + _packets(p)
        nm.append(f"limit {limit}")
        lines.append(" ".join(nm))
        if p.aqm is not None:
            lines.append(aqm_line(intf, "parent 10:1 handle 20:", p))
    elif p.aqm is not None:
        lines.append(aqm_line(intf, parent, p))
    elif q is not None and q.bytes is not None:
        lines.append(f"qdisc add dev {intf} {parent} bfifo limit {q.bytes}")
    else:
        limit = q.packets if q and q.packets else DEFAULT_FIFO_PACKETS
        lines.append(f"qdisc add dev {intf} {parent} pfifo limit {limit}")
    return lines
