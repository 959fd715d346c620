"""The images suite's report (ANALYSIS.md) against an independent computation.

ANALYSIS.md used to be written by hand from a script kept elsewhere, and went stale when the
engine changed. It is now generated (reports/images.py) by the suite's `report` key. These
tests hold it to what it claims: on a store of real runs (a reduced images suite, trained
here through the CLI, which also writes the page), every cell of every table is recomputed
with scipy (paired t test, t interval, one-sided t tests for the TOST) and a Holm written
out here, and compared with the page to its printed precision, bold and ≡ marks included;
and on rows written through the store API with effects chosen by the test, a result
sentence says what the numbers say and changes when they change.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

stats = pytest.importorskip("scipy.stats")
pytest.importorskip("skimage")  # the cross-domain task's texture photographs

from ptbench.api import RunResult  # noqa: E402
from ptbench.registry import default_registry  # noqa: E402
from ptbench.reports import images  # noqa: E402
from ptbench.results.store import Store  # noqa: E402
from ptbench.rng import derive_seed  # noqa: E402
from ptbench.sweep.plan import expand, load_suite  # noqa: E402

MARGIN = 0.01  # the page's TOST margin, ±1 pp
ALPHA = 0.05
STEPS = "source_steps=40,target_steps=30"  # a budget small enough for a test; still real training
HEAD = """
description = "a reduced images suite for the report's tests"
seeds = 3
baseline = "scratch"
report = "ptbench.reports.images:write_report"
"""
DIGITS = f"""
[[sweep]]
tasks = ["digits-split[n_target=[10,30],{STEPS}]"]
strategies = ["scratch", "partial-layers[layers=[1,2,3],freeze=[true,false]]", "selffer[layers=[1,2,3],freeze=true]",
              "partial-filters[fraction=[0.25,0.5,0.75],freeze=true]"]
"""
CROSS = f"""
[[sweep]]
tasks = ["cross-domain[n_target=10,{STEPS}]"]
strategies = ["scratch", "partial-layers[layers=[1,2,3],freeze=[true,false]]"]
"""


# --------------------------------------------------------------------------- the reference


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, written out: sort, multiply the i-th smallest by
    (m - i), carry the running maximum, cap at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * pvalues[i])
        adjusted[i] = min(running, 1.0)
    return adjusted


def one_sample(d: np.ndarray, mu: float = 0.0, alternative: str = "two-sided") -> float:
    """scipy's one-sample t test; with every value equal (a zero standard error, which runs
    whose accuracies differ by the same test images do produce) the limit: 0 when the
    difference to mu is in the tested direction, 1 when it is not."""
    if np.ptp(d) == 0:
        diff = float(d[0] - mu)
        if alternative == "two-sided":
            return 1.0 if diff == 0 else 0.0
        return 0.0 if (diff > 0) == (alternative == "greater") and diff != 0 else 1.0
    return float(stats.ttest_1samp(d, mu, alternative=alternative).pvalue)


def reference(d: np.ndarray) -> dict:
    """Mean, 95% t interval, seeds below, p and the TOST p of per-seed differences."""
    n, mean = len(d), float(d.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    tost = max(one_sample(d, -MARGIN, "greater"), one_sample(d, MARGIN, "less"))
    return {"mean": mean, "low": mean - half, "high": mean + half, "below": int((d < -1e-12).sum()), "n": n,
            "p": one_sample(d), "tost": tost}


def family(cells: dict) -> dict:
    """Holm over one table's cells, for the t tests and for the TOSTs."""
    keys = list(cells)
    for key, ph, th in zip(keys, holm([cells[k]["p"] for k in keys]), holm([cells[k]["tost"] for k in keys])):
        cells[key]["p_holm"], cells[key]["tost_holm"] = ph, th
    return cells


def paired(frame: pd.DataFrame, task: str, strategy: str) -> pd.Series:
    """Per seed: the strategy's accuracy minus scratch's, same task and seed (scipy's
    ttest_rel on the two accuracy columns is the same test)."""
    rows = frame[frame["task"] == task].set_index(["strategy", "seed"])["target_acc"]
    return (rows[strategy] - rows["scratch"]).dropna().sort_index()


def name(family_: str, **params) -> str:
    """The instance name the harness gives (a parameter at its default is left out)."""
    parts = [f"{k}={v}" for k, v in params.items() if not (k == "layers" and v == 1)]
    return f"{family_}[{','.join(parts)}]"


# --------------------------------------------------------------------------- reading the page


CELL = re.compile(r"^(\*\*)?([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\] \((\d+)/(\d+); p_H=(<?[0-9.]+)\)(\*\*)?( ≡)?$")


def section(page: str, heading_start: str) -> str:
    """The text of the first section whose heading starts with `heading_start`."""
    parts = re.split(r"^## ", page, flags=re.M)
    found = [p for p in parts if p.startswith(heading_start)]
    assert found, f"no section {heading_start!r} in the page"
    return found[0]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first pipe table in `text`, split into cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def p_close(printed: str, value: float) -> bool:
    """The printed p-value is `value` at its printed precision."""
    if printed.startswith("<"):
        return value < float(printed[1:])
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10 ** -decimals + 1e-12


def check_cell(text: str, ref: dict) -> None:
    match = CELL.match(text)
    assert match, f"unreadable cell {text!r}"
    bold, mean, low, high, below, n, p_holm, _, equivalent = match.groups()
    for printed, value in ((mean, ref["mean"]), (low, ref["low"]), (high, ref["high"])):
        assert abs(float(printed) - value * 100) <= 0.05 + 1e-9, (text, ref)
    assert (int(below), int(n)) == (ref["below"], ref["n"]), (text, ref)
    assert p_close(p_holm, ref["p_holm"]), (text, ref)
    assert bool(bold) == (ref["p_holm"] < ALPHA), (text, ref)
    assert bool(equivalent) == (ref["tost_holm"] < ALPHA), (text, ref)


# --------------------------------------------------------------------------- the real store


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Train the reduced suite through the CLI (which runs the report after the leaderboard)."""
    tmp = tmp_path_factory.mktemp("images-report")
    (tmp / "mini.toml").write_text(HEAD + DIGITS + CROSS)
    proc = subprocess.run(
        [sys.executable, "-m", "ptbench", "run", "--suite", "mini.toml", "--store", "runs.db", "--leaderboard", "board",
         "--cache-dir", "cache", "--no-html", "--quiet"],
        cwd=tmp, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Store(tmp / "runs.db") as store:
        frame = store.frame()
    return {"dir": tmp, "out": proc.stdout + proc.stderr, "frame": frame[frame["status"] == "ok"],
            "page": (tmp / "board" / "ANALYSIS.md").read_text()}


TASKS = {"digits 0-4 -> 5-9, 10 target images": "digits-split[n_target=10," + STEPS + "]",
         "digits 0-4 -> 5-9, 30 target images": "digits-split[n_target=30," + STEPS + "]",
         "textures": "cross-domain[n_target=10," + STEPS + "]"}
COLUMNS = {"AnB (frozen)": ("partial-layers", True), "AnB+ (fine-tuned)": ("partial-layers", False),
           "BnB (frozen)": ("selffer", True)}


def task_name(frame: pd.DataFrame, wanted: str) -> str:
    """The stored task name of a SPEC (the harness drops parameters at their defaults)."""
    family_, _, params = wanted.partition("[")
    wanted_params = dict(p.split("=") for p in params.rstrip("]").split(","))
    for task, task_params in frame.drop_duplicates("task")[["task", "task_params"]].itertuples(index=False):
        if task.split("[", 1)[0] == family_ and all(str(task_params.get(k)) == v for k, v in wanted_params.items()):
            return task
    raise AssertionError(f"no stored task for {wanted}")


def test_the_run_writes_analysis_md_into_the_leaderboard_folder(real):
    """`run --suite` with the report key writes ANALYSIS.md beside the leaderboard (nothing
    else in this test writes it)."""
    assert (real["dir"] / "board" / "README.md").exists() and (real["dir"] / "board" / "ANALYSIS.md").exists()
    assert real["page"].startswith("# The `images` suite next to Yosinski et al. 2014")
    assert f"{len(real['frame'])} runs, all ok" in real["page"]


@pytest.mark.parametrize("heading", sorted(TASKS))
def test_layer_tables_match_scipy_and_a_hand_written_holm(real, heading):
    frame, text = real["frame"], section(real["page"], heading)
    task = task_name(frame, TASKS[heading])
    header = [line for line in text.splitlines() if line.startswith("|")][0]
    columns = [c.strip() for c in header.strip("|").split(" | ")][1:]
    rows = table_rows(text)
    refs = {}
    for row in rows:
        k = int(row[0])
        for column in columns:
            plugin, freeze = COLUMNS[column]
            refs[(column, k)] = reference(paired(frame, task, name(plugin, layers=k, freeze=freeze)).to_numpy())
    family(refs)
    for row in rows:
        for column, cell in zip(columns, row[1:]):
            check_cell(cell, refs[(column, int(row[0]))])
    scratch = frame[(frame["task"] == task) & (frame["strategy"] == "scratch")]["target_acc"].mean()
    assert f"(scratch {scratch * 100:.1f}%)" in text.splitlines()[0]


def test_filter_table_is_one_holm_family_over_all_its_cells(real):
    frame, text = real["frame"], section(real["page"], "Filter-wise transfer")
    digits = [task_name(frame, TASKS[h]) for h in sorted(TASKS) if h.startswith("digits")]
    rows = table_rows(text)
    refs = {}
    for row in rows:
        for task in digits:
            refs[(task, row[0])] = reference(paired(frame, task, name("partial-filters", fraction=float(row[0]), freeze=True)).to_numpy())
    family(refs)
    assert f"Holm over the {len(refs)} cells" in text
    for row in rows:
        frozen = row[1::2]  # frozen, fine-tuned per task: only frozen was run
        assert row[2::2] == ["n/a"] * len(digits)
        for task, cell in zip(digits, frozen):
            check_cell(cell, refs[(task, row[0])])


def test_depth_trends_are_per_seed_slopes_tested_over_seeds(real):
    frame, text = real["frame"], section(real["page"], "Trends over depth")
    labels = {"digits 10/class": TASKS["digits 0-4 -> 5-9, 10 target images"],
              "digits 30/class": TASKS["digits 0-4 -> 5-9, 30 target images"], "textures -> digits": TASKS["textures"]}
    plugins = {"AnB": ("partial-layers", True), "AnB+": ("partial-layers", False), "BnB": ("selffer", True)}
    rows = table_rows(text)
    slopes, contrasts = [], []
    for row in rows:
        where, curve = row[0].rsplit(", ", 1)
        task, (plugin, freeze) = task_name(frame, labels[where]), plugins[curve]
        matrix = pd.concat([paired(frame, task, name(plugin, layers=k, freeze=freeze)).rename(k) for k in (1, 2, 3)], axis=1)
        per_seed = np.array([stats.linregress([1, 2, 3], matrix.loc[s].to_numpy()).slope for s in matrix.index])
        slopes.append((reference(per_seed), row))
        contrasts.append(reference((matrix[3] - matrix[1]).to_numpy()))
    for (ref, _), ph in zip(slopes, holm([r["p"] for r, _ in slopes])):
        ref["p_holm"] = ph
    for ref, ph in zip(contrasts, holm([r["p"] for r in contrasts])):
        ref["p_holm"] = ph
    for (slope, row), contrast in zip(slopes, contrasts):
        mean = float(re.match(r"^\**([+-]\d+\.\d+)", row[1]).group(1))
        assert abs(mean - slope["mean"] * 100) <= 0.005 + 1e-9, row
        assert row[2] == f"{slope['below']}/{slope['n']}", row
        assert p_close(row[3].strip("*"), slope["p_holm"]) and row[3].startswith("**") == (slope["p_holm"] < ALPHA), row
        assert abs(float(re.match(r"^\**([+-]\d+\.\d+)", row[4]).group(1)) - contrast["mean"] * 100) <= 0.05 + 1e-9, row
        assert p_close(row[5].strip("*"), contrast["p_holm"]), row


def test_seed_averages_and_their_tost(real):
    frame, text = real["frame"], section(real["page"], "Seed-level averages")
    labels = {"digits 10/class": TASKS["digits 0-4 -> 5-9, 10 target images"],
              "digits 30/class": TASKS["digits 0-4 -> 5-9, 30 target images"], "textures -> digits": TASKS["textures"]}
    plugins = {"AnB+": ("partial-layers", False), "BnB": ("selffer", True)}
    rows = table_rows(text)
    refs = {}
    for row in rows:
        where, curve = row[0].rsplit(", ", 1)
        assert curve != "AnB", "frozen AnB changes with depth: it has no seed average"
        task, (plugin, freeze) = task_name(frame, labels[where]), plugins[curve]
        matrix = pd.concat([paired(frame, task, name(plugin, layers=k, freeze=freeze)) for k in (1, 2, 3)], axis=1)
        refs[row[0]] = reference(matrix.mean(axis=1).to_numpy())
    family(refs)
    for row in rows:
        ref = refs[row[0]]
        assert abs(float(re.match(r"^\**([+-]\d+\.\d+)", row[1]).group(1)) - ref["mean"] * 100) <= 0.005 + 1e-9, row
        assert p_close(row[3].strip("*"), ref["p_holm"]), row
        tost = row[4].replace(" ≡", "").strip("*")
        assert p_close(tost, ref["tost_holm"]) and row[4].endswith("≡") == (ref["tost_holm"] < ALPHA), row


# --------------------------------------------------------------------------- sentences follow the numbers


N_TEST = 2000  # accuracies are whole test images out of this (fine enough for 0.1 pp noise)


def synthetic_store(tmp_path: Path, deep_frozen: float, fine_tuned: float) -> pd.DataFrame:
    """The reduced suite's digits runs written through the store API, with known effects: the
    deepest frozen AnB cell `deep_frozen` (accuracy units) from scratch, every fine-tuned AnB+
    cell `fine_tuned`, everything else zero; per-run noise of 0.1 pp from generators derived
    from (seed, role), so stores built with other effects share their noise seed by seed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "mini.toml"
    path.write_text(HEAD + DIGITS)
    specs = expand(load_suite(str(path)), default_registry())
    results = []
    for spec in specs:
        values = spec.strategy.values
        scratch = 0.90 + np.random.default_rng(derive_seed(spec.seed, "test-images-report-scratch")).normal(0, 0.01)
        effect = 0.0
        if spec.strategy.name == "partial-layers":
            effect = fine_tuned if not values["freeze"] else deep_frozen if values["layers"] == 3 else 0.0
        noise = 0.0 if spec.strategy.name == "scratch" else np.random.default_rng(
            derive_seed(spec.seed, f"test-images-report-{spec.strategy.instance_name}")).normal(0, 0.001)
        acc = round(min(max(scratch + effect + noise, 0.0), 1.0) * N_TEST) / N_TEST
        results.append(RunResult.for_spec(spec, status="ok", source_acc=0.99, target_acc=acc, target_train_acc=1.0,
                                          source_seconds=0.01, target_seconds=0.01, diagnostics={}, path="batched"))
    with Store(tmp_path / "synthetic.db") as store:
        store.write_rows([store.row(r) for r in results])
        return store.frame()


def paragraph(page: str, start: str) -> str:
    return next(p for p in page.split("\n\n") if p.startswith(start))


def test_the_frozen_depth_sentence_follows_the_sign_of_the_deep_cells(tmp_path):
    """Six points below scratch at the deepest frozen k is 'reproduced in direction' with the
    losses quoted as computed here; six points above is 'not reproduced even in direction'."""
    hurt_frame = synthetic_store(tmp_path / "a", deep_frozen=-0.06, fine_tuned=0.0)
    hurt = paragraph(images.render(hurt_frame), "**Frozen deep layers")
    helped = paragraph(images.render(synthetic_store(tmp_path / "b", deep_frozen=+0.06, fine_tuned=0.0)), "**Frozen deep layers")
    assert hurt.startswith("**Frozen deep layers fall below scratch: reproduced in direction")
    costs = [float(x) for x in re.search(r"costs (\d+\.\d) and (\d+\.\d) points", hurt).groups()]
    expected = [-paired(hurt_frame, task, name("partial-layers", layers=3, freeze=True)).mean() * 100
                for task in sorted(hurt_frame["task"].unique(), key=lambda t: ("n_target" in t, t))]
    assert costs == pytest.approx(expected, abs=0.05 + 1e-9)
    assert helped.startswith("**Frozen deep layers fall below scratch: not reproduced even in direction")
    assert re.search(r"changes accuracy by \+\d+\.\d and \+\d+\.\d points", helped)


def test_the_fine_tuned_verdict_follows_the_numbers(tmp_path):
    """A six-point gain of every fine-tuned cell is 'above scratch' after Holm; no gain is
    'equivalent' (TOST within ±1 pp); the page says so, and the Holm decision is the
    hand-written one."""
    frame_up = synthetic_store(tmp_path / "up", deep_frozen=0.0, fine_tuned=0.06)
    frame_same = synthetic_store(tmp_path / "same", deep_frozen=0.0, fine_tuned=0.0)
    up, same = images.render(frame_up), images.render(frame_same)
    head_up, head_same = paragraph(up, "**Fine-tuned transfer"), paragraph(same, "**Fine-tuned transfer")
    assert head_up.startswith("**Fine-tuned transfer vs scratch: above scratch with 10 target images per class and with 30")
    assert head_same.startswith("**Fine-tuned transfer vs scratch: equivalent with 10 target images per class and with 30")
    # the same decisions from scipy and the hand-written Holm over the seed averages
    for frame, expect_up in ((frame_up, True), (frame_same, False)):
        averages = {}
        for task in sorted(frame["task"].unique()):
            for plugin, freeze in (("partial-layers", False), ("selffer", True)):
                m = pd.concat([paired(frame, task, name(plugin, layers=k, freeze=freeze)) for k in (1, 2, 3)], axis=1)
                averages[(task, plugin)] = reference(m.mean(axis=1).to_numpy())
        family(averages)
        anb_plus = [r for (task, plugin), r in averages.items() if plugin == "partial-layers"]
        assert all((r["p_holm"] < ALPHA) == expect_up for r in anb_plus)
        assert all((r["tost_holm"] < ALPHA) == (not expect_up) for r in anb_plus)


def test_the_page_is_rewritten_only_when_its_text_changes(tmp_path):
    frame = synthetic_store(tmp_path, deep_frozen=-0.06, fine_tuned=0.0)
    out = tmp_path / "board"
    out.mkdir()
    [page] = images.write_report(frame, out)
    first = page.stat().st_mtime_ns
    os.utime(page, ns=(first - 10**9, first - 10**9))
    images.write_report(frame, out)
    assert page.stat().st_mtime_ns == first - 10**9, "same results, same bytes: the file is left alone"
    moved = frame.copy()
    moved.loc[moved["strategy"] == "partial-layers[layers=3,freeze=True]", "target_acc"] += 0.12
    images.write_report(moved, out)
    assert page.read_text() == images.render(moved) != images.render(frame)


def test_a_task_whose_baseline_failed_gets_no_layer_table_and_no_crash(tmp_path):
    """Without a paired difference (scratch failed on a task) that task's layer table has no
    cell: the page leaves the table out instead of failing to summarise it."""
    df = synthetic_store(tmp_path, deep_frozen=-0.06, fine_tuned=0.0)
    first = sorted(df["task"].unique())[0]
    failed = df.copy()
    failed.loc[(failed["task"] == first) & (failed["strategy"] == "scratch"), "status"] = "failed"
    whole, page = images.render(df), images.render(failed)
    assert whole.count("| k | AnB (frozen)") == page.count("| k | AnB (frozen)") + 1
