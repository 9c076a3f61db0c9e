"""Helpers for tests and benchmarks: a real network from a few lines of YAML.

    with running_network({"builtin": "chain", "routers": 4}) as net:
        net["h1"].cmd("ping -c1 " + net.ip("h2"))

The argument is anything an experiment's `topology:` key accepts (a builtin with its
parameters, an inline topology, or a file path), or a whole experiment (a mapping with
`topology:`), in which case its `hosts:` and `emulation:` settings apply too. Teardown
always runs.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import yaml

from .config.load import load_experiment
from .network.net import Network
from .network.tracker import RunTracker


def experiment_text(topology: Any, **experiment: Any) -> str:
    exp = {"name": "test", "duration": 1, "topology": topology, **experiment}
    return yaml.safe_dump(exp, sort_keys=False)


@contextlib.contextmanager
def running_network(spec: Any, **experiment: Any) -> Iterator[Network]:
    if isinstance(spec, str) and "\n" in spec:
        spec = yaml.safe_load(spec)
    if isinstance(spec, dict) and "topology" in spec:
        text = yaml.safe_dump({"name": "test", "duration": 1, **spec, **experiment})
    else:
        text = experiment_text(spec, **experiment)
    plan = load_experiment("<test>", text=text)
    point = plan.points[0]
    with RunTracker() as tracker:
        net = Network(point.graph, tracker, point.experiment.hosts,
                      point.experiment.emulation)
        net.experiment = point.experiment
        net.start()
        yield net


def ping_all(net: Network, v6: bool = False) -> dict[tuple[str, str], bool]:
    """Every host pings every other host once (all sources in parallel):
    (source, address) → answered."""
    hosts = [h.name for h in net.hosts]
    for h in hosts:
        targets = " ".join(net.ip(o, v6) for o in hosts if o != h)
        net[h].sendCmd(f"for a in {targets}; do ping {'-6 ' if v6 else ''}-c1 -W2 $a "
                       f">/dev/null 2>&1 && echo OK $a || echo FAIL $a; done")
    res = {}
    for h in hosts:
        out = net[h].waitOutput()
        for st, addr in re.findall(r"(OK|FAIL) (\S+)", out):
            res[(h, addr)] = st == "OK"
    return res
