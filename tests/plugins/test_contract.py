"""The plugin contract on every registered strategy and task, built-in or installed (the way
benchopt's generic tests run on any benchmark), that the checks catch what they claim to, and
that a pip-installed package adds plugins through entry points."""

from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from test_image_datasets import write_cifar10, write_cifar100, write_image_folder, write_mnist

from ptbench.api import Strategy, TransferPlan
from ptbench.contract import (
    STRATEGY_CHECKS,
    CheckEnv,
    check_name,
    check_name_of,
    check_param_grid,
    check_plan_deterministic,
    check_plan_shapes,
    check_source_unmodified,
    check_task_deterministic,
    checks_for,
    run_check,
)
from ptbench.registry import default_registry
from ptbench.results.store import Store
from ptbench.tasks.signal_noise import SignalNoise

REGISTRY = default_registry()


@pytest.fixture(scope="module")
def env() -> CheckEnv:
    return CheckEnv(REGISTRY)


@pytest.fixture(scope="module")
def disk_data(tmp_path_factory) -> Path:
    """Small files in the official formats, written by the dataset tests' own writers, so the
    on-disk tasks' checks run instead of being counted without running."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "mnist", n_train=600, n_test=100)
    write_mnist(root / "fashion-mnist", n_train=600, n_test=100, gz=True)
    write_cifar10(root, per_batch=120)
    write_cifar100(root, n=3000)
    write_image_folder(root / "images", {"a": 30, "b": 30, "c": 30, "d": 30})
    return root


def outcome(result) -> None:
    """A check that could not run is skipped with its reason; one that ran must pass."""
    if result.passed is None:
        pytest.skip(f"{result.check} not applicable: {result.detail}")
    assert result.passed, f"{result.check}: {result.detail}"


def trains_while_planning(cls: type) -> bool:
    """A strategy whose `plan_with_data` trains models (auto-fraction: its candidates): its
    checks plan it many times, seconds each, so they run with the slow set, and choosing its
    capability checks (which plans it too) waits until they run."""
    return issubclass(cls, Strategy) and cls.plan_with_data is not Strategy.plan_with_data


def cases(kind: str) -> list:
    table = getattr(REGISTRY, kind)
    out = []
    for name in sorted(table):
        cls = table[name]
        slow = trains_while_planning(cls)
        for check in STRATEGY_CHECKS if slow else checks_for(cls):
            out.append(pytest.param(cls, check, id=f"{name}-{check_name_of(check)}", marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("cls, check", cases("strategies"))
def test_every_registered_strategy_keeps_the_contract(cls, check, env):
    if check not in checks_for(cls):
        pytest.skip(f"{check_name_of(check)}: {cls.name} lacks the capability it checks (ptbench.contract.CAPABILITY)")
    outcome(run_check(check, cls, env))


@pytest.mark.parametrize("cls, check", cases("tasks"))
def test_every_registered_task_keeps_the_contract(cls, check, env, disk_data, monkeypatch):
    monkeypatch.setenv("PTBENCH_DATA", str(disk_data))
    result = run_check(check, cls, env)
    outcome(result)
    assert "not checked" not in result.detail and "data not checked" not in result.detail, result.detail


# --------------------------------------------------------------------------- the checks can fail


class WrongShape(Strategy):
    name = "wrong-shape"

    def plan(self, source, target, rng):
        return TransferPlan(copy={name: torch.ones(3, dtype=torch.bool) for name, _ in target.named_parameters()})


class Vandal(Strategy):
    name = "vandal"

    def plan(self, source, target, rng):
        with torch.no_grad():
            for p in source.parameters():
                p.mul_(0.5)
        return TransferPlan.full(source, target)


class Dice(Strategy):
    name = "dice"

    def plan(self, source, target, rng):
        return TransferPlan.filters(source, target, 0.5, rng=torch.Generator().manual_seed(int(torch.randint(1 << 30, ()))))


class BadGrid(Strategy):
    name = "bad-grid"
    params = {"plan": [1]}


class CommaGrid(Strategy):
    name = "comma-grid"
    params = {"layers": ["a,b", "c"]}


class Taken(Strategy):
    name = "full"


class OrderDependent(SignalNoise):
    """Target data drawn from a stream the source draw advances: pairing breaks."""

    name = "order-dependent"
    params = {**SignalNoise.params, "d": [20], "n_test": [10], "n_source": [10], "n_target": [10]}

    def data(self, role, streams):
        self._shared = getattr(self, "_shared", None) or streams.torch("all")
        dirs = self.directions(streams)
        train, position = self.sample(self.side(role)["n"], role, dirs, self._shared, 0.0)
        test, _ = self.sample(self.n_test, role, dirs, self._shared, 0.0)
        from ptbench.api import TaskData

        return TaskData(train, test, {"directions": dirs, "signal_position": position, "v_index": self.side(role)["v"]})


@pytest.mark.parametrize(
    "check, cls, words",
    [
        (check_plan_shapes, WrongShape, "shape (3,)"),
        (check_source_unmodified, Vandal, "changed the source (donor) model"),
        (check_plan_deterministic, Dice, "differ"),
        (check_param_grid, BadGrid, "would hide Strategy.plan"),
        (check_param_grid, CommaGrid, "does not parse back"),
        (check_name, Taken, "already taken by built-in"),
        (check_task_deterministic, OrderDependent, "target train data differ"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, str) else None,
)
def test_a_check_fails_a_plugin_that_breaks_it_and_says_why(check, cls, words, env):
    result = run_check(check, cls, env)
    assert result.passed is False
    assert words in result.detail


def test_a_plugin_error_becomes_a_one_line_failure_not_a_crash(env):
    class Broken(Strategy):
        name = "broken"

        def plan(self, source, target, rng):
            raise KeyError("no such layer")

    result = run_check(check_plan_shapes, Broken, env)
    assert result.passed is False and result.detail.startswith("KeyError: 'no such layer' (at test_contract.py:")


# --------------------------------------------------------------------------- entry points

PACKAGE = '''
"""An installed plugin package: one strategy module, one task class."""
from ptbench.api import Strategy, TransferPlan
from ptbench.tasks.signal_noise import SignalNoise


class HalfFrozen(Strategy):
    """Copy half the filters and freeze them."""

    name = "half-frozen"

    def plan(self, source, target, rng):
        return TransferPlan.filters(source, target, 0.5, rng=rng, freeze=True)


class TinySignal(SignalNoise):
    """A tiny signal-noise task."""

    name = "tiny-signal"
    params = {**SignalNoise.params, "d": [50], "m": [6], "n_source": [40], "n_target": [20], "n_test": [100], "steps": [40]}
'''


@pytest.mark.slow  # a real process (or a whole report with plots): seconds, not milliseconds
def test_an_installed_package_adds_a_strategy_and_a_task_through_entry_points(tmp_path):
    site = tmp_path / "site"
    (site / "ptb_extra").mkdir(parents=True)
    (site / "ptb_extra" / "__init__.py").write_text(PACKAGE)
    info = site / "ptb_extra-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ptb-extra\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ptbench.strategies]\nextra = ptb_extra\n\n[ptbench.tasks]\ntiny = ptb_extra:TinySignal\n"
    )
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}

    def ptbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ptbench", *args], cwd=tmp_path, env=environ,
                              capture_output=True, text=True, timeout=300)

    listed = ptbench("list")
    assert listed.returncode == 0, listed.stderr
    assert "half-frozen" in listed.stdout and "tiny-signal" in listed.stdout
    ran = ptbench("run", "--task", "tiny-signal", "--strategy", "scratch", "--strategy", "half-frozen",
                  "--seeds", "2", "--store", "r.db", "--leaderboard", "lb", "--quiet")
    assert ran.returncode == 0, ran.stderr
    with Store(tmp_path / "r.db") as store:
        runs = store.frame()
    assert sorted(set(runs["strategy"])) == ["half-frozen", "scratch"]
    assert set(runs["task"]) == {"tiny-signal"} and set(runs["status"]) == {"ok"} and len(runs) == 4
    assert "half-frozen" in (tmp_path / "lb" / "README.md").read_text()
