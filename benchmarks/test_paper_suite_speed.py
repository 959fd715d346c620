"""How long the paper suite's runs take on this machine (pytest-benchmark; run with
`pytest benchmarks --benchmark-enable`).

The suite (suites/paper.toml) is 420 groups of one source model and 3 to 11 target
models at d = 500, 300 full-batch steps. The two groups timed here are its cheapest typical
and its most expensive kind: a heatmap cell (source + 3 targets) and a fraction-sweep cell
(source + 11 targets). The suite's total is about 360 of the first kind plus 40 of the second
plus 20 traced groups, which is how the "under 20 minutes on 2 cores" budget was sized.
"""

from __future__ import annotations

import pytest
import torch

from ptbench.api import RunSpec
from ptbench.spec import parse_spec
from ptbench.registry import default_registry
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups

TASK = "signal-noise[d=500,steps=300,n_target=20,n_source=100,shared=1.0]"
HEATMAP = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]
FRACTIONS = ["scratch", "partial-filters[fraction=[0.0,0.25,0.5,0.75,1.0],freeze=[false,true]]"]


def group(strategies: list[str]):
    registry = default_registry()
    name, fixed = parse_spec(TASK)
    task = registry.task(name).expand(fixed)[0]
    instances = []
    for spec in strategies:
        sname, sfixed = parse_spec(spec)
        instances += registry.strategy(sname).expand(sfixed)
    return group_specs([RunSpec(task, s, 0) for s in instances])[0]


@pytest.mark.parametrize("kind, strategies", [("heatmap-cell", HEATMAP), ("fraction-cell", FRACTIONS)])
def test_paper_suite_group(benchmark, kind, strategies):
    torch.set_num_threads(1)
    g = group(strategies)
    results = benchmark(lambda: list(run_groups([g], RunOptions())))
    assert all(r.status == "ok" for r in results)
