"""The C ABI of our kernel programs, read from the headers the programs include.

The kernel side and this side must agree on constants and struct layouts; a copy kept by
hand drifts silently, so every Python module takes them from here, and this module takes
them from the header text (`bpf/*.h`, and `p4/tcp_int.p4` for the P4 program's own
fixed points).

Functions:
- header(name): the path of a shared header (`tcp_int_defs.h`, `common/parse.h`, …).
- defines(name, prefix): every `#define PREFIX… <integer literal>` of a header.
- layout(struct, name): a struct of a header (fixed-width members, no implicit padding)
  as a Layout that encodes and decodes raw bytes (map keys and values, ring records).
- proto_number(name) / proto_name(number): IP protocol numbers (the one table is in
  config.units, where filters are parsed; re-exported here for the tools).
"""
from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..config.units import PROTOCOLS, proto_name, proto_number  # noqa: F401 (re-exported)
from ..errors import RunError

REPO = Path(__file__).resolve().parents[2]
BPF_DIR = REPO / "bpf"
P4_DIR = REPO / "p4"

# An integer literal with C's optional suffixes, alone on its line (a trailing comment
# allowed): an expression such as `(1 << 10)` is not a literal and is not read.
_DEFINE = r"^\s*#define\s+({prefix}\w*)\s+(0x[0-9a-fA-F]+|\d+)[uUlL]*\s*(?:/[*/].*)?$"
_SIZES = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q",
          "__s8": "b", "__s16": "h", "__s32": "i", "__s64": "q"}


def header(name: str | Path) -> Path:
    """A header by its name under bpf/ (or any path as given)."""
    p = Path(name)
    return p if p.is_absolute() else BPF_DIR / p


@functools.lru_cache(maxsize=None)
def defines(name: str | Path, prefix: str = "") -> dict[str, int]:
    """Every `#define <prefix>NAME <integer>` of a header, by its full name."""
    text = header(name).read_text()
    return {n: int(v, 0) for n, v in re.findall(_DEFINE.format(prefix=re.escape(prefix)),
                                                text, re.M)}


@dataclass(frozen=True)
class Layout:
    """A struct of a shared header: fixed-width members at natural alignment, no padding."""

    name: str
    fields: tuple[tuple[str, str, int], ...]  # (member, struct format char, array length or 0)

    @property
    def fmt(self) -> str:
        # arrays (addresses, names) stay bytes: their meaning is the caller's
        return "<" + "".join(f"{n * struct.calcsize(c)}s" if n else c for _, c, n in self.fields)

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f for f, _, _ in self.fields)

    def decode(self, raw: bytes) -> dict:
        """The members of the first `size` bytes of raw (a longer buffer is fine)."""
        return dict(zip(self.names, struct.unpack_from(self.fmt, raw)))

    def encode(self, **values) -> bytes:
        return struct.pack(self.fmt, *(values.get(f, b"" if n else 0)
                                       for f, _, n in self.fields))


@functools.lru_cache(maxsize=None)
def layout(struct_name: str, name: str | Path) -> Layout:
    """`struct <struct_name> { … };` of a header, member by member."""
    path = header(name)
    m = re.search(rf"struct\s+{struct_name}\s*\{{(.*?)\n\}};", path.read_text(), re.S)
    if not m:
        raise RunError(f"{path.name}: no struct {struct_name}")
    fields = tuple((member, _SIZES[typ], int(count or 0)) for typ, member, count in
                   re.findall(r"^\s*(__[us]\d+)\s+(\w+)(?:\[(\d+)\])?;", m.group(1), re.M))
    lay = Layout(struct_name, fields)
    # the C side has no implicit padding: '<' (packed) size == natural-alignment size
    if struct.calcsize(lay.fmt) != struct.calcsize("@" + "".join(
            f"{n}{c}" if n else c for _, c, n in fields)):
        raise RunError(f"struct {struct_name} in {path.name} has implicit padding")
    return lay

