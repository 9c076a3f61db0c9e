"""Egress shaping of one interface: HTB at the link's rate over a FIFO of the set limit.

A FIFO drained at a known rate has a queueing delay of backlog / rate, which is what
TCP-INT's hop latency and noobprobe's per-hop RTT are checked against. Where the kernel
has netem, delay/jitter/loss use netem as the HTB leaf (its own limit is then the FIFO).

Functions:
- tc_lines(intf, params): the `tc -batch` lines for one interface (empty: not shaped).
"""
from __future__ import annotations

from ..config.models import LinkParams

DEFAULT_FIFO_PACKETS = 1000  # Linux's default txqueuelen, when a rate is set but no queue


def tc_lines(intf: str, p: LinkParams) -> list[str]:
    if p.bw is None and not p.needs_netem():
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
        nm.append(f"limit {limit}")
        lines.append(" ".join(nm))
    elif q is not None and q.bytes is not None:
        lines.append(f"qdisc add dev {intf} {parent} bfifo limit {q.bytes}")
    else:
        limit = q.packets if q and q.packets else DEFAULT_FIFO_PACKETS
        lines.append(f"qdisc add dev {intf} {parent} pfifo limit {limit}")
    return lines
