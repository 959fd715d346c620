"""Shared fixtures: small signal-noise variants, the registry, and a way to run the CLI.

The tests train real models, so they keep them tiny (d=100, m=10, a hundred steps): each
training run takes a fraction of a second on one core.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from pathlib import Path
import torch

from ptbench.registry import Registry, default_registry
from ptbench.tasks.signal_noise import SignalNoise

# The models here are tiny: on a busy machine torch's intra-op threads cost far more (tens
# of times) than they save, so the whole test session runs torch on one thread.
torch.set_num_threads(1)

#: A signal-noise variant that trains in a fraction of a second and is easy to learn:
#: strong shared signal, modest noise, enough source data.
SMALL_TASK: dict[str, Any] = dict(
    d=100,
    m=10,
    shared=2.0,
    specific=1.0,
    source_noise=0.5,
    target_noise=1.0,
    n_source=100,
    n_target=40,
    n_test=200,
    steps=100,
)


def small_task(**overrides: Any) -> SignalNoise:
    """A SignalNoise instance with SMALL_TASK's values, `overrides` on top."""
    return SignalNoise(**{**SMALL_TASK, **overrides})


def small_task_spec(**overrides: Any) -> str:
    """The same variant as a command-line SPEC, e.g. signal-noise[d=100,...]."""
    values = {**SMALL_TASK, **overrides}
    return "signal-noise[" + ",".join(f"{k}={v}" for k, v in values.items()) + "]"


@pytest.fixture(scope="session")
def make_task() -> Callable[..., SignalNoise]:
    return small_task


@pytest.fixture(scope="session")
def task_spec() -> Callable[..., str]:
    return small_task_spec


@pytest.fixture(scope="session")
def registry() -> Registry:
    return default_registry()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path) -> Callable[..., CliResult]:
    """Run `python -m ptbench ARGS` in this process (from tmp_path, so nothing lands in the
    repository) and return its exit status and output."""
    from ptbench.cli import main

    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own errors and --help exit this way
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def cli_subprocess(tmp_path) -> Callable[..., CliResult]:
    """Run `python -m ptbench ARGS` as a separate process, the way a user does."""

    def invoke(*args: str) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "ptbench", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return invoke


def make_result(task: str = "toy", strategy: str = "scratch", seed: int = 0, **fields: Any):
    """A RunResult as the runner would produce it, with the given accuracies (for store and
    leaderboard tests that need known numbers rather than trained ones)."""
    from ptbench.api import RunResult

    defaults: dict[str, Any] = dict(
        task_params={"d": 100},
        strategy_params={},
        status="ok",
        source_acc=0.9,
        target_acc=0.8,
        target_train_acc=1.0,
        source_seconds=0.5,
        target_seconds=0.25,
    )
    defaults.update(fields)
    return RunResult(task=task, strategy=strategy, seed=seed, key=f"{task}|{strategy}|{seed}", **defaults)


@pytest.fixture(scope="session")
def result() -> Callable[..., Any]:
    return make_result


def pytest_collection_modifyitems(config, items):
    """tests/integration/ (subprocesses, dask, a browser) and any test that starts a real
    ptbench process (the `cli_subprocess` fixture) are `slow`: `pytest -m "not slow"` is the
    fast loop, `pytest` runs everything."""
    integration = Path(__file__).parent / "integration"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(integration) or "cli_subprocess" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
