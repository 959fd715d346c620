"""The cifar suite end to end, in a real process, on a small CIFAR-10 copy written here in the
official python format (random pixels: this checks the plumbing, not what transfers).

The suite file itself, at its CPU tier, trains about 4,100 steps for one seed, minutes on 2
cores, too long for the test session. So the end-to-end run takes the suite file's text with
one change, step counts and test images cut down in its task SPEC (in the sweep and in the
labels alike), and runs it with --suite: every strategy of the suite, its baseline and its
labels, its leaderboard sections. The suite file as committed is run by the fast tests
(tests/plugins/test_image_tiers.py): its expansion, and `run --suite cifar` without data,
which must stop before anything trains.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ptbench.registry import default_registry
from ptbench.sweep.plan import expand, load_suite, suites_dir

# the writers of the official formats live with the dataset tests (which pytest puts on the
# path itself when it collects them; not when this file runs alone)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from test_image_datasets import write_cifar10  # noqa: E402

pytestmark = pytest.mark.slow

SUITE_TASK = "cifar10[tier=cpu]"
#: The suite's task with a budget that trains in seconds: every other value is the CPU tier's.
SMALL_TASK = "cifar10[tier=cpu,n_test=5,source_steps=20,target_steps=5]"


def sections(markdown: str) -> dict[str, str]:
    """`## heading` -> the text under it, up to the next heading of that level."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def table_strategies(text: str) -> list[str]:
    """The strategy column of a task's table: its rows' first cells, code-quoted."""
    return re.findall(r"^\| `([^`]+)`", text, flags=re.M)


def ranked_strategies(text: str) -> list[str]:
    """The strategy column of the ranking: the second cell, after the rank."""
    return re.findall(r"^\| \d+ +\| `([^`]+)`", text, flags=re.M)


def test_the_cifar_suite_end_to_end(tmp_path):
    data = tmp_path / "data"
    # 12 images per class per batch: 60 training images per class (50 go to each target
    # class, as n_target asks) and 12 test images per class
    write_cifar10(data, per_batch=120)
    text = (suites_dir() / "cifar.toml").read_text(encoding="utf-8")
    assert text.count(SUITE_TASK) == 2  # the sweep and its label: both change together
    (tmp_path / "suite").mkdir()
    suite_file = tmp_path / "suite" / "cifar.toml"
    suite_file.write_text(text.replace(SUITE_TASK, SMALL_TASK), encoding="utf-8")
    expected = {s.strategy.instance_name for s in expand(load_suite("cifar"), default_registry())}

    proc = subprocess.run(
        [sys.executable, "-m", "ptbench", "run", "--suite", str(suite_file), "--data-dir", str(data), "--seeds", "1",
         "--store", str(tmp_path / "cifar.db"), "--leaderboard", str(tmp_path / "lb"), "--cache-dir", str(tmp_path / "cache"),
         "--no-html", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(tmp_path / "cifar.db") as db:
        rows = db.execute("select task, strategy, status from runs").fetchall()
    assert len(rows) == len(expected) == 23
    assert {r[0] for r in rows} == {"cifar10[tier=cpu,n_test=5,source_steps=20,target_steps=5]"}
    assert {r[1] for r in rows} == expected and {r[2] for r in rows} == {"ok"}

    page = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert page.startswith("# ptbench leaderboard: the cifar suite")
    found = sections(page)
    # the images suite's sections: the ranking, one table per task (headed by its label), the glossary
    assert list(found) == ["Overall ranking", "CIFAR-10 vehicles -> animals", "Glossary"]
    task_table = found["CIFAR-10 vehicles -> animals"]
    assert f"`{SMALL_TASK}`" in task_table  # the full instance name under the label
    assert sorted(table_strategies(task_table)) == sorted(expected)
    assert sorted(ranked_strategies(found["Overall ranking"])) == sorted(expected)  # one task: every strategy is ranked
    assert "Δ vs scratch" in task_table

