"""Results people look at: task labels, the glossary, the HTML site next to the markdown,
--dry-run, --seeds ranges and lists, `list suites NAME`, the csv/json/latex/html formats,
`export --flat`, -v/-q/--log-file, checks before training, closed pipes.

Runs are written by hand through the store (known numbers, no training) except where the
wiring of `run` itself is the point; those use the smoke suite (two runs of a tiny task).
"""

from __future__ import annotations

import io
import json
import re
import sys
import time

import pandas as pd
import pytest

from ptbench.registry import default_registry

from ptbench.api import RunResult
from ptbench.results import glossary as gl
from ptbench.results.leaderboard import render, render_table, summary_records
from ptbench.results.store import Store, open_existing
from ptbench.sources import plugin_hash
from ptbench.sweep.plan import (
    MAX_RUNS, check_size, count_runs, expand, load_suite, parse_suite, seeds_overridden, task_labels,
)
from ptbench.cli._common import parse_seeds

SMOKE_TASK = "signal-noise[d=100,n_source=40,n_target=20,n_test=200,m=10,steps=50]"
DIAGNOSTICS = {
    "source": {"u_max_all": 1.5, "noise_all": 0.3},
    "target": {"u_max_all": 0.8, "u_mean_inherited": 0.4, "v2_max_fresh": 0.2, "noise_fresh": 0.1, "weird_thing": 7},
    "strategy": {"fraction": 0.5, "val_acc[0.5]": 0.9, "val_acc[0.75]": None, "chosen": "best"},
    "trajectory": {"target": [{"step": 0, "u_max_all": 0.0}, {"step": 10, "u_max_all": 0.5}]},
}


def smoke_specs(registry, seeds=None):
    return expand(load_suite("smoke"), registry, seeds=seeds)


def write_runs(path, specs, accs=None, diagnostics=None, **fields):
    """Store a result for every spec, as the sweep would (plugin code digest included)."""
    with Store(path) as store:
        for i, spec in enumerate(specs):
            acc = (accs or {}).get(spec.strategy.name, 0.8) + 0.01 * spec.seed
            store.write(RunResult.for_spec(
                spec, source_acc=0.95, target_acc=acc, target_train_acc=1.0, source_seconds=2.0, target_seconds=0.5,
                diagnostics=diagnostics if diagnostics is not None else DIAGNOSTICS,
                plugin_hash=plugin_hash(type(spec.task), type(spec.strategy)), **fields,
            ))


def frame(path) -> pd.DataFrame:
    with open_existing(path) as store:
        return store.frame()


@pytest.fixture
def smoke_store(tmp_path, registry):
    """results/smoke.db (where `run --suite smoke` looks) with both runs of seeds 0..2."""
    path = tmp_path / "results" / "smoke.db"
    write_runs(path, smoke_specs(registry, seeds=3), accs={"scratch": 0.7, "full": 0.9})
    return path


# --------------------------------------------------------------------------- 1. labels


def test_labels_key_a_spec_or_an_instance_name_and_name_each_swept_variant(registry):
    suite = parse_suite({
        "tasks": ["signal-noise[d=[100,200],steps=50]", "signal-noise[d=300]"], "strategies": ["scratch"],
        "labels": {"signal-noise[d=[100,200],steps=50]": "small", "signal-noise[d=300]": "big"},
    }, "t", "t.toml")
    labels = task_labels(suite, registry)
    assert labels == {"signal-noise[d=100,steps=50]": "small (d=100)", "signal-noise[d=200,steps=50]": "small (d=200)",
                      "signal-noise[d=300]": "big"}
    quick = task_labels(load_suite("quick"), registry)
    assert sorted(quick.values()) == ["digits 0-4 -> 5-9", "transfer helps", "transfer hurts"]
    assert task_labels(load_suite("smoke"), registry) == {SMOKE_TASK: "tiny signal-noise"}


def test_markdown_heads_sections_with_the_label_and_keeps_every_number(smoke_store, registry):
    runs = frame(smoke_store)
    labels = task_labels(load_suite("smoke"), registry)
    plain, labelled = render(runs, "scratch"), render(runs, "scratch", labels=labels)
    assert f"## tiny signal-noise\n\n`{SMOKE_TASK}`\n" in labelled  # markdown has no hover: the name under it
    assert f"## `{SMOKE_TASK}`" in plain and "tiny signal-noise" not in plain
    rows = lambda page: [line for line in page.splitlines() if line.startswith("|")]  # noqa: E731
    assert rows(plain) == rows(labelled) and len(rows(plain)) >= 8  # the ranking and task tables, number for number
    assert render(runs, "scratch", labels={SMOKE_TASK: "a -> b <i>"}).count("## a -> b &lt;i>") == 1  # no tag can open


def test_html_shows_the_label_with_the_spec_on_hover_index_and_run_pages(smoke_store, registry, tmp_path, small_plotly):
    from ptbench.results.html.site import task_spec
    from ptbench.results.leaderboard import write_html

    labels = task_labels(load_suite("smoke"), registry)
    runs = frame(smoke_store)
    index, written = write_html(runs, tmp_path / "site", "scratch", registry, "t", labels)
    spec = task_spec(SMOKE_TASK, runs["task_params"].iloc[0])
    assert written and spec.startswith("signal-noise[d=100,") and spec.count("=") == len(runs["task_params"].iloc[0])
    assert f'<h2 title="{spec}">tiny signal-noise</h2>' in index.read_text()
    page = next((tmp_path / "site" / "runs").glob("*.html")).read_text()
    assert f'<span title="{spec}">tiny signal-noise</span>' in page


# --------------------------------------------------------------------------- 2. glossary


def test_glossary_explains_every_column_and_every_diagnostic_that_appears(smoke_store):
    runs = frame(smoke_store)
    page = render(runs, "scratch")
    glossary = page.split("## Glossary", 1)[1]
    for header in ("target acc % \\[95% CI\\]", "Δ vs scratch (pp) \\[95% CI\\]", "negative transfer (seeds)", "source acc %",
                   "seconds", "seeds", "mean rank"):
        assert f"**{header}" in glossary, header
    for name in ("u_max_all", "u_mean_inherited", "v2_max_fresh", "noise_fresh", "noise_all", "fraction", "val_acc[F]",
                 "step", "weird_thing", "chosen"):
        assert f"- `{name}`: " in glossary, name
    assert "`weird_thing`: task-specific diagnostic" in glossary
    assert "`val_acc[F]`: accuracy on the held-out target examples when inheriting fraction F (F = 0.5, 0.75)" in glossary
    assert "`v2_max_fresh`: signal learning: largest j·⟨w, v2⟩ over the fresh filters" in glossary
    assert "`u_max_fresh`" not in glossary  # only the names that appear
    assert "`source`: measured on the source model" in glossary and "`trajectory`: " in glossary


def test_describe_is_one_line_per_name_and_knows_the_signal_noise_names():
    for name in ("u_max_all", "v1_mean_inherited", "v2_max_fresh", "noise_all", "noise_inherited"):
        text = gl.describe(name)
        assert "\n" not in text and len(text) < 140 and text != gl.UNKNOWN
    assert gl.describe("v3_max_all") == gl.UNKNOWN == "task-specific diagnostic"


def test_show_legend_prints_the_same_glossary(cli, smoke_store):
    res = cli("show", "--legend", "--store", str(smoke_store))
    assert res.code == 0, res.err
    g = gl.glossary(frame(smoke_store))
    for name, text in g.columns + g.diagnostics:
        assert name in res.out
        assert " ".join(text.replace("`", "").split()[:4]) in " ".join(res.out.split())
    none = cli("show", "--legend", "--store", "missing.db")  # no store: every name ptbench knows
    assert none.code == 0 and "u_max_fresh" in none.out and "val_loss[F]" in none.out
    one = cli("show", "--legend", "--store", str(smoke_store), f"{SMOKE_TASK}|full|0")
    assert one.code == 0 and "weird_thing" in one.out


def test_html_index_ends_with_the_glossary(smoke_store, registry, tmp_path, small_plotly):
    from ptbench.results.leaderboard import write_html

    index, _ = write_html(frame(smoke_store), tmp_path / "site", "scratch", registry)
    text = index.read_text()
    glossary = text.split('<section id="glossary">', 1)[1]
    assert "<dt><code>u_mean_inherited</code></dt>" in glossary and "task-specific diagnostic" in glossary
    assert 'title="paired difference to scratch on the same task' in text  # the column's meaning on its header
    assert "<dd>paired difference to <code>scratch</code>" in glossary


# --------------------------------------------------------------------------- 3. the HTML site


@pytest.fixture
def small_plotly(monkeypatch):
    """A stand-in for plotly.js (the real one is 4.8 MB to write): the wiring is the point."""
    pytest.importorskip("jinja2")
    pytest.importorskip("plotly")
    from ptbench.results.html import site

    monkeypatch.setattr(site, "_plotly_js", lambda: b"/* plotly.js v0 stand-in */")


def test_run_suite_writes_the_html_site_next_to_the_markdown(cli, tmp_path, small_plotly):
    res = cli("run", "--suite", "smoke", "-q")
    assert res.code == 0, res.err
    board = tmp_path / "leaderboard" / "smoke"
    assert (board / "README.md").is_file() and (board / "index.html").is_file()
    assert (board / "plotly.min.js").read_bytes() == b"/* plotly.js v0 stand-in */"
    assert len(list((board / "runs").glob("*.html"))) == 2
    assert f"html: {board.relative_to(tmp_path) / 'index.html'}: written" in res.err
    again = cli("run", "--suite", "smoke", "-q")  # equal results: neither page is rewritten
    assert "README.md: unchanged, same results" in again.err and "index.html: unchanged, same results" in again.err
    no_html = cli("run", "--suite", "smoke", "-q", "--no-html", "--leaderboard", "elsewhere")
    assert no_html.code == 0 and not (tmp_path / "elsewhere" / "index.html").exists()


def test_run_pages_are_bounded_and_the_rest_unlinked(tmp_path, registry, small_plotly):
    from ptbench.results.html import write_site

    path = tmp_path / "s.db"
    specs = smoke_specs(registry, seeds=6)  # 12 runs, one of them failed
    write_runs(path, specs)
    with Store(path) as store:
        store.write(RunResult.for_spec(specs[-1], status="failed", error="RuntimeError: boom"))
    runs = frame(path)
    write_site(runs, tmp_path / "site")
    assert len(list((tmp_path / "site" / "runs").glob("*.html"))) == 12
    index = write_site(runs, tmp_path / "site", max_run_pages=3)  # more runs than that: 3 pages
    pages = sorted(p.name for p in (tmp_path / "site" / "runs").glob("*.html"))  # the other pages went
    assert len(pages) == 3 and sum("_s0-" in p for p in pages) == 2 and sum("_s5-" in p for p in pages) == 1
    text = index.read_text()  # the failed run first, then seed 0 of each strategy (the runs the tables link to)
    assert "This table lists the 3 of the 12 runs that have a page" in text
    assert set(re.findall(r'href="runs/([^"]+)"', text)) == set(pages)
    assert text.split('id="runs-table"', 1)[1].split("</table>", 1)[0].count("<tr data-filter") == 3
    assert len(list((tmp_path / "site" / "runs").glob("*.html"))) == len(pages)


# --------------------------------------------------------------------------- 4. CLI conventions


def test_dry_run_counts_and_estimates_without_creating_the_store(cli, tmp_path):
    res = cli("run", "--suite", "smoke", "--dry-run", "--seeds", "3-7")
    assert res.code == 0, res.err
    assert "dry run of the smoke suite: 10 runs, 0 already stored, 10 to run" in res.out
    assert "results/smoke.db (does not exist yet)" in res.out and "leaderboard: results/smoke" in res.out
    assert "tiny signal-noise" in res.out
    assert re.search(r"estimated time: (about \d+ s|under 1 s) of work on one core\b.*from the runs' steps and model sizes "
                     r"\(no stored run to time from yet", res.out), res.out
    strategies = res.out.split("strategy", 1)[1]
    assert [line.split()[1:] for line in strategies.splitlines() if line.startswith(("scratch", "full"))] == [["5", "0", "5"]] * 2
    assert not (tmp_path / "results").exists() and not (tmp_path / "leaderboard").exists()


def test_dry_run_counts_what_is_stored_and_times_the_rest(cli, smoke_store):
    res = cli("run", "--suite", "smoke", "--dry-run", "--seeds", "5")
    assert res.code == 0, res.err
    assert "dry run of the smoke suite: 10 runs, 6 already stored, 4 to run" in res.out
    assert "estimated time: about 6 s on one worker (4 of 4 runs timed" in res.out  # 4 x 0.5 s + 2 sources x 2 s
    assert len(frame(smoke_store)) == 6  # nothing was run or stored
    forced = cli("run", "--suite", "smoke", "--dry-run", "--seeds", "5", "--force")
    assert "10 runs, 0 already stored, 10 to run" in forced.out


def test_dry_run_of_the_paper_suite_is_quick(cli, registry):
    started = time.perf_counter()
    res = cli("run", "--suite", "paper", "--dry-run")
    assert res.code == 0, res.err
    assert time.perf_counter() - started < 5  # here, in process; a fresh process adds its imports (about 3 s)
    assert f"dry run of the paper suite: {len(expand(load_suite('paper'), registry))} runs, 0 already stored" in res.out


@pytest.mark.parametrize("text, seeds", [("5", 5), ("3-7", [3, 4, 5, 6, 7]), ("0,2,4", [0, 2, 4]), ("4, 2,4", [4, 2]), ("7-7", [7])])
def test_seeds_are_a_count_a_range_or_a_list(text, seeds):
    parsed = parse_seeds(text)
    assert (parsed if isinstance(parsed, int) else list(parsed)) == seeds


def test_expand_takes_a_list_of_seeds(registry):
    suite = load_suite("smoke")
    specs = expand(suite, registry, seeds=[3, 5])
    assert sorted({s.seed for s in specs}) == [3, 5] and len(specs) == 4
    assert [s.key for s in expand(suite, registry, seeds=range(0, 1))] == [s.key for s in expand(suite, registry)]
    assert not seeds_overridden(range(0, 1), suite) and seeds_overridden([1], suite) and not seeds_overridden(None, suite)


def test_a_huge_sweep_is_counted_not_built():
    suite = load_suite("quick")
    per_seed = count_runs(suite, seeds=1)
    started = time.perf_counter()
    assert count_runs(suite, seeds=10**9) == per_seed * 10**9
    with pytest.raises(Exception, match="more than 1,000,000"):
        check_size(suite, seeds=range(10**9))
    assert check_size(suite, seeds=10**9, allow_huge=True) == per_seed * 10**9
    assert time.perf_counter() - started < 0.1
    # an upper bound: runs two sweeps share are counted in both
    assert len(expand(suite, default_registry())) <= count_runs(suite) == 5 * per_seed <= MAX_RUNS


def test_a_billion_seeds_are_refused_at_once(cli, tmp_path):
    started = time.perf_counter()
    res = cli("run", "--seeds", "1000000000", "--no-leaderboard")
    assert res.code == 2 and "more than 1,000,000" in res.err and "--allow-huge" in res.err
    assert time.perf_counter() - started < 0.5 and not (tmp_path / "results").exists()


def test_list_suites_name_prints_its_sweeps_and_run_count(cli, registry):
    res = cli("list", "suites", "quick")
    assert res.code == 0, res.err
    total = len(expand(load_suite("quick"), registry))
    assert res.out.startswith("suite quick: ") and f"  {total} runs; " in res.out
    assert "sweep 1: 3 task variant(s) x 25 strategy variant(s) x 5 seed(s) = 375 runs" in res.out
    assert "label: transfer helps" in res.out and "auto-fraction" in res.out
    paper = cli("list", "suites", "paper")
    assert f"  {len(expand(load_suite('paper'), registry))} runs; " in paper.out
    assert "fraction=0.25|0.5|0.75" in cli("list", "strategies", "partial-filters").out
    assert cli("list", "strategies", "partial-filter").code == 2


def test_verbose_prints_every_run_and_log_file_records_the_run(cli, tmp_path, small_plotly):
    res = cli("run", "--suite", "smoke", "-v", "--log-file", "run.log", "--quiet")
    assert res.code == 0, res.err
    lines = [line for line in res.err.splitlines() if line.startswith("ok: ")]
    assert len(lines) == 2 and all(f"{SMOKE_TASK} / " in line and "target " in line for line in lines)
    log = (tmp_path / "run.log").read_text()
    assert log.count(" INFO ok: ") == 2 and "INFO ptbench: 2 run(s) done, 0 already stored" in log
    assert "INFO leaderboard: leaderboard/smoke/README.md: written" in log
    quiet = cli("run", "--suite", "smoke", "-q")  # not verbose: no per-run lines, the summary stays
    assert "ok: " not in quiet.err and "0 run(s) done, 2 already stored" in quiet.err


def _table_store(tmp_path, result):
    path = tmp_path / "t.db"
    with Store(path) as store:
        for seed in range(4):
            store.write(result(task="toy", strategy="scratch", seed=seed, target_acc=0.70 + 0.01 * seed))
            store.write(result(task="toy", strategy="full", seed=seed, target_acc=0.75 + 0.02 * seed))
    return path


def test_leaderboard_formats_give_the_pages_numbers(cli, tmp_path, result):
    path = _table_store(tmp_path, result)
    runs = frame(path)
    csv = cli("leaderboard", "--store", str(path), "--format", "csv")
    assert csv.code == 0, csv.err
    table = pd.read_csv(io.StringIO(csv.out))
    full = table[table["strategy"] == "full"].iloc[0]
    assert full["target_acc_pct"] == pytest.approx(100 * (0.75 + 0.02 * 1.5))
    assert full["delta_vs_scratch_pp"] == pytest.approx(100 * (0.05 + 0.01 * 1.5))
    assert table["target_acc_pct_low"].dtype == float and full["negative_seeds"] == 0 and full["seeds"] == 4
    page = render(runs, "scratch")
    assert f"{full['target_acc_pct']:.1f} [{full['target_acc_pct_low']:.1f}, {full['target_acc_pct_high']:.1f}]" in page
    data = json.loads(cli("leaderboard", "--store", str(path), "--format", "json").out)
    assert data["rows"] == json.loads(json.dumps(summary_records(runs, "scratch")))
    latex = cli("leaderboard", "--store", str(path), "--format", "latex", "--out", "lb.tex")
    tex = (tmp_path / "lb.tex").read_text()
    assert latex.code == 0 and "\\begin{table}" in tex and "\\toprule" in tex and "$\\Delta$ vs scratch (pp)" in tex
    assert "target acc \\% [95\\% CI]" in tex and render_table(runs, "latex").count("\\end{table}") == 1


def test_compare_formats(cli, tmp_path, result):
    path = _table_store(tmp_path, result)
    base = ["compare", "--store", str(path), "--strategy", "scratch", "--strategy", "full"]
    md = cli(*base)
    csv = pd.read_csv(io.StringIO(cli(*base, "--format", "csv").out))
    row = csv.iloc[0]
    assert row["strategy_a"] == "scratch" and row["b_minus_a"] == pytest.approx(100 * (0.05 + 0.01 * 1.5))
    assert f"+{row['b_minus_a']:.1f} [" in md.out and row["pairs"] == 4 and row["verdict"] == "higher"
    data = json.loads(cli(*base, "--format", "json").out)
    assert data["unit"] == "%" and data["rows"][0]["a"] == pytest.approx(row["a"])
    assert "\\begin{table}" in cli(*base, "--format", "latex").out
    pytest.importorskip("jinja2")
    html = cli(*base, "--format", "html", "--out", "c.html")
    page = (tmp_path / "c.html").read_text()
    assert html.code == 0 and page.startswith("<!DOCTYPE html>") and "<code>toy</code>" in page and "B − A" in page


def test_export_flat_gives_one_float_column_per_diagnostic(cli, smoke_store):
    res = cli("export", "--store", str(smoke_store), "--flat")
    assert res.code == 0, res.err
    flat = pd.read_csv(io.StringIO(res.out))
    assert "diagnostics" not in flat and len(flat) == 6
    for column in ("diag.target.u_max_all", "diag.source.noise_all", "diag.strategy.fraction", "diag.strategy.val_acc[0.5]",
                   "diag.target.weird_thing", "diag.strategy.val_acc[0.75]"):
        assert flat[column].dtype == float, column
    assert flat["diag.target.u_max_all"].tolist() == [0.8] * 6 and flat["diag.strategy.val_acc[0.75]"].isna().all()
    assert flat["diag.strategy.chosen"].tolist() == ["best"] * 6  # text stays text
    assert not any(c.startswith("diag.trajectory") for c in flat)
    records = json.loads(cli("export", "--store", str(smoke_store), "--flat", "--format", "json").out)
    assert records[0]["diag.target.noise_fresh"] == 0.1 and isinstance(records[0]["task_params"], dict)


# --------------------------------------------------------------------------- 5. checks before training


def test_a_suite_whose_report_needs_matplotlib_fails_before_training(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    res = cli("run", "--suite", "paper", "--store", "s.db")
    assert res.code == 2 and len(res.err.splitlines()) == 1, res.err
    assert "the paper suite's report (or pass --no-leaderboard) needs matplotlib" in res.err
    assert "pip install 'ptbench[plot]'" in res.err and not (tmp_path / "s.db").exists()


def test_html_asked_for_without_its_libraries_fails_before_training(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    res = cli("run", "--suite", "smoke", "--html", "--store", "s.db")
    assert res.code == 2 and "--html needs plotly, which is not installed: pip install 'ptbench[html]'" in res.err
    assert not (tmp_path / "s.db").exists()
    quiet = cli("run", "--suite", "smoke", "-q", "--store", "s.db")  # not asked for: the markdown only
    assert quiet.code == 0 and not (tmp_path / "leaderboard" / "smoke" / "index.html").exists()


# --------------------------------------------------------------------------- closed pipes


def test_a_closed_pipe_ends_quietly(cli, monkeypatch):
    import ptbench.cli.list as command

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(command, "main", closed)
    res = cli("list")
    assert res.code == 141 and res.err == "" and "Traceback" not in res.out


def test_run_names_the_cache_folder_the_cache_uses():
    from ptbench.cli import run
    from ptbench.run.cache import DEFAULT_DIR

    assert run.DEFAULT_CACHE == DEFAULT_DIR  # run.py keeps torch out of its imports, so it repeats the name
