"""The paper suite's report on a synthetic runs frame (no training): a miniature of the suite
whose gains follow a known law, so that what the report must find is known; and the
signal-noise parameters the suite added (target_signal, overlap), which leave every default
task drawing exactly what it drew before they existed."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from ptbench.api import RunResult
from ptbench.errors import PtbenchError
from ptbench.rng import RandomStreams
from ptbench.tasks.signal_noise.task import SignalNoise

pytest.importorskip("matplotlib")

from ptbench.reports import paper, paper_claims, paper_scalars  # noqa: E402
from ptbench.results.store import Store  # noqa: E402
from ptbench.sweep.plan import expand, load_suite  # noqa: E402

BASE = "d=500,steps=300,n_target=20,target_signal=2.0"
MINI = f"""
description = "a synthetic miniature of the paper suite"
seeds = 5
report = "ptbench.reports.paper:write_report"

[[sweep]]
tasks = ["signal-noise[{BASE},shared=[0.25,0.5,1.0,2.0],n_source=[25,100,400]]"]
strategies = ["scratch", "partial-filters[fraction=[0.25,0.5,1.0],freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=100,shared=[0.25,0.5,1.0,2.0],source_noise=[0.5,1.0,2.0]]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=100,shared=[0.25,2.0]]"]
strategies = ["partial-filters[fraction=0.0,freeze=[false,true]]", "random-filters[fraction=0.5]",
              "project-out[fraction=0.5,direction=[v1,u,v2]]"]

[[sweep]]
tasks = ["signal-noise[{BASE},n_source=100,shared=[0.25,2.0],label_flip=[0.0,0.2]]",
         "signal-noise[{BASE},n_source=100,shared=[0.25,2.0],specific=[0.0,3.0]]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]

[[sweep]]
tasks = ["signal-noise[d=250,steps=300,n_source=50,n_target=10,target_signal=2.0,shared=[0.5,1.0]]",
         "signal-noise[d=500,steps=300,n_source=100,n_target=20,target_signal=2.0,shared=[0.5,1.0]]",
         "signal-noise[d=1000,steps=300,n_source=200,n_target=40,target_signal=2.0,shared=[0.5,1.0]]"]
strategies = ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"]
"""
N_TEST = 2000
THRESHOLD_U2 = 0.4  # the law: the gain's sign is the sign of |u|^2 - 0.4


def synthetic_gain(task: dict, strategy: str, params: dict, rng: np.random.Generator) -> float:
    """Transfer helps when |u|^2 > 0.4 and hurts below, by an amount that grows with
    n_source and the fraction (so "more source data helps" reverses at small |u|); random
    filters and removing u cost, removing v1 or v2 changes nothing; label flip does nothing."""
    name = strategy.split("[", 1)[0]
    u, n1, s1, d = task["shared"], task["n_source"], task["source_noise"], task["d"]
    noise = rng.normal(0, 0.004 * math.sqrt(500 / d))
    if name == "scratch" or params.get("fraction", 1.0) == 0:
        return 0.0
    scale = (n1 / 100) ** 0.3 / s1**0.3 * (1 + params.get("fraction", 0.5))
    base = 0.02 * math.log(u * u / THRESHOLD_U2) * scale
    if name == "random-filters":
        return -0.01 + noise
    if name == "project-out" and params["direction"] == "u":
        return base - 0.03 + noise
    if params.get("freeze"):
        base *= 1.2
    return base + noise


def synthetic_rows(suite_text: str, tmp_path) -> tuple[list[RunResult], object]:
    path = tmp_path / "mini.toml"
    path.write_text(suite_text)
    from ptbench.registry import default_registry

    specs = expand(load_suite(str(path)), default_registry())
    rng = np.random.default_rng(0)
    results = []
    for spec in specs:
        task, strategy = spec.task.values, spec.strategy
        seed_rng = np.random.default_rng([spec.seed, 7])
        scratch = 0.80 + seed_rng.normal(0, 0.01)
        gain = synthetic_gain(task, strategy.instance_name, strategy.values, rng)
        acc = round(min(max(scratch + gain, 0.0), 1.0) * N_TEST) / N_TEST
        diag = {"source": {}, "target": {"noise_inherited": 9.2, "noise_fresh": 9.6, "u_max_inherited": 0.04, "v1_max_inherited": 0.49}}
        results.append(RunResult.for_spec(spec, status="ok", source_acc=0.9, target_acc=acc, target_train_acc=1.0,
                                          source_seconds=0.01, target_seconds=0.01, diagnostics=diag, path="batched"))
    return results, path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    results, suite = synthetic_rows(MINI, tmp)
    store_path = tmp / "runs.db"
    with Store(store_path) as store:
        store.write_rows([store.row(r) for r in results])
        runs = store.frame()
    out = tmp / "out"
    written = paper.write_report(runs, out)
    return {"out": out, "runs": runs, "written": written, "store": store_path, "suite": suite,
            "page": (out / "paper.md").read_text(), "json": json.loads((out / "paper.json").read_text())}


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_writes_the_page_the_json_and_the_new_plots(report):
    names = {p.name for p in report["written"]}
    assert {"paper.md", "paper.json", "paper-heatmap-n_source.png", "paper-heatmap-source_noise.png", "paper-scaling.png",
            "paper-controls.png", "paper-factors.png"} <= names
    for path in report["written"]:
        assert path.stat().st_size > 1000, path


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_the_page_names_its_correction_and_margins(report):
    page = report["page"]
    assert "Holm's step-down" in page and "Benjamini-Hochberg" in page
    assert "TOST" in page and "±2 pp" in page and "one test example" in page


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_the_json_lists_every_candidate_with_formula_threshold_and_cv_accuracy(report):
    data = report["json"]
    assert data["correction"]["method"] == "holm"
    for mode in ("fine-tuned", "frozen"):
        m = data["modes"][mode]
        keys = {c["key"] for c in m["candidates"]}
        assert keys == {c.key for c in paper_scalars.CANDIDATES}
        for c in m["candidates"]:
            assert c["formula"] and set(c["logistic"]) == {"intercept", "slope_log_scalar"}
            assert 0 <= c["cv_sign_accuracy"] <= 1 and len(c["threshold_interval_95"]) == 2
        assert m["best"] in keys and m["per_cell_majority_accuracy"] >= m["full_factor"]["sign_accuracy"] - 1e-9
    assert data["best"]["overall"] in {c.key for c in paper_scalars.CANDIDATES}


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_the_scalar_fit_finds_the_law(report):
    """The sign follows |u|^2 against 0.4: M = |u|^2 must classify (nearly) every seed, its
    threshold must cover 0.4 (the grid's |u|^2 levels bracket it: 0.25 and 1), and it must
    beat Kou et al.'s R, which mixes in n_source and the noise."""
    m = report["json"]["modes"]["fine-tuned"]
    by = {c["key"]: c for c in m["candidates"]}
    assert by["M"]["cv_sign_accuracy"] > 0.97 > by["R"]["cv_sign_accuracy"]
    low, high = by["M"]["threshold_interval_95"]
    assert 0.25 <= low <= high <= 1.0


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_every_significant_reversal_is_in_the_text(report):
    """"More source data helps" is reversed at |u| = 0.25 and 0.5 by construction; every
    Holm-significant reversal the claims module finds has a row in the page's table."""
    df = paper.prepare(report["runs"])
    claims = {c.key: c for c in paper_claims.directional_claims(df)}
    claim = claims["n_source"]
    reversed_ = claim.reversed + claim.steps_reversed
    assert claim.reversed and all(t.info["row"]["p_shared"] <= 0.5 for t in claim.reversed)
    section = report["page"].split("Every significant reversal of “more source data helps the target”", 1)[1].split("**Result:**", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| end to end") or line.startswith("| step")]
    assert len(rows) == len(reversed_)
    assert "none goes significantly against it" in report["page"].split("“a larger shared signal", 1)[1].split("\n", 1)[0] or \
        "go significantly against it" in report["page"]


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_no_effect_is_said_only_after_a_tost(report):
    page = report["page"]
    # label flip does nothing in the law: somewhere it is shown unchanged, by TOST
    flip = page.split("**Result:** label flip", 1)[1].split("\n", 1)[0]
    assert "unchanged within ±2 pp (TOST p" in flip
    for match in re.finditer(r"unchanged within ±[\d.]+ pp[^(]*\(TOST p ([^)]+)\)", page):
        p = match.group(1)
        assert p.startswith("<") or float(p) < 0.05


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_a_claimed_effect_has_a_corrected_interval_that_supports_it(report):
    pattern = re.compile(r"(raises|lowers) the (?:gain|target) by ([+-]?\d+\.\d) pp \[([+-]?\d+\.\d), ([+-]?\d+\.\d)\] \(Holm p ([^)]+)\)")
    found = 0
    for match in pattern.finditer(report["page"]):
        word, mean, low, high, p = match.groups()
        low, high = float(low), float(high)
        assert (low >= 0) if word == "raises" else (high <= 0), match.group(0)
        assert p.startswith("<") or float(p) < 0.05, match.group(0)
        found += 1
    assert found >= 3


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_controls_and_scaling_sections_read_the_law(report):
    page = report["page"]
    controls = page.split("## 10.", 1)[1]
    assert "removing u lowers the target" in controls
    assert "removing the placebo v₂ leaves it unchanged within ±2 pp" in controls
    scaling = page.split("## 9.", 1)[1].split("## 10.", 1)[0]
    assert "SD over seeds" in scaling and "d=250" in scaling and "d=1000" in scaling


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_the_verdicts_say_where_the_paper_fails(report):
    verdicts = report["page"].split("## The paper's claims, checked", 1)[1].split("**How the numbers", 1)[0]
    assert "more source data helps the target" in verdicts and "fails in part" in verdicts
    assert "negative transfer exists" in verdicts


@pytest.mark.slow  # a second full report (the fixture's is the first)
def test_the_report_regenerates_from_the_store_alone(report, cli, tmp_path):
    res = cli("report", "--suite", str(report["suite"]), "--store", str(report["store"]), "--out", str(tmp_path / "again"))
    assert res.code == 0, res.err
    again = (tmp_path / "again" / "paper.md").read_text()
    strip = lambda text: re.sub(r"first to last stored run: [\d.]+ min", "", text)  # noqa: E731
    assert strip(again) == strip(report["page"])
    assert json.loads((tmp_path / "again" / "paper.json").read_text()) == report["json"]


@pytest.mark.slow  # shares the `report` fixture: a whole report with plots, written once (seconds)
def test_holm_families_in_the_heatmap_hatch_only_significant_cells(report):
    df = paper.prepare(report["runs"])
    plane = paper.heatmap_slice(df, "n_source")
    sel = plane[(plane["family"] == "partial-filters") & (plane["fraction"] == 0.5)]
    tested = [paper_claims.gain_cell(g) for _, g in sel.groupby(["task", "freeze"])]
    paper_claims.correct(tested)
    section = report["page"].split("## 2.", 1)[1].split("## 3.", 1)[0]
    assert f"below zero (Holm) in {sum(t.down for t in tested if True) // 1}" in section or "below zero (Holm)" in section
    assert "Holm-corrected gain below 0" not in section  # the legend lives in the plot, the text says Holm


# --------------------------------------------------------------------------- task parameters


def _digest(task: SignalNoise, seed: int) -> str:
    h = hashlib.sha256()
    streams = RandomStreams(seed)
    for role in ("source", "target"):
        data = task.data(role, streams)
        for t in (data.train.x, data.train.y, data.test.x, data.test.y, data.extras["directions"], data.extras["signal_position"]):
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# sha256 of every tensor a task draws, computed with the task as it was before target_signal
# and overlap existed (same parameters): the defaults must draw exactly the same data
GOLDEN = {0: "a1381e923874b439", 1: "84fed58142abea2b", 2: "902d0aa858c27fd3"}


@pytest.mark.parametrize("seed", sorted(GOLDEN))
def test_default_new_parameters_draw_the_same_data_bit_for_bit(seed):
    task = SignalNoise(d=60, patches=3, n_source=30, n_target=12, n_test=40, shared=0.7, specific=1.3, target_noise=0.8)
    assert task.target_signal is None and task.overlap == 0.0
    assert _digest(task, seed) == GOLDEN[seed]
    explicit = SignalNoise(d=60, patches=3, n_source=30, n_target=12, n_test=40, shared=0.7, specific=1.3, target_noise=0.8, overlap=0.0)
    assert _digest(explicit, seed) == GOLDEN[seed]


def test_target_signal_holds_the_targets_signal_norm():
    for u in (0.25, 1.0, 2.0):
        task = SignalNoise(d=50, shared=u, target_signal=2.0, n_target=30, label_flip=0.0)
        data = task.data("target", RandomStreams(0))
        patch = data.train.x[torch.arange(30), data.extras["signal_position"]]
        assert torch.allclose(patch.norm(dim=1), torch.full((30,), 2.0), atol=1e-5)
        assert task.side("target")["specific"] == pytest.approx(math.sqrt(4 - u * u))
        # the source is untouched: |v_1| is still `specific`
        assert task.side("source")["specific"] == 1.0


def test_overlap_tilts_v2_towards_v1_and_keeps_the_noise_orthogonal():
    task = SignalNoise(d=80, overlap=0.6, n_target=200)
    data = task.data("target", RandomStreams(1))
    dirs = data.extras["directions"]
    assert float(dirs[1] @ dirs[2]) == pytest.approx(0.6, abs=1e-6)
    assert float(dirs[0] @ dirs[2]) == pytest.approx(0.0, abs=1e-6) and float(dirs[2].norm()) == pytest.approx(1.0, abs=1e-6)
    x, pos = data.train.x, data.extras["signal_position"]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[torch.arange(len(x)), pos] = False
    noise = x[mask]
    assert (noise @ dirs[2]).abs().max() < 1e-4 and (noise @ dirs[0]).abs().max() < 1e-4
    # the source's v_1 and u are the orthogonal draw's
    plain = SignalNoise(d=80, n_target=200).data("target", RandomStreams(1)).extras["directions"]
    assert torch.equal(dirs[:2], plain[:2])


@pytest.mark.parametrize("values, message", [
    ({"shared": 2.0, "target_signal": 1.0}, "smaller than shared"),
    ({"target_signal": 2.0, "target_specific": 1.0}, "not both"),
    ({"target_signal": -1.0}, "non-negative"),
    ({"overlap": 1.0}, r"\[0, 1\)"),
    ({"overlap": -0.2}, r"\[0, 1\)"),
])
def test_bad_new_parameters_are_user_errors(values, message):
    with pytest.raises(PtbenchError, match=message):
        SignalNoise(**values)


def test_the_paper_suite_holds_the_target_and_sweeps_every_factor(registry):
    suite = load_suite("paper")
    specs = expand(suite, registry)
    assert suite.seeds == 20
    tasks = {s.task.key: s.task.values for s in specs}
    untraced = [v for v in tasks.values() if not v["trace"]]
    assert all(v["target_signal"] == 2.0 for v in untraced)
    levels = lambda key: {v[key] for v in untraced}  # noqa: E731
    assert 0.0 in levels("specific") and len(levels("specific")) >= 3
    for key in ("n_target", "target_noise", "label_flip", "overlap"):
        assert len(levels(key)) >= 3, key
    assert {250, 4000} <= levels("d") and len(levels("d")) >= 4
    assert all(v["n_source"] * 5 == v["d"] for v in untraced if v["d"] != 500)
    strategies = {s.strategy.instance_name for s in specs}
    assert {"random-filters[fraction=0.5]", "project-out[fraction=0.5,direction=v1]"} <= strategies
    # alpha is crossed with n_source and with the source noise
    crossed = {(s.task.values["n_source"], s.task.values["source_noise"], s.strategy.values.get("fraction"))
               for s in specs if s.strategy.name == "partial-filters"}
    assert {(n, 1.0, f) for n in (25, 400) for f in (0.25, 1.0)} <= crossed
    assert {(100, sn, f) for sn in (0.5, 2.0) for f in (0.25, 1.0)} <= crossed
