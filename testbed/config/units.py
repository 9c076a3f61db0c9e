"""Quantities written the way researchers write them, parsed to one unit each.

- rate: Mb/s (float). 300, "300Mbit", "1Gbit", "1.5G", "500k" (kbit/s), "2.5Gbps".
- size: bytes (int). 1500, "64KB", "64KiB", "1M", "1.5MB" (K/M/G are powers of 1024 when
  followed by "i", else of 1000).
- duration: seconds (float). 2, "500ms", "50us", "1.5s", "2m".
"""
from __future__ import annotations

import math
import re

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
