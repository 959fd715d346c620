"""The HTML site of a suite as committed: the quick suite's (a page per run, up to the cap)
stays under 10 MB with plotly.js written once; the paper suite's (thousands of runs) gets run
pages only for what its tables link to, and every linked page exists."""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest

pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from ptbench.results.html.site import MAX_RUN_PAGES  # noqa: E402
from ptbench.results.leaderboard import write_html  # noqa: E402
from ptbench.sweep.plan import expand, load_suite, task_labels  # noqa: E402

GROUPS = ("all", "inherited", "fresh")
NAMES = [f"{d}_{s}_{g}" for g in GROUPS for d in ("u", "v1", "v2") for s in ("max", "mean")] + [f"noise_{g}" for g in GROUPS]


def suite_frame(name: str, registry) -> pd.DataFrame:
    """Every run of a suite, with signal-noise-shaped diagnostics and made-up numbers."""
    rng = random.Random(0)
    rows = []
    for spec in expand(load_suite(name), registry):
        diagnostics = {"source": {n: rng.random() for n in NAMES[:6] + ["noise_all"]}, "target": {n: rng.random() for n in NAMES}}
        if spec.strategy.name == "auto-fraction":
            diagnostics["strategy"] = {"fraction": 0.5, "val_size": 5, **{f"val_acc[{f:g}]": rng.random() for f in (0, 0.25, 0.5, 0.75, 1)}}
        if spec.task.values.get("trace"):
            diagnostics["trajectory"] = {side: [{"step": k * 10, **{n: rng.random() for n in NAMES}} for k in range(31)]
                                         for side in ("source", "target")}
        rows.append(dict(
            key=spec.key, task=spec.task.instance_name, task_params=spec.task.values, strategy=spec.strategy.instance_name,
            strategy_params=spec.strategy.values, seed=spec.seed, status="ok", error=None, source_acc=0.9,
            target_acc=rng.random(), target_train_acc=1.0, source_seconds=1.0, target_seconds=0.5, device="cpu",
            diagnostics=diagnostics, ptbench_version="0.1.0", torch_version="2.13.0+cpu", git_commit="0123456789abcdef",
            host="host", created_at="2025-01-01T00:00:00+0000", python_version="3.11.7", git_dirty=0,
        ))
    return pd.DataFrame(rows)


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_quick_suites_site_is_under_10_mb(tmp_path, registry):
    runs = suite_frame("quick", registry)
    index, written = write_html(runs, tmp_path / "quick", "scratch", registry, "ptbench leaderboard: the quick suite",
                                task_labels(load_suite("quick"), registry))
    pages = len(list((tmp_path / "quick" / "runs").glob("*.html")))
    linked = runs.groupby(["task", "strategy"]).ngroups  # past the cap: the run each table row links to
    assert written and len(runs) == len(expand(load_suite("quick"), registry))
    assert pages == (len(runs) if len(runs) <= MAX_RUN_PAGES else linked)
    assert (tmp_path / "quick" / "plotly.min.js").stat().st_size > 3_000_000  # the one copy
    size = _size(tmp_path / "quick")
    print(f"quick suite site: {size / 1e6:.2f} MB")
    assert size < 10_000_000


def test_the_paper_suites_site_gets_pages_for_what_is_linked(tmp_path, registry):
    runs = suite_frame("paper", registry)
    index, _ = write_html(runs, tmp_path / "paper", "scratch", registry, "paper")
    pages = {p.name for p in (tmp_path / "paper" / "runs").glob("*.html")}
    linked = set(re.findall(r'href="runs/([^"]+)"', index.read_text()))
    assert linked == pages and len(pages) == min(MAX_RUN_PAGES, runs.groupby(["task", "strategy"]).ngroups)
    size = _size(tmp_path / "paper")
    print(f"paper suite site: {len(runs)} runs, {len(pages)} run pages, {size / 1e6:.2f} MB")
    assert size < 15_000_000
