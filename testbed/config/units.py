"""Quantities written the way researchers write them, parsed to one unit each.

- rate: Mb/s (float). 300, "300Mbit", "1Gbit", "1.5G", "500k" (kbit/s), "2.5Gbps".
- size: bytes (int). 1500, "64KB", "64KiB", "1M", "1.5MB" (K/M/G are powers of 1024 when
  followed by "i", else of 1000).
- duration: seconds (float). 2, "500ms", "50us", "1.5s", "2m".
- IP protocol: its number. "tcp", "icmp6" (or "icmpv6", "ipv6-icmp"), "17".
- flow filter: "proto=tcp,port=5201,net=10.0.0.0/8" → (prefixes, ports, protocols).
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Iterable

# A full Ethernet frame (1500-byte MTU + 14-byte header): what a queue limit or a queue
# counted in packets means in bytes, and the size of a full TCP segment on the wire.
FRAME_BYTES = 1514

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _split(value: object, what: str) -> tuple[float, str]:
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            num = float(value)
        except OverflowError:
            raise ValueError(f"{what} out of range") from None
        if not math.isfinite(num):
            raise ValueError(f"expected a finite {what}, got {value!r}")
        return num, ""
    if not isinstance(value, str):
        raise ValueError(f"expected a {what}, got {type(value).__name__}")
    m = re.fullmatch(_NUM + r"\s*([A-Za-z/]*)", value.strip())
    if not m:
        raise ValueError(f"expected a {what} like {_EXAMPLES[what]}, got {value!r}")
    num = float(m.group(1))
    if not math.isfinite(num):
        raise ValueError(f"{what} out of range: {value!r}")
    return num, m.group(2)


_EXAMPLES = {"rate": "'300Mbit' or 300 (Mb/s)", "size": "'64KB' or 1500 (bytes)",
             "duration": "'500ms' or 2 (seconds)"}


def rate_mbps(value: object) -> float:
    num, unit = _split(value, "rate")
    u = unit.lower().replace("bps", "").replace("bit", "").replace("b/s", "").rstrip("/s")
    scale = {"": 1.0, "m": 1.0, "g": 1000.0, "k": 0.001, "t": 1e6}.get(u)
    if scale is None:
        raise ValueError(f"unknown rate unit {unit!r}: use Kbit, Mbit or Gbit")
    if num <= 0:
        raise ValueError("a rate must be > 0")
    return _finite(num * scale, "rate")


def size_bytes(value: object) -> int:
    num, unit = _split(value, "size")
    u = unit.upper()
    binary = "I" in u
    u = u.replace("I", "").rstrip("B")
    base = 1024 if binary else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3}.get(u)
    if power is None or (unit and not unit.upper().rstrip("B").replace("I", "") in "KMG"):
        raise ValueError(f"unknown size unit {unit!r}: use B, KB, MB (or KiB, MiB)")
    if num <= 0:
        raise ValueError("a size must be > 0")
    return int(round(_finite(num * base ** power, "size")))


def duration_s(value: object) -> float:
    num, unit = _split(value, "duration")
    scale = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9,
             "m": 60.0, "min": 60.0}.get(unit.lower())
    if scale is None:
        raise ValueError(f"unknown time unit {unit!r}: use s, ms or us")
    if num < 0:
        raise ValueError("a duration must be >= 0")
    return _finite(num * scale, "duration")


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise ValueError(f"{what} out of range")
    return x


# -- IP protocol numbers (IANA), for filters and tables of every tool ----------------------
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmp6": 58, "sctp": 132}
_ALIASES = {"icmpv6": 58, "ipv6-icmp": 58}
_NAMES = {v: k for k, v in PROTOCOLS.items()}


def proto_number(name: str) -> int | None:
    """The protocol number of a name (or of a decimal 0-255), None if unknown."""
    name = name.strip().lower()
    if name.isdigit():
        return int(name) if int(name) <= 255 else None
    return PROTOCOLS.get(name, _ALIASES.get(name))


def proto_name(number: int) -> str | int:
    """The short name of a protocol number (the number itself when it has none here)."""
    return _NAMES.get(number, number)


FLOW_FILTER_HELP = ("comma-separated net=PREFIX, port=N, proto=tcp|udp|icmp|icmp6|N "
                    "(e.g. 'proto=tcp,port=5201,net=10.0.0.0/8')")


def flow_filter(texts: Iterable[str] | str | None) -> tuple[tuple, tuple, tuple]:
    """(prefixes, ports, protocols) of flow filter texts, each without repeats; a
    ValueError names the bad token and the fix. Parts are ANDed, entries within a part
    ORed (the capture's limits on their counts: noobflow.h, checked by noobflow)."""
    if texts is None:
        return (), (), ()
    if isinstance(texts, str):
        texts = [texts]
    prefixes, ports, protos = [], [], []
    for text in texts:
        for tok in re.split(r"[,\s]+", text.strip()):
            if not tok:
                continue
            kind, sep, val = tok.partition("=")
            kind = kind.strip().lower()
            if not sep or not val:
                raise ValueError(f"{tok!r}: expected KIND=VALUE; {FLOW_FILTER_HELP}")
            if kind in ("net", "prefix", "host"):
                try:
                    prefixes.append(ipaddress.ip_network(val, strict=False))
                except ValueError:
                    raise ValueError(f"{tok!r}: not an address prefix "
                                     f"(e.g. net=10.0.0.0/24 or net=fd00::/64)") from None
            elif kind == "port":
                if not val.isdigit() or not 0 <= int(val) <= 65535:
                    raise ValueError(f"{tok!r}: port must be 0-65535 (e.g. port=5201)")
                ports.append(int(val))
            elif kind == "proto":
                p = proto_number(val)
                if p is None:
                    raise ValueError(f"{tok!r}: unknown protocol (use tcp, udp, icmp, "
                                     f"icmp6 or a number 0-255)")
                protos.append(p)
            else:
                raise ValueError(f"{tok!r}: unknown filter kind {kind!r}; {FLOW_FILTER_HELP}")
    return (tuple(dict.fromkeys(prefixes)), tuple(dict.fromkeys(ports)),
            tuple(dict.fromkeys(protos)))
