"""One self-contained HTML page per run (`report.html` in the bundle).

What a reader needs to judge the run without opening a folder: the experiment, its scale
and command line; the topology drawn (link rates, queues, the ports whose queue was
sampled); the claims with their measured values and verdicts; every figure (embedded as
data: URIs, so the page reads offline and travels as one file); per point its status,
kernel, tool versions, CPU busy, bottleneck verdict, notes and errors; links to the
point's CSVs, packet captures and logs (relative, so they resolve inside the bundle).

Functions: render(run_dir) → str, write_report(run_dir, out=None) → Path.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import json
from html import escape
from pathlib import Path
from typing import Any

from .record import read_record

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.PASS{background:#dff0d8}.FAIL{background:#f2dede}.NA{background:#fcf8e3}
.ok{color:#2d7a2d}.failed,.interrupted{color:#b52b27;font-weight:bold}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.muted{color:#777;font-size:12px}code{font-size:12px}
"""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{escape(alt)}</figcaption></figure>')


def _table(head: list[str], rows: list[list[str]], cls: list[str] | None = None,
           raw: bool = False) -> str:
    """rows are escaped unless raw (cells already HTML)."""
    out = ["<table>" + ("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
                        if head else "")]
    for i, r in enumerate(rows):
        c = f' class="{cls[i]}"' if cls and cls[i] else ""
        out.append(f"<tr{c}>" + "".join(f"<td>{x if raw else escape(str(x))}</td>"
                                        for x in r) + "</tr>")
    return "".join(out) + "</table>"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _points(run_dir: Path) -> list[tuple[str, dict]]:
    info = _json(run_dir / "run.json") or {}
    names = [n for n in (info.get("points") or {}) if (run_dir / n / "meta.json").exists()] \
        or sorted(p.name for p in run_dir.iterdir() if (p / "meta.json").exists())
    return [(n, read_record(run_dir / n)) for n in names]


def _sampled(pdir: Path) -> set[str]:
    try:
        with open(pdir / "queue.csv", newline="") as f:
            return {f"{r['node']}:{r['iface']}" for r in csv.DictReader(f)}
    except (OSError, KeyError):
        return set()


def _topologies(run_dir: Path, points: list[tuple[str, dict]]) -> str:
    from ..config.load import load_topology
    from ..plots.topology import topology_svg
    groups: dict[str, list[str]] = {}
    for name, _m in points:
        p = run_dir / name / "topology.yaml"
        if p.exists():
            groups.setdefault(p.read_text(), []).append(name)
    out = []
    for _text, names in groups.items():
        pdir = run_dir / names[0]
        sampled = set().union(*(_sampled(run_dir / n) for n in names))
        try:
            spec = load_topology(pdir / "topology.yaml")
            svg = topology_svg(spec, sampled, names[0])
        except Exception as e:   # a drawing failing does not void the report
            svg = f'<p class="failed">topology not drawn: {escape(str(e))}</p>'
        which = "all points" if len(groups) == 1 else "points " + ", ".join(names)
        out.append(f"<h3>{escape(which)}</h3>{svg}<p class='muted'>sampled ports: "
                   f"{escape(', '.join(sorted(sampled)) or 'none')}</p>")
    return "".join(out) or "<p>no topology.yaml in this bundle</p>"


def _claims(run_dir: Path) -> str:
    rows, cls = [], []
    for v in _json(run_dir / "claims.json") or []:
        measured = ", ".join(f"{k} = {x:.4g}" if isinstance(x, (int, float)) else f"{k} = {x}"
                             for k, x in (v.get("measured") or {}).items())
        rows.append([v.get("status", ""), v.get("claim", ""), v.get("cc") or "-",
                     measured, v.get("reason", "")])
        cls.append(str(v.get("status", "")).replace("/", ""))
    if not rows:
        return "<p>no claims were judged on this run (no <code>expect:</code> and no " \
               "default claim applies)</p>"
    return _table(["verdict", "claim", "cc", "measured", "reason"], rows, cls)


def _meta_rows(points: list[tuple[str, dict]]) -> str:
    rows = []
    for name, m in points:
        v = m.get("versions") or {}
        bn = m.get("bottleneck") or {}
        busiest = max((bn.get("ports") or {}).items(),
                      key=lambda kv: kv[1].get("util_pct") or 0, default=None)
        late = max((e.get("late_ms", 0) for e in m.get("schedule") or []), default=None)
        dur = (m.get("ended") or 0) - (m.get("started") or 0)
        rows.append([
            f'<span class="{escape(str(m.get("status")))}">{escape(str(m.get("status")))}'
            f'</span>' + (f"<br>{escape(m['error'])}" if m.get("error") else ""),
            escape(name),
            escape(v.get("kernel", "")),
            escape(f"git {v.get('git_commit', '')[:12]}; {v.get('iperf3', '')}; "
                   f"mininet {v.get('mininet', '')}; bcc {v.get('bcc', '')}; "
                   f"{v.get('clang', '')}; python {v.get('python', '')}; "
                   f"{v.get('cpus', '')} CPUs; default CC {v.get('default_cc', '')}"),
            escape(f"{m.get('cpu_busy_pct', '-')} %"),
            escape(f"{bn.get('verdict', '-')}" + (
                f" ({busiest[0]}: {busiest[1].get('util_pct')} % of "
                f"{busiest[1].get('rate_mbps')} Mb/s)" if busiest else "")),
            escape(f"{late:.1f} ms" if late is not None else "-"),
            escape(f"{dur:.1f} s" if dur > 0 else "-"),
            "<br>".join(escape(n) for n in m.get("notes") or []) or "-"])
    return _table(["status", "point", "kernel", "versions", "CPU busy", "bottleneck",
                   "latest start", "took", "notes"], rows, raw=True)


def _files(run_dir: Path, points: list[tuple[str, dict]]) -> str:
    rows = []
    for name, _m in points:
        pdir = run_dir / name
        links = []
        for f in sorted(pdir.glob("*.csv")) + sorted(pdir.glob("*.json")) + \
                sorted(pdir.glob("*.yaml")):
            rel = f"{name}/{f.name}"
            links.append(f'<a href="{escape(rel, quote=True)}">{escape(f.name)}</a> '
                         f'<span class="muted">{_size(f.stat().st_size)}</span>')
        caps = sorted((pdir / "pcap").glob("*")) if (pdir / "pcap").is_dir() else []
        pcaps = [f'<a href="{escape(f"{name}/pcap/{f.name}", quote=True)}">{escape(f.name)}</a>'
                 f' <span class="muted">{_size(f.stat().st_size)}</span>' for f in caps]
        logs = [f'<a href="{escape(f"{name}/logs/{f.name}", quote=True)}">{escape(f.name)}</a>'
                for f in sorted((pdir / "logs").glob("*"))] if (pdir / "logs").is_dir() else []
        rows.append([escape(name), "<br>".join(links) or "-", "<br>".join(pcaps) or "-",
                     "<br>".join(logs) or "-"])
    top = [f'<a href="{escape(f.name, quote=True)}">{escape(f.name)}</a>'
           for f in sorted(run_dir.glob("*")) if f.is_file() and f.suffix in
           (".csv", ".json", ".yaml") ]
    return ("<p>run: " + " · ".join(top) + "</p>" if top else "") + \
        _table(["point", "data", "packet captures (pcap/)", "logs"], rows, raw=True)


def _figures(run_dir: Path, points: list[tuple[str, dict]]) -> str:
    out = []
    run_pngs = sorted(run_dir.glob("*.png"))
    if run_pngs:
        out.append("<h3>run</h3>" + "".join(_img(p, p.name) for p in run_pngs))
    for name, m in points:
        pdir = run_dir / name
        # the runner's plots, then any other figure an instrument left (int_trace.png)
        pngs = [pdir / p for p in m.get("plots") or []]
        pngs += [p for p in sorted(pdir.glob("plots/*.png")) + sorted(pdir.glob("*.png"))
                 if p not in pngs]
        pngs = [p for p in pngs if p.exists()]
        if pngs:
            out.append(f"<h3>{escape(name)}</h3>" +
                       "".join(_img(p, f"{name}: {p.name}") for p in pngs))
    return "".join(out) or "<p>no figures</p>"


def _summary(run_dir: Path) -> str:
    try:
        with open(run_dir / "summary.csv", newline="") as f:
            rows = list(csv.reader(f))
    except OSError:
        return ""
    return _table(rows[0], rows[1:]) if rows else ""


def render(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    info = _json(run_dir / "run.json") or {}
    points = _points(run_dir)
    first = points[0][1] if points else {}
    exp = info.get("experiment") or first.get("experiment") or run_dir.name
    statuses = [m.get("status") for _n, m in points]
    started = min((m.get("started") for _n, m in points if m.get("started")), default=None)
    when = dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S") if started else "-"
    head = _table([], [
        ["experiment", escape(exp)],
        ["scale", escape(first.get("scale") or "not stated")],
        ["run", escape(run_dir.name) + f" <span class='muted'>({escape(str(run_dir))})</span>"],
        ["started", escape(when)],
        ["command", f"<code>{escape(' '.join(info.get('argv') or first.get('argv') or []))}</code>"],
        ["points", escape(f"{len(points)}: " + ", ".join(
            f"{statuses.count(s)} {s}" for s in sorted(set(map(str, statuses)))))],
        ["kernel", escape((first.get("versions") or {}).get("kernel", "-"))],
    ], raw=True)
    body = [f"<h1>{escape(exp)}</h1>", head,
            "<h2 id='topology'>Topology</h2>", _topologies(run_dir, points),
            "<h2 id='claims'>Claims</h2>", _claims(run_dir),
            "<h2 id='summary'>Summary</h2>", _summary(run_dir),
            "<h2 id='figures'>Figures</h2>", _figures(run_dir, points),
            "<h2 id='points'>Points</h2>", _meta_rows(points),
            "<h2 id='files'>Files</h2>", _files(run_dir, points)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(exp)} — {escape(run_dir.name)}</title><style>{CSS}</style>"
            f"</head><body>{''.join(body)}<p class='muted'>written by python -m testbed "
            f"report</p></body></html>\n")


def write_report(run_dir: str | Path, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not _points(run_dir):
        from ..errors import ConfigError
        raise ConfigError("not a results bundle (no point with meta.json)", str(run_dir))
    out = out or run_dir / "report.html"
    out.write_text(render(run_dir))
    return out
