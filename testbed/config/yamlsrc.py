"""YAML read with the line of every value, so errors can name `file:line`.

Classes:
- Source: the plain data of a YAML file plus a map from key paths to line numbers.
Functions:
- load_source(path): parse a file (syntax errors become ConfigError with the line).
- apply_sets(source, ["a.b=1", …]): `--set` overrides, typed by YAML's rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

@dataclass
class Source:
    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, loc: tuple) -> int | None:
        """The line of the deepest known prefix of `loc`."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())


def _build(node: yaml.Node, path: tuple, lines: dict, file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = yaml.safe_load(yaml.serialize(k)) if not isinstance(k, yaml.ScalarNode) \
                else _scalar(k)
            if not isinstance(key, (str, int, float, bool)):
                raise ConfigError("keys must be plain scalars", file, k.start_mark.line + 1)
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", file, k.start_mark.line + 1)
            lines[path + (key,)] = k.start_mark.line + 1
            out[key] = _build(v, path + (key,), lines, file)
            lines[path + (key,)] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), lines, file) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    return yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" \
        else node.value


def parse_text(text: str, file: str) -> Source:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(f"YAML syntax: {e.problem or e}", file,
                          mark.line + 1 if mark else None) from None
    lines: dict = {}
    data = _build(node, (), lines, file) if node is not None else {}
    return Source(file, data, lines)


def load_source(path: str | Path) -> Source:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", str(path)) from None
    return parse_text(text, str(path))


def apply_sets(src: Source, sets: list[str]) -> None:
    """Apply `key.path=value` overrides in place; their 'line' is the --set itself."""
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"--set {s!r}: expected key.path=value", src.file)
        key, _, raw = s.partition("=")
        parts: list[Any] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if not isinstance(src.data, dict):
            src.data = {}
        cur = src.data
        for i, p in enumerate(parts[:-1]):
            nxt = cur[p] if (isinstance(cur, list) and isinstance(p, int) and p < len(cur)) \
                else (cur.get(p) if isinstance(cur, dict) else None)
            if not isinstance(nxt, (dict, list)):
                if isinstance(cur, list):
                    raise ConfigError(f"--set {key}: index {p} out of range", src.file)
                nxt = {}
                cur[p] = nxt
            cur = nxt
        last = parts[-1]
        if isinstance(cur, list):
            if not isinstance(last, int) or last >= len(cur):
                raise ConfigError(f"--set {key}: index {last} out of range", src.file)
        cur[last] = value
        src.lines[tuple(parts)] = 0  # 0 = "from the command line"
