"""A topology drawn as SVG text (for the HTML report): nodes, links with their rate and
queue, and the ports whose queue was sampled.

Layout: switches and routers in columns by breadth-first distance from one end of the
fabric (of its two most distant switches, the one nearer the first switch), hosts one column outside the switch they
hang on — the left of the fabric's first half, the right of its second half. No layout
engine: the built-ins (dumbbell, incast, chain, leaf-spine) read left to right.

Functions: topology_svg(spec, sampled) → str.
"""
from __future__ import annotations

from collections import deque
from html import escape

from ..topology.graph import Graph, natural_key

COL, ROW, PAD, R = 190, 56, 40, 16
COLOURS = {"host": "#4c78a8", "switch": "#54a24b", "router": "#e45756"}


def _bfs(adj: dict[str, list[str]], start: str) -> dict[str, int]:
    dist = {start: 0}
    todo = deque([start])
    while todo:
        n = todo.popleft()
        for m in adj[n]:
            if m not in dist:
                dist[m] = dist[n] + 1
                todo.append(m)
    return dist


def _rate(bw: float | None) -> str:
    if not bw:
        return "unshaped"
    return f"{bw / 1000:g} Gb/s" if bw >= 1000 else f"{bw:g} Mb/s"


def _queue(q) -> str:
    if q is None:
        return ""
    if q.packets:
        return f"{q.packets} pkts"
    return f"{q.bytes / 1000:g} KB" if q.bytes < 1_000_000 else f"{q.bytes / 1e6:g} MB"


def _layout(g: Graph) -> dict[str, tuple[int, int]]:
    fabric = [n.name for n in g.switches]
    adj = {n: [] for n in g.nodes}
    for link in g.links:
        a, b = link.ends
        adj[a].append(b)
        adj[b].append(a)
    col: dict[str, int] = {}
    if fabric:
        fadj = {n: [m for m in adj[n] if m in fabric] for n in fabric}
        # one end of the fabric: the switch farthest from the first one (per component)
        for comp_start in fabric:
            if comp_start in col:
                continue
            def far(start: str) -> str:
                d = _bfs(fadj, start)
                return max(sorted(d, key=natural_key), key=lambda n: d[n])
            # the far end of the far end: the end nearest the first switch (s1, r1) goes left
            for n, d in _bfs(fadj, far(far(comp_start))).items():
                col[n] = d + 1
        width = max(col.values())
        for h in g.hosts:
            c = min((col[m] for m in adj[h.name] if m in col), default=1)
            if width == 1:   # one switch column: hosts split left and right
                i = [x.name for x in g.hosts].index(h.name)
                col[h.name] = 0 if i < (len(g.hosts) + 1) // 2 else 2
            else:
                col[h.name] = c - 1 if c <= (width + 1) / 2 else c + 1
    else:
        for i, h in enumerate(g.hosts):
            col[h.name] = i % 2
    cols: dict[int, list[str]] = {}
    for n in sorted(col, key=natural_key):
        cols.setdefault(col[n], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    height = max(len(v) for v in cols.values())
    for c in sorted(cols):
        names = cols[c]
        # centre short columns against the tallest
        off = (height - len(names)) * ROW / 2
        for r, n in enumerate(names):
            pos[n] = (PAD + (c - min(cols)) * COL, int(PAD + off + r * ROW))
    return pos


def topology_svg(spec, sampled: set[str] | None = None, title: str = "") -> str:
    """SVG of `spec` (a TopologySpec); `sampled`: "node:iface" ports the queue
    instrument read, marked where the port sends."""
    g = Graph(spec)
    sampled = sampled or set()
    pos = _layout(g)
    w = max(x for x, _ in pos.values()) + PAD + 60
    h = max(y for _, y in pos.values()) + PAD + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="{w}" '
           f'height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="topology '
           f'{escape(title or spec.name or "")}">',
           '<style>text{font:11px sans-serif}.lab{fill:#333}.port{fill:#d62728}'
           '.node text{fill:#fff;font-weight:bold}</style>']
    for link in g.links:
        (x1, y1), (x2, y2) = pos[link.a.node], pos[link.b.node]
        p = link.params
        label = " · ".join(x for x in (_rate(p.bw), _queue(p.queue) if p.bw else "",
                                       f"{p.delay * 1e3:g} ms" if p.delay else "") if x)
        out.append(f'<g class="link" data-ends="{link.a.node} {link.b.node}">'
                   f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#999" '
                   f'stroke-width="{3 if p.bw and p.bw < 1000 else 1.5}"/>'
                   f'<text class="lab" x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2 - 5:.0f}" '
                   f'text-anchor="middle">{escape(label)}</text></g>')
        for intf in (link.a, link.b):
            if f"{intf.node}:{intf.name}" in sampled:
                (ax, ay), (bx, by) = pos[intf.node], pos[intf.peer.node]
                px, py = ax + (bx - ax) * 0.3, ay + (by - ay) * 0.3
                out.append(f'<g class="sampled" data-port="{intf.node}:{intf.name}">'
                           f'<circle class="port" cx="{px:.0f}" cy="{py:.0f}" r="5">'
                           f'<title>{intf.node}:{intf.name} queue sampled</title></circle>'
                           f'</g>')
    for name, (x, y) in pos.items():
        kind = g.nodes[name].kind
        shape = (f'<circle cx="{x}" cy="{y}" r="{R}" fill="{COLOURS[kind]}"/>' if kind == "host"
                 else f'<rect x="{x - R - 4}" y="{y - R + 2}" width="{2 * R + 8}" '
                      f'height="{2 * R - 4}" rx="4" fill="{COLOURS[kind]}"/>')
        out.append(f'<g class="node" data-node="{name}" data-kind="{kind}">{shape}'
                   f'<text x="{x}" y="{y + 4}" text-anchor="middle">{escape(name)}</text>'
                   f'<title>{kind} {name}</title></g>')
    out.append(f'<g transform="translate({PAD - 20},{h - 14})">'
               '<circle class="port" cx="0" cy="-4" r="5"/>'
               '<text class="lab" x="10" y="0">queue sampled (at the port that sends)</text>'
               '</g></svg>')
    return "\n".join(out)
