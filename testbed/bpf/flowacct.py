"""Wire flow accounting: bpf/flowacct.bpf.c on the hosts' cgroups, read back per connection.

Every TCP connection a host's processes open or accept is seen by the kernel at the
socket layer (cgroup_skb ingress/egress): SYNs and SYN-ACKs sent and received, and, at
the receiver, the first and last segment with new payload and the unique bytes by
sequence number. Flow statistics built on these are the receiver's, not the client
process's (which cannot know that its SYN was lost, or when its data arrived).

Classes:
- Conn: one record (a connection in one direction, as a host saw it), times in ns.
- FlowAcct: the loaded object; attach(cgroup) per host; conns(); close().
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

from . import abi, build
from .libbpf import BpfObject, Link, num_possible_cpus

HEADER = "flowacct.h"


def defines() -> dict[str, int]:
    return abi.defines(HEADER, "FA_")


def layout(name: str) -> abi.Layout:
    return abi.layout(name, HEADER)


@dataclass
class Conn:
    family: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    dir: int                # FA_DIR_IN / FA_DIR_OUT
    syns: int
    syn_first_ns: int
    syn_last_ns: int
    data_first_ns: int
    start_ns: int
    data_last_ns: int
    bytes: int
    fin_ns: int
    segs: int
    dup_segs: int
    rsts: int

    @property
    def key(self) -> tuple:
        return (self.saddr, self.daddr, self.sport, self.dport)


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw))


class FlowAcct:
    """Load once per point; attach to each host's cgroup; read every record at the end."""

    def __init__(self, obj_path: Path | None = None):
        self.obj = BpfObject(obj_path or build.compile_bpf("flowacct")).load()
        self.links: list[Link] = []

    def attach(self, cgroup: Path) -> None:
        self.links.append(self.obj.attach_cgroup("fa_ingress", cgroup))
        self.links.append(self.obj.attach_cgroup("fa_egress", cgroup))

    def conns(self) -> list[Conn]:
        key_l, rec_l = layout("fa_key"), layout("fa_rec")
        out = []
        for k, v in self.obj.map("fa_conns").items():
            key, rec = key_l.decode(k), rec_l.decode(v)
            fam = key["family"]
            out.append(Conn(fam, _addr(key["saddr"], fam), _addr(key["daddr"], fam),
                            key["sport"], key["dport"], key["dir"],
                            **{f: rec[f] for f in ("syns", "syn_first_ns", "syn_last_ns",
                                                   "data_first_ns", "start_ns", "data_last_ns",
                                                   "bytes", "fin_ns", "segs", "dup_segs",
                                                   "rsts")}))
        return out

    def full(self) -> int:
        """Records refused because the table was full (all CPUs)."""
        m = self.obj.map("fa_full")
        m.percpu = True        # one value per possible CPU
        raw = m.lookup(bytes(4))
        n = num_possible_cpus()
        return sum(struct.unpack(f"<{n}Q", raw[:8 * n])) if raw else 0

    def close(self) -> None:
        self.links.clear()
        if self.obj is not None:
            self.obj.close()   # detaches every link made through it
            self.obj = None
