"""YAML read with the line of every value, so errors can name `file:line`.

The reader trusts nothing in the file: whatever its bytes, the result is a Source or one
ConfigError (`file:line: what is wrong and the fix`). What a document may cost is bounded
while it is read, before objects are built from it: its size, its nesting, the number of
values (aliases counted as expanded, so an alias bomb stops early), one document per file,
plain values only (no tags that construct objects). The tree is built from the parser's
event stream with an explicit stack: no recursion, however deep the input.

Classes:
- Source: the plain data of a YAML file plus a map from key paths to line numbers.
Functions:
- load_source(path): read and parse a file.
- parse_text(text, file): parse text already read.
- apply_sets(source, ["a.b=1", …]): `--set` overrides, typed by YAML's rules.
"""
from __future__ import annotations

import codecs
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 1 << 20      # an experiment or topology file is a few KB
MAX_DEPTH = 64           # nesting of mappings and sequences
MAX_VALUES = 100_000     # scalars and collections, aliases counted as expanded

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null")}
# YAML's printable set (yaml.reader.Reader.NON_PRINTABLE), checked here to name the line
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD"
                            "\U00010000-\U0010FFFF]")
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@dataclass
class Source:
    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    # key paths whose value came from elsewhere (their line here is 0) → where:
    # (what, file, line), e.g. ("--set duration=5", None, None) or ("sweep cc", exp, 12)
    sets: dict[tuple, tuple[str, str | None, int | None]] = field(default_factory=dict)

    def line_of(self, loc: tuple) -> int | None:
        """The line of the deepest known prefix of `loc` (0: the value came from
        elsewhere, see origin_of)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def origin_of(self, loc: tuple) -> tuple[str, str | None, int | None] | None:
        """Where the value at `loc` (or one of its parents) came from, if not this file."""
        loc = tuple(loc)
        while loc:
            if loc in self.sets:
                return self.sets[loc]
            loc = loc[:-1]
        return None


# --- bytes → text ----------------------------------------------------------------------

def _decode(raw: bytes, file: str) -> str:
    """UTF-8 (a BOM allowed), or UTF-16/32 announced by their BOM, as YAML allows."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            break
    else:
        enc = "utf-8"
    try:
        text = raw.decode(enc)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        nul = raw.find(b"\0", 0, e.start + 1)
        if nul >= 0 and enc == "utf-8":
            raise ConfigError("binary data, not a YAML text file: give an experiment or "
                              "topology file", file, raw[:nul].count(b"\n") + 1) from None
        raise ConfigError(f"not {enc.upper().removesuffix('-SIG')} text (byte "
                          f"0x{raw[e.start]:02x}): save the file as UTF-8", file, line) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        what = "binary data, not a YAML text file" if bad.group() == "\0" else \
            f"control character U+{ord(bad.group()):04X}"
        raise ConfigError(f"{what}: YAML allows printable characters only; remove it "
                          f"(or save the file as plain UTF-8 text)", file, line)
    return text.lstrip("\ufeff")


# --- events → data ---------------------------------------------------------------------

class _Coll:
    """A mapping or sequence being built."""

    __slots__ = ("value", "path", "anchor", "key", "key_line", "merges", "line", "height",
                 "size")

    def __init__(self, value: Any, path: tuple, anchor: str | None, line: int):
        self.value, self.path, self.anchor, self.line = value, path, anchor, line
        self.key: Any = _NOKEY
        self.key_line = line
        self.merges: list[tuple[Any, int]] = []
        self.height = 1
        self.size = 1


_NOKEY = object()
_MERGE = object()


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, size, height
        self.open_anchors: set[str] = set()
        self.values = 0
        self.stack: list[_Coll] = []
        self.root: Any = None
        self.docs = 0

    def fail(self, msg: str, mark: Any) -> ConfigError:
        return ConfigError(msg, self.file, mark.line + 1 if mark is not None else None)

    def count(self, n: int, mark: Any) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise self.fail(f"more than {MAX_VALUES} values (aliases counted as expanded: "
                            f"an alias bomb?): write the configuration out plainly", mark)

    # where the next value goes, and its path
    def _slot(self) -> tuple:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return top.path + (len(top.value),)
        return top.path + (top.key,)

    def _place(self, value: Any, line: int, size: int, height: int, mark: Any) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.value, list):
            self.lines.setdefault(top.path + (len(top.value),), line)
            top.value.append(value)
            return
        if top.key is _NOKEY:          # this value is a key
            if isinstance(value, (dict, list)):
                raise self.fail("a key must be a plain value (a name), not a mapping or "
                                "a list", mark)
            if value is _MERGE:
                top.key, top.key_line = _MERGE, line
                return
            if not isinstance(value, (str, int, float, bool)):
                raise self.fail(f"key {value!r} is not a name: write the key as text", mark)
            if value in top.value:
                raise self.fail(f"duplicate key {value!r}: keep one", mark)
            top.key, top.key_line = value, line
            self.lines[top.path + (value,)] = line
            return
        if top.key is _MERGE:           # `<<: *base` or `<<: [*a, *b]`
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                raise self.fail("`<<` merges mappings only: give an alias of a mapping "
                                "(<<: *name) or a list of them", mark)
            top.merges += [(m, top.key_line) for m in merged]
        else:
            top.value[top.key] = value
        top.key = _NOKEY

    def event(self, ev: yaml.Event) -> None:
        mark = ev.start_mark
        line = mark.line + 1 if mark is not None else 0
        if isinstance(ev, yaml.DocumentStartEvent):
            self.docs += 1
            if self.docs > 1:
                raise self.fail("a second YAML document (`---`): one file holds one "
                                "experiment or topology; split it into files", mark)
            return
        if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent,
                           yaml.DocumentEndEvent)):
            return
        if isinstance(ev, yaml.AliasEvent):
            if ev.anchor in self.open_anchors:
                raise self.fail(f"alias *{ev.anchor} refers to a value that contains it "
                                f"(a recursive alias): write the value out", mark)
            if ev.anchor not in self.anchors:
                raise self.fail(f"unknown alias *{ev.anchor}: define &{ev.anchor} before "
                                f"using it", mark)
            value, size, height = self.anchors[ev.anchor]
            self.count(size, mark)
            if len(self.stack) + height > MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH} levels (through alias "
                                f"*{ev.anchor}): flatten the configuration", mark)
            self._place(copy.deepcopy(value) if isinstance(value, (dict, list)) else value,
                        line, size, height, mark)
            return
        if isinstance(ev, yaml.ScalarEvent):
            self.count(1, mark)
            value = self._scalar(ev)
            if ev.anchor:
                self.anchors[ev.anchor] = (value, 1, 0)
            self._place(value, line, 1, 0, mark)
            return
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self.count(1, mark)
            is_map = isinstance(ev, yaml.MappingStartEvent)
            if ev.tag not in (None, "!", _TAG + ("map" if is_map else "seq")):
                raise self.fail(f"tag {ev.tag} is not allowed: files hold plain mappings, "
                                f"lists and values; remove the tag", mark)
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH} levels: flatten the "
                                f"configuration", mark)
            if self.stack and self.stack[-1].key is _NOKEY and \
                    not isinstance(self.stack[-1].value, list):
                raise self.fail("a key must be a plain value (a name), not a mapping or "
                                "a list", mark)
            path = self._slot()
            if self.stack and self.stack[-1].key is _MERGE:
                path = self.stack[-1].path
            coll = _Coll({} if is_map else [], path, ev.anchor, line)
            if ev.anchor:
                self.open_anchors.add(ev.anchor)
            self.stack.append(coll)
            return
        if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            coll = self.stack.pop()
            if coll.merges:
                for m, mline in coll.merges:   # explicit keys win, then earlier merges
                    for k, v in m.items():
                        if k not in coll.value:
                            coll.value[k] = copy.deepcopy(v)
                            self.lines[coll.path + (k,)] = mline
            if coll.anchor:
                self.open_anchors.discard(coll.anchor)
                self.anchors[coll.anchor] = (coll.value, coll.size, coll.height)
            self._place(coll.value, coll.line, coll.size, coll.height, mark)
            if not self.stack:
                self.lines.setdefault((), coll.line)
            return
        raise self.fail(f"unexpected YAML element {type(ev).__name__}", mark)

    def _scalar(self, ev: yaml.ScalarEvent) -> Any:
        tag = ev.tag
        if tag in (None, "!"):
            if tag == "!" or ev.style in ("'", '"', "|", ">"):
                return ev.value
            tag = _RESOLVER.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag == _TAG + "merge":
            if self.stack and self.stack[-1].key is _NOKEY and \
                    not isinstance(self.stack[-1].value, list):
                return _MERGE
            return ev.value
        if tag == _TAG + "timestamp" and ev.tag is None:
            return ev.value           # no key of ours is a date: keep the text
        if tag == _TAG + "str":
            return ev.value
        if tag not in _SCALAR_TAGS:
            raise self.fail(f"tag {tag} is not allowed: files hold plain values; remove "
                            f"the tag", ev.start_mark)
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
        try:
            return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
        except (ValueError, TypeError, OverflowError, yaml.YAMLError) as e:
            what = str(e).splitlines()[0][:120] if str(e) else "bad value"
            raise self.fail(f"{ev.value[:40]!r} is not a valid {tag.removeprefix(_TAG)} "
                            f"({what}): write a plain number or quote it", ev.start_mark) \
                from None


def parse_text(text: str, file: str, null_ok: bool = False) -> Source:
    """A document's data and lines. An empty document reads as an empty mapping, unless
    null_ok (a single `--set`/sweep value, where `null` clears a key)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES >> 10} KiB: an experiment or topology "
                          f"file is a few KB; is this the right file?", file)
    b = _Builder(file)
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            b.event(ev)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = (e.problem or str(e)).strip()
        ctx = f" ({e.context})" if e.context and e.context != problem else ""
        raise ConfigError(f"YAML syntax: {problem}{ctx}", file,
                          mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        pos = getattr(e, "position", None)
        raise ConfigError(f"YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                          file, text.count("\n", 0, pos) + 1 if isinstance(pos, int)
                          else None) from None
    data = b.root
    if data is None and not null_ok:
        data = {}
    b.lines.setdefault((), 1)
    return Source(file, data, b.lines)


def load_source(path: str | Path) -> Source:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except IsADirectoryError:
        raise ConfigError("a directory, not a file: give the YAML file itself",
                          str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", str(path)) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES >> 10} KiB: an experiment or topology "
                          f"file is a few KB; is this the right file?", str(path))
    return parse_text(_decode(raw, str(path)), str(path))


# --- --set ---------------------------------------------------------------------------

def parse_value(raw: str, file: str, what: str) -> Any:
    """A `--set` value by YAML's rules, through the same bounded reader as files."""
    if not raw.strip():
        return ""
    try:
        return parse_text(raw, file, null_ok=True).data
    except ConfigError as e:
        raise ConfigError(f"{what}: {e.message}", file) from None


def set_path(key: str) -> tuple:
    """`workload.flows.0.cc` → ('workload', 'flows', 0, 'cc')."""
    return tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))


def apply_sets(src: Source, sets: list[str], label: str = "--set",
               origin: tuple[str | None, int | None] = (None, None)) -> None:
    """Apply `key.path=value` overrides in place: `--set` (the default), a sweep value or a
    topology file's `overrides:` (label), whose errors name `origin` (file, line) — for
    --set, the file without a line."""
    ofile, oline = origin
    for s in sets:
        key, eq, raw = s.partition("=")
        key = key.strip()
        what = f"{label} {s}"

        def fail(msg: str) -> ConfigError:
            return ConfigError(f"{what}: {msg}", ofile or src.file, oline)
        if not eq or not key:
            raise fail("expected key.path=value (e.g. --set duration=5)")
        parts = set_path(key)
        if any(p == "" for p in parts):
            raise fail(f"empty part in the key path {key!r}")
        try:
            value = parse_value(raw, src.file, what)
        except ConfigError as e:
            raise ConfigError(e.message, ofile or src.file, oline) from None
        if not isinstance(src.data, dict):
            src.data = {}
        cur = src.data
        for i, p in enumerate(parts[:-1]):
            here = ".".join(map(str, parts[:i + 1]))
            if isinstance(cur, list):
                if not isinstance(p, int) or p >= len(cur):
                    raise fail(f"{here}: no item {p} (the list has {len(cur)}; indices "
                               f"start at 0)")
                nxt = cur[p]
            else:
                nxt = cur.get(p)
                if nxt is None:
                    if isinstance(parts[i + 1], int):
                        raise fail(f"{here} has no item {parts[i + 1]} (it is not in the file)")
                    nxt = cur[p] = {}
                    src.lines[parts[:i + 1]] = 0
                    src.sets[parts[:i + 1]] = (what, ofile, oline)
            if not isinstance(nxt, (dict, list)):
                raise fail(f"{here} is a value ({nxt!r}), not a mapping: set {here}=… itself")
            cur = nxt
        last = parts[-1]
        if isinstance(cur, list):
            if not isinstance(last, int) or last >= len(cur):
                raise fail(f"no item {last} (the list has {len(cur)}; indices start at 0)")
        cur[last] = value
        src.lines[parts] = 0
        src.sets[parts] = (what, ofile, oline)
