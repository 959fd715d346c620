"""Plots and the paper suite's report: PNG files from a small real store, sentences built from
the stored numbers, and a clear message when matplotlib is missing."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from ptbench.results import plots
from ptbench.errors import PtbenchError
from ptbench.reports.paper import boundary_ratio, prepare
from ptbench.results.stats import mean_ci
from ptbench.results.store import open_existing

PNG = b"\x89PNG\r\n\x1a\n"

BASE = "d=60,m=10,steps=30,n_target=10,n_test=200"
SUITE = f"""
description = "a miniature of the paper suite"
seeds = 2
report = "ptbench.reports.paper:write_report"

[[sweep]]
tasks = ["signal-noise[{BASE},shared=[0.25,2.0],n_source=[10,40]]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=40,shared=[0.25,2.0],source_noise=[0.5,1.0]]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=40,shared=[0.25,2.0]]"]
strategies = ["partial-filters[fraction=[0.0,0.5,1.0],freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=40,shared=[0.25,2.0],trace=10]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=false]"]
"""


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_line_and_heatmap_plots_write_png_files(tmp_path):
    line = plots.Line("a", [0, 0.5, 1], [60, 70, 80], [55, 65, 75], [65, 75, 85])
    path = plots.line_panels(tmp_path / "sub" / "lines.png", [plots.LinePanel("p", [line], hline=60)], "x", "title")
    assert is_png(path)
    values = np.array([[1.0, -2.0], [np.nan, 4.0]])
    panel = plots.HeatPanel("h", values, marked=values < 0, notes=[["R=1", "R=2"], ["", "R=4"]], split=np.array([[0, 1], [1, 1]], bool))
    path = plots.heatmap_panels(tmp_path / "heat.png", [panel, panel], "x", "y", ["a", "b"], ["c", "d"], "t", "gain", "neg", "R=1")
    assert is_png(path)


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when absent
    with pytest.raises(PtbenchError, match=r"pip install 'ptbench\[plot\]'"):
        plots.pyplot()


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """Run the miniature suite once through the CLI, with an unrelated run in the same store."""
    from ptbench.cli import main

    root = tmp_path_factory.mktemp("paper")
    suite = root / "mini.toml"
    suite.write_text(SUITE)
    store = root / "runs.db"
    other = ["run", "--task", f"signal-noise[{BASE},shared=1.0]", "--strategy", "full", "--seeds", "1",
             "--store", str(store), "--no-leaderboard", "--quiet"]
    assert main(other) == 0
    code = main(["run", "--suite", str(suite), "--store", str(store), "--leaderboard", str(root / "lb"), "--quiet"])
    assert code == 0
    with open_existing(store) as s:
        runs = s.frame()
    return root / "lb", runs


@pytest.mark.slow  # a real process (or a whole report with plots): seconds, not milliseconds
def test_the_report_writes_the_page_and_four_plots(paper):
    out, runs = paper
    page = (out / "paper.md").read_text()
    names = ["paper-fraction.png", "paper-heatmap-n_source.png", "paper-heatmap-source_noise.png", "paper-trajectories.png"]
    for name in names:
        assert is_png(out / "plots" / name), name
        assert f"(plots/{name})" in page
    assert page.count("**What it shows:**") == 4
    suite_runs = len(runs) - 1  # the unrelated `full` run is not the suite's
    assert page.count(f"{suite_runs} runs (0 not ok)") == 1
    assert (out / "README.md").is_file()  # the generic leaderboard is still written


@pytest.mark.slow  # shares the `paper` fixture: a whole report with plots, written once (seconds)
def test_the_report_numbers_are_the_stored_numbers(paper):
    out, runs = paper
    page = (out / "paper.md").read_text()
    df = prepare(runs[runs["strategy"] != "full"])
    # the (|u|=2, n_source=40) cell of the first heatmap, fine-tuned: Δ over the two seeds
    cell = df[(df["p_shared"] == 2.0) & (df["p_n_source"] == 40) & (df["p_source_noise"] == 1.0) & ~df["traced"]
              & (df["family"] == "partial-filters") & (df["fraction"] == 0.5) & (df["freeze"] == False)]  # noqa: E712
    assert len(cell) == 2
    expected = mean_ci(cell["delta"]).fmt(signed=True)
    r = boundary_ratio({"shared": 2.0, "specific": 1.0, "n_source": 40, "source_noise": 1.0, "d": 60})
    assert r == pytest.approx(40 * 25 / 60)
    section = page.split("## 2.", 1)[1].split("## 3.", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| 2 ") and "| 40 " in line)
    assert expected in row and "| 17 " in row  # R = 16.7 printed to two figures
    # the check that fraction 0 is scratch, computed from the runs
    assert re.search(r"matches `scratch` in all 8 paired runs to within 0 pp", page)
    # trajectories: the sentence quotes the traced runs' means
    traced = df[df["traced"] & (df["family"] == "partial-filters") & (df["p_shared"] == 2.0)]
    start = np.mean([d["trajectory"]["target"][0]["u_max_inherited"] for d in traced["diagnostics"]])
    assert f"signal learning ⟨w, u⟩ = {start:.2f}" in page


@pytest.mark.slow  # a real process (or a whole report with plots): seconds, not milliseconds
def test_report_command_regenerates_and_refuses_suites_without_a_report(paper, cli, tmp_path):
    out, runs = paper
    store = out.parent / "runs.db"
    res = cli("report", "--suite", str(out.parent / "mini.toml"), "--store", str(store), "--out", str(tmp_path / "again"))
    assert res.code == 0, res.err
    assert (tmp_path / "again" / "paper.md").is_file() and is_png(tmp_path / "again" / "plots" / "paper-fraction.png")
    res = cli("report", "--suite", "quick", "--store", str(store))
    assert res.code == 2 and "has no report" in res.err


def test_an_empty_store_gives_a_page_that_says_so(tmp_path):
    import pandas as pd

    from ptbench.reports.paper import write_report
    from ptbench.results.store import COLUMN_NAMES

    written = write_report(pd.DataFrame(columns=COLUMN_NAMES), tmp_path)
    assert written == [tmp_path / "paper.md"]
    assert "No successful signal-noise runs" in (tmp_path / "paper.md").read_text()


@pytest.mark.parametrize("value, message", [
    ("5", "report must be a string 'module:function'"),
    ('"ptbench.no_such_module:write"', "cannot import 'ptbench.no_such_module'"),
    ('"ptbench.reports.paper:no_such_function"', "has no function 'no_such_function'"),
])
def test_a_bad_report_key_is_a_user_error(cli, tmp_path, value, message):
    suite = tmp_path / "bad.toml"
    suite.write_text(f'report = {value}\ntasks = ["signal-noise[{BASE}]"]\nstrategies = ["scratch"]\n')
    res = cli("report", "--suite", str(suite), "--store", str(tmp_path / "none.db"))
    assert res.code == 2 and message in res.err, res.err


def test_the_paper_suite_straddles_the_benign_harmful_boundary(registry):
    from ptbench.sweep.plan import expand, load_suite

    suite = load_suite("paper")
    specs = expand(suite, registry)
    assert suite.seeds >= 10 and suite.report == "ptbench.reports.paper:write_report"
    assert {s.seed for s in specs} == set(range(suite.seeds))
    ratios = {s.task.key: boundary_ratio(s.task.values) for s in specs}
    assert min(ratios.values()) < 0.1 and max(ratios.values()) > 10  # both sides of R = 1, by a margin
    # two heatmap axes besides |u|, each swept over at least four values
    for value in ("n_source", "source_noise"):
        assert len({s.task.values[value] for s in specs}) >= 4
    fractions = {(s.strategy.values["fraction"], s.strategy.values["freeze"]) for s in specs if s.strategy.name == "partial-filters"}
    assert fractions >= {(f, z) for f in (0.0, 0.25, 0.5, 0.75, 1.0) for z in (False, True)}
    assert any(s.task.trace_every() > 0 for s in specs)
    assert sum(s.task.trace_every() > 0 for s in specs) < 0.05 * len(specs)  # tracing only where plotted
