"""`python -m ptbench submit FILE`: the checks a contributor sees, the exit status, and --add.

The good file is the worked example of CONTRIBUTING.md, read from the document itself, so the
guide's example cannot rot without this test failing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ptbench.suites
from ptbench.sweep.plan import load_suite

from ptbench.results.store import Store

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["name", "param_grid", "plan_shapes", "source_unmodified", "plan_deterministic", "finished_run"]


def guide_example() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class LargestFilters" in b)


def statuses(out: str) -> dict[tuple[str, str], str]:
    """{(plugin, check): 'pass' | 'FAIL' | 'n/a'} from submit's report."""
    found, plugin = {}, None
    for line in out.splitlines():
        header = re.match(r"^(?:strategy|task) '([^']+)'", line)
        if header:
            plugin = header.group(1)
        row = re.match(r"^  (pass|FAIL|n/a)\s+(\w+)\s", line)
        if row:
            found[(plugin, row.group(2))] = row.group(1)
    return found


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the checking process: tiny models, busy machine


def test_the_guide_example_passes_every_check_and_changes_nothing(cli, tmp_path):
    path = tmp_path / "largest_filters.py"
    path.write_text(guide_example())
    into = tmp_path / "into"
    into.mkdir()
    result = cli("submit", str(path), "--store", str(tmp_path / "r.db"), "--into", str(into))
    assert result.code == 0, result.out + result.err
    assert statuses(result.out) == {("largest-filters", c): "pass" for c in CHECKS}
    assert "6 checks: 6 passed, 0 failed" in result.out
    assert not (tmp_path / "r.db").exists() and not list(into.iterdir()) and not (tmp_path / "leaderboard").exists()


BAD = '''
import torch
from ptbench.api import Strategy, TransferPlan


class WrongShapes(Strategy):
    """Masks of one shape for every parameter."""
    name = "wrong-shapes"

    def plan(self, source, target, rng):
        return TransferPlan(copy={n: torch.ones(4, 4, dtype=torch.bool) for n, _ in target.named_parameters()})


class ModifiesSource(Strategy):
    """Sharpens the source filters in place before copying them."""
    name = "modifies-source"

    def plan(self, source, target, rng):
        with torch.no_grad():
            for p in source.parameters():
                p.mul_(2.0)
        return TransferPlan.full(source, target)


class Nondeterministic(Strategy):
    """Draws its filters from an unseeded generator."""
    name = "nondeterministic"

    def plan(self, source, target, rng):
        mine = torch.Generator()
        mine.seed()
        return TransferPlan.filters(source, target, 0.5, rng=mine)


class NameTaken(Strategy):
    """Reuses a built-in name."""
    name = "full"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)
'''


def test_a_file_that_breaks_the_contract_exits_1_naming_each_failing_check(cli, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(BAD)
    into = tmp_path / "into"
    into.mkdir()
    result = cli("submit", str(path), "--add", "--into", str(into), "--store", str(tmp_path / "r.db"))
    assert result.code == 1
    found = statuses(result.out)
    assert found[("wrong-shapes", "plan_shapes")] == "FAIL"
    assert found[("wrong-shapes", "name")] == "pass"
    assert found[("modifies-source", "source_unmodified")] == "FAIL"
    assert found[("modifies-source", "plan_shapes")] == "pass"
    assert found[("nondeterministic", "plan_deterministic")] == "FAIL"
    assert found[("nondeterministic", "plan_shapes")] == "pass"
    assert found[("full", "name")] == "FAIL"
    assert found[("full", "plan_deterministic")] == "pass"
    assert re.search(r"FAIL\s+plan_shapes\s+wrong-shapes on \S+: copy mask for '\S+' has shape \(4, 4\)", result.out)
    assert "changed the source (donor) model's" in result.out
    assert "'full' is already taken by built-in" in result.out
    assert "not added" in result.err and not list(into.iterdir()), "--add must not copy a failing file"


def test_a_file_with_a_syntax_error_exits_2_with_one_line(cli_subprocess, tmp_path):
    (tmp_path / "broken.py").write_text("from ptbench.api import Strategy\nclass Oops(Strategy)\n    name = 'oops'\n")
    result = cli_subprocess("submit", "broken.py")
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err
    assert lines[0].startswith("ptbench: error: plugin file 'broken.py' failed to import: SyntaxError")


@pytest.mark.parametrize(
    "text, words",
    [
        ("import sys\nsys.exit(3)\n", "failed to import: SystemExit: 3"),
        ("X = 1\n", "defines no Task or Strategy subclass with a name"),
    ],
    ids=["exits-at-import", "no-strategy"],
)
def test_a_file_that_cannot_be_imported_as_a_plugin_exits_2(cli, tmp_path, text, words):
    (tmp_path / "odd.py").write_text(text)
    result = cli("submit", str(tmp_path / "odd.py"))
    assert result.code == 2
    assert words in result.err and len(result.err.strip().splitlines()) == 1


def test_a_missing_file_exits_2(cli, tmp_path):
    result = cli("submit", str(tmp_path / "nope.py"))
    assert result.code == 2 and "is not a file" in result.err


def test_add_copies_the_file_runs_the_suite_and_writes_the_leaderboard(cli, tmp_path):
    path = tmp_path / "largest_filters.py"
    path.write_text(guide_example())
    into = tmp_path / "strategies"
    into.mkdir()
    suite = tmp_path / "mysuite.toml"
    suite.write_text((Path(ptbench.suites.__file__).parent / "smoke.toml").read_text())
    result = cli(
        "submit", str(path), "--add", "--into", str(into), "--suite", str(suite), "--seeds", "2",
        "--store", str(tmp_path / "r.db"), "--leaderboard", str(tmp_path / "lb"),
    )
    assert result.code == 0, result.out + result.err
    assert (into / "largest_filters.py").read_text() == path.read_text()
    with Store(tmp_path / "r.db") as store:
        runs = store.frame()
    # the grid rule: the SPEC `largest-filters` is its default instance only
    assert set(runs["strategy"]) == {"scratch", "largest-filters[fraction=0.5]"}
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    board = (tmp_path / "lb" / "README.md").read_text()
    assert "`largest-filters[fraction=0.5]`" in board and "`scratch`" in board
    # the suite's file now lists it, so a fresh store runs it too
    assert '"largest-filters"' in suite.read_text()
    assert "largest-filters" in load_suite(str(suite)).sweeps[0].strategies


def test_add_refuses_to_overwrite_another_file_before_checking(cli, tmp_path):
    path = tmp_path / "largest_filters.py"
    path.write_text(guide_example())
    into = tmp_path / "strategies"
    into.mkdir()
    (into / "largest_filters.py").write_text("# someone else's strategy\n")
    result = cli("submit", str(path), "--add", "--into", str(into))
    assert result.code == 2 and "already exists with other contents" in result.err
    assert (into / "largest_filters.py").read_text() == "# someone else's strategy\n"


def guide_block(cls: str) -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if f"class {cls}" in b)


NEW_SURFACES_BAD = '''
import torch
from ptbench.api import Strategy, TransferPlan, ValueRule


class ReadsOutside(Strategy):
    """Declares half the filters and reads the donor everywhere."""
    name = "reads-outside"

    def plan(self, source, target, rng):
        plan = TransferPlan.filters(source, target, 0.5, rng=rng)
        for name in plan.copy:
            plan.init[name] = ValueRule.mix(0.5, 0.5)
        return plan


class NegativeRate(Strategy):
    """Climbs the loss."""
    name = "negative-rate"

    def plan(self, source, target, rng):
        return TransferPlan(lr_scale={n: torch.tensor(-1.0) for n, _ in target.named_parameters()})


class VectorPenalty(Strategy):
    """Returns one penalty per example."""
    name = "vector-penalty"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        return (batch.output ** 2).reshape(len(batch.x), -1).mean(dim=1)
'''


@pytest.mark.slow
def test_the_guide_value_rule_and_regulariser_examples_pass_and_broken_surfaces_fail_by_name(cli, tmp_path):
    path = tmp_path / "surfaces.py"
    path.write_text(guide_block("ShrunkFilters") + "\n\n" + guide_block("FeatureDistance") + "\n\n" + NEW_SURFACES_BAD)
    result = cli("submit", str(path), "--store", str(tmp_path / "r.db"))
    assert result.code == 1, result.out + result.err
    found = statuses(result.out)
    shrunk = {c for (p, c) in found if p == "shrunk-filters"}
    assert shrunk == {*CHECKS, "value_rule"} and all(found[("shrunk-filters", c)] == "pass" for c in shrunk)
    distance = {c for (p, c) in found if p == "feature-distance"}
    assert distance == {*CHECKS, "regularizer"} and all(found[("feature-distance", c)] == "pass" for c in distance)
    assert found[("reads-outside", "value_rule")] == "FAIL" and found[("reads-outside", "plan_shapes")] == "pass"
    assert found[("negative-rate", "lr_scale")] == "FAIL" and found[("negative-rate", "plan_shapes")] == "pass"
    assert found[("vector-penalty", "regularizer")] == "FAIL" and found[("vector-penalty", "plan_shapes")] == "pass"
    assert "reads the donor outside its declared entries" in result.out
    assert "learning-rate scale for" in result.out and "is negative" in result.out
    assert "not a scalar tensor" in result.out
