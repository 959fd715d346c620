"""The signal-noise task's feature-learning diagnostics as the harness stores them: signal
learning along u, v_1, v_2 and noise memorisation, split into inherited and fresh filters,
and their trajectories when `trace` > 0."""

from __future__ import annotations

import pytest
import torch

from ptbench.api import RunSpec
from ptbench.errors import PtbenchError
from ptbench.spec import parse_spec
from ptbench.rng import RandomStreams
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups


def run(registry, task, *strategies: str, seed: int = 0) -> dict:
    """Train one group; {strategy instance name: RunResult}."""
    instances = []
    for spec in strategies:
        name, fixed = parse_spec(spec)
        instances += registry.strategy(name).expand(fixed)
    specs = [RunSpec(task, s, seed) for s in instances]
    results = {r.strategy: r for r in run_groups([group_specs(specs)[0]], RunOptions(batched=False))}
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    return results


def test_a_strong_shared_signal_is_what_the_source_filters_learn(registry, make_task):
    task = make_task(shared=2.0, specific=0.5, label_flip=0.0)
    source = run(registry, task, "full")["full"].diagnostics["source"]
    # oriented signal learning: class +1 filters along +u, class -1 along -u
    assert source["u_mean_all"] > 0.5
    assert source["u_max_all"] > 3 * source["v1_max_all"]
    # the source never sees v_2: its filters stay at their initial scale along it
    assert abs(source["v2_mean_all"]) < 0.05 * source["u_mean_all"]
    assert source["noise_all"] > 0


def test_untrained_filters_have_learned_nothing(make_task):
    task = make_task()
    streams = RandomStreams(0)
    data = task.data("source", streams)
    model = task.model("source", streams.torch("source-init"))
    diag = task.diagnostics(model, data, None)
    assert set(diag) == {f"{q}_{s}_all" for q in ("u", "v1", "v2") for s in ("max", "mean")} | {"noise_all"}
    for q in ("u", "v1", "v2"):
        assert abs(diag[f"{q}_mean_all"]) < 0.05  # sigma0 = 0.01: random signs, tiny
    assert diag["noise_all"] < 1.0


def test_a_plan_splits_filters_into_inherited_and_fresh(registry, make_task):
    task = make_task()
    results = run(registry, task, "scratch", "partial-filters[fraction=0.5,freeze=false]")
    scratch = results["scratch"].diagnostics["target"]
    partial = results["partial-filters[fraction=0.5,freeze=False]"].diagnostics["target"]
    assert not any(k.endswith(("_inherited", "_fresh")) for k in scratch)  # nothing copied
    for group in ("inherited", "fresh"):
        for key in ("u_max", "u_mean", "v1_max", "v1_mean", "v2_max", "v2_mean", "noise"):
            assert f"{key}_{group}" in partial
    # inherited filters start from the source's u-aligned filters, fresh ones from scratch
    assert partial["u_mean_inherited"] > partial["u_mean_fresh"]
    # the max over all filters is the larger of the two groups' maxima
    assert partial["u_max_all"] == pytest.approx(max(partial["u_max_inherited"], partial["u_max_fresh"]))


def test_trajectories_are_recorded_only_when_trace_is_on(registry, make_task):
    quiet = run(registry, make_task(steps=40), "partial-filters[fraction=1.0,freeze=true]")
    assert "trajectory" not in next(iter(quiet.values())).diagnostics
    traced = run(registry, make_task(steps=40, trace=10), "partial-filters[fraction=1.0,freeze=true]")
    diag = next(iter(traced.values())).diagnostics
    source, target = diag["trajectory"]["source"], diag["trajectory"]["target"]
    assert [r["step"] for r in source] == [0, 10, 20, 30, 40]
    assert [r["step"] for r in target] == [0, 10, 20, 30, 40]
    # the source learns: its u alignment grows over training
    assert source[-1]["u_max_all"] > 5 * source[0]["u_max_all"]
    # every filter inherited and frozen: the target starts where the source ended, and stays
    assert target[0]["u_max_inherited"] == pytest.approx(diag["source"]["u_max_all"], rel=1e-5)
    assert all(r["u_max_inherited"] == pytest.approx(target[0]["u_max_inherited"]) for r in target)
    assert "u_max_fresh" not in target[0]  # no fresh filters at fraction 1
    assert target[-1] == {"step": 40, **diag["target"]}  # the last record is the stored end state


def test_noise_memorisation_grows_when_training_is_harmful(registry, make_task):
    # few examples, much noise, weak signal in high dimension: the model fits its
    # training set by memorising noise patches
    task = make_task(d=400, shared=0.3, specific=0.3, source_noise=1.0, n_source=20, steps=60, trace=20)
    source = run(registry, task, "full")["full"].diagnostics["trajectory"]["source"]
    assert source[-1]["noise_all"] > 3 * source[0]["noise_all"]
    assert source[-1]["noise_all"] > 10 * source[-1]["u_max_all"]


def test_trace_must_not_be_negative(make_task):
    with pytest.raises(PtbenchError, match="trace"):
        make_task(trace=-5)
    assert make_task(trace=7).trace_every() == 7
    assert make_task().trace_every() == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_diagnostics_follow_the_model_to_its_device(make_task):
    task = make_task()
    streams = RandomStreams(0)
    data = task.data("source", streams).to("cuda")
    model = task.model("source", streams.torch("source-init")).to("cuda")
    assert task.diagnostics(model, data, None)["noise_all"] > 0
