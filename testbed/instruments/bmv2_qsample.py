"""Queue ground truth of a BMv2 switch: its egress queues live inside simple_switch, not in
a qdisc, so qsample cannot see them. This polls the P4 program's own registers
(p4/tcp_int.p4: qdepthPkts — the queue's depth when its last packet left —, sentPkts,
sentBytes per egress port, and toPortPkts counted at ingress) over BMv2's Thrift API.

Runs inside the switch's namespace under Debian's python3 (BMv2's Thrift client needs
python3-thrift and the bm_runtime package BMv2 installs), so it imports nothing of the
testbed. Writes the same raw lines as qsample, one per port and poll:
    monotonic_ns,iface,backlog_bytes,qlen_pkts,drops,sent_bytes
BMv2 counts its queues in packets: backlog_bytes = qlen_pkts × --pkt-bytes (the size the
backend turned byte limits into). drops = packets sent towards the port − sent − queued.

    python3 bmv2_qsample.py --thrift-port 9090 --bm-path DIR -p s1-eth1:1,s1-eth2:2 \
        --interval-us 500 -o out.raw
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

REGISTERS = ("MyEgress.qdepthPkts", "MyEgress.sentPkts", "MyEgress.sentBytes",
             "MyIngress.toPortPkts")


def connect(port: int, bm_path: str):
    sys.path.append(bm_path)
    from bm_runtime.standard import Standard
    from thrift.protocol import TBinaryProtocol, TMultiplexedProtocol
    from thrift.transport import TSocket, TTransport

    transport = TTransport.TBufferedTransport(TSocket.TSocket("127.0.0.1", port))
    proto = TMultiplexedProtocol.TMultiplexedProtocol(
        TBinaryProtocol.TBinaryProtocol(transport), "standard")
    transport.open()
    return Standard.Client(proto)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thrift-port", type=int, required=True)
    ap.add_argument("--bm-path", required=True, help="directory holding bm_runtime")
    ap.add_argument("-p", "--ports", required=True, help="iface:bmv2_port,...")
    ap.add_argument("--interval-us", type=int, default=500)
    ap.add_argument("--pkt-bytes", type=int, default=1514)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    ports = [(i, int(n)) for i, n in (x.rsplit(":", 1) for x in a.ports.split(","))]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    client = connect(a.thrift_port, a.bm_path)
    period = a.interval_us / 1e6
    with open(a.out, "w", buffering=1 << 16) as out:
        while not stop:
            t0 = time.monotonic_ns()
            q, pkts, nbytes, to_port = (client.bm_register_read_all(0, r) for r in REGISTERS)
            t = (t0 + time.monotonic_ns()) // 2
            for iface, n in ports:
                drops = max(0, to_port[n] - pkts[n] - q[n])
                out.write(f"{t},{iface},{q[n] * a.pkt_bytes},{q[n]},{drops},{nbytes[n]}\n")
            left = period - (time.monotonic_ns() - t0) / 1e9
            if left > 0:
                time.sleep(left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
