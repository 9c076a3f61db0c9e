"""burst: short TCP transfers with exact completion times, for incast.

iperf3 cannot measure a 64 KB transfer: its server ends the test before the data has
arrived and reports 0 bytes. Here the sink records, per connection, the bytes and the
CLOCK_MONOTONIC time of the first and last byte (one clock for every namespace of the
machine), and the sender the time it was released: FCT = last byte − release.

  python -m testbed.workload.burst sink --port 6000 --expect 10 -o sink.json
  python -m testbed.workload.burst send --dst 10.0.0.1 --port 6000 --bytes 65536 \
      --cc cubic [--warm] -o send.json   # reads its start time (CLOCK_MONOTONIC ns) on
                                # stdin, waits for it, then connects and sends; --warm:
                                # connects first (prints "connected"), then waits
"""
from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import time


def sink(a) -> int:
    srv = socket.socket(socket.AF_INET6 if ":" in a.bind else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if srv.family == socket.AF_INET6:   # "::" takes IPv4 senders too (v4-mapped)
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind((a.bind, a.port))
    srv.listen(256)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    conns: dict[socket.socket, dict] = {}
    done: list[dict] = []
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, _stop)
    deadline = time.monotonic() + a.timeout
    buf = bytearray(1 << 16)
    while not stop and len(done) < a.expect and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            if key.fileobj is srv:
                c, peer = srv.accept()
                c.setblocking(False)
                conns[c] = {"peer": f"{peer[0]}:{peer[1]}", "accepted_ns": time.monotonic_ns(),
                            "bytes": 0, "first_ns": None, "last_ns": None}
                sel.register(c, selectors.EVENT_READ)
                continue
            c = key.fileobj
            st = conns[c]
            try:
                n = c.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0
            now = time.monotonic_ns()
            if n:
                st["bytes"] += n
                st["first_ns"] = st["first_ns"] or now
                st["last_ns"] = now
            else:
                st["closed_ns"] = now
                sel.unregister(c)
                c.close()
                done.append(conns.pop(c))
    done += [dict(st, closed_ns=None) for st in conns.values()]
    with open(a.out, "w") as f:
        json.dump({"port": a.port, "connections": done}, f)
    return 0


def _connect(a, rep: dict) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in a.dst else socket.AF_INET)
    try:
        if a.cc:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
        s.connect((a.dst, a.port))
    except OSError:
        s.close()
        raise
    rep["sport"] = s.getsockname()[1]
    # what the kernel runs for this socket (TCP_CA_NAME_MAX = 16)
    rep["kernel_cc"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION,
                                    16).rstrip(b"\0").decode()
    rep["connected_ns"] = time.monotonic_ns()
    return s


def send(a) -> int:
    from .at import realtime, sleep_until

    rep = {"dst": a.dst, "port": a.port, "bytes": a.bytes, "cc": a.cc, "warm": a.warm}
    s = None
    if a.warm:
        # Connected before the clock starts: the release sends at once, and a SYN lost
        # to a full queue cannot delay the burst. "connected" tells the runner.
        try:
            s = _connect(a, rep)
        except OSError as e:
            rep["warm_error"] = str(e)   # connects again when released
        print("connected" if s else "not connected", flush=True)
    line = sys.stdin.readline().strip()  # the start time (ns), sent ahead by the runner
    if not line:
        if s:
            s.close()
        return 0
    data = b"\0" * a.bytes
    try:
        with realtime() as rt:
            # woken on time, and the first write (what fits in the socket buffer: the
            # initial window leaves at once) made before yielding the CPU
            rep["start_ns"] = sleep_until(int(line))
            rep["realtime"] = rt
            if s is None:
                s = _connect(a, rep)
            try:
                n = s.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                n = 0
        s.sendall(data[n:])
        rep["written_ns"] = time.monotonic_ns()
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the sink closes after reading everything
        rep["closed_ns"] = time.monotonic_ns()
        s.close()
    except OSError as e:
        rep["error"] = str(e)
    with open(a.out, "w") as f:
        json.dump(rep, f)
    return 1 if "error" in rep else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sink")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="::")
    p.add_argument("--expect", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(fn=sink)
    p = sub.add_parser("send")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--cc", default="")
    p.add_argument("--warm", action="store_true",
                   help="connect at once, before the start time; print 'connected'")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(fn=send)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
