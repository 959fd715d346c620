"""The command line: a user's mistake is one line on stderr and exit status 2, never a
traceback; `list` shows what can be run; `export` gives one row per run with fixed columns."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ptbench.cli import main

EXPORT_COLUMNS = [
    "task", "strategy", "seed", "status", "source_acc", "target_acc", "target_train_acc",
    "source_seconds", "target_seconds", "task_params", "strategy_params",
]


def assert_user_error(res, *fragments: str) -> None:
    """Exit status 2, exactly one line on stderr starting `ptbench: error:`, no traceback."""
    assert res.code == 2, (res.code, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("ptbench: error:"), lines[0]
    assert "Traceback" not in res.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --------------------------------------------------------------------------- as a user runs it


def test_unknown_strategy_in_a_real_process(cli_subprocess, tmp_path):
    res = cli_subprocess("run", "--strategy", "partial-filter", "--store", "s.db", "--no-leaderboard")
    assert_user_error(res, "unknown strategy 'partial-filter'", "did you mean 'partial-filters'?")
    assert not (tmp_path / "s.db").exists()  # refused before anything was created


@pytest.mark.slow  # two real processes that import torch: ~4 s
def test_the_fast_exit_still_runs_atexit_handlers_flushes_output_and_lets_a_profiler_write(tmp_path):
    """`python -m ptbench` ends with os._exit after the atexit handlers (`cli.exit_now`): what
    it prints arrives whole, a handler a plugin registered still runs, and under cProfile
    (which writes at the interpreter's exit) the command exits normally."""
    import subprocess
    import sys

    marker = tmp_path / "atexit-ran"
    plugin = tmp_path / "registers_atexit.py"
    plugin.write_text(
        "import atexit, pathlib\nfrom ptbench.strategies.scratch import Scratch\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "class AtExit(Scratch):\n    name = 'test-atexit'\n"
    )
    proc = subprocess.run([sys.executable, "-m", "ptbench", "list", "strategies", "--plugin", str(plugin)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scratch" in proc.stdout and proc.stdout.rstrip().splitlines()[-1].strip(), proc.stdout[-300:]
    assert marker.read_text() == "yes"
    profile = tmp_path / "ptbench.prof"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "ptbench", "list", "suites"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert profile.stat().st_size > 0


@pytest.mark.slow  # two real processes: ~2 s
def test_the_installed_command_ends_as_python_m_ptbench_does(tmp_path):
    """The console script's function (`ptbench.cli:console`, pyproject's [project.scripts])
    is `python -m ptbench`'s: the command's output, its status, no teardown (see above)."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    script = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]["ptbench"]
    assert script == "ptbench.cli:console"
    code = "import sys; sys.argv = ['ptbench', 'list', 'suites']; from ptbench.cli import console; console()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "quick" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code.replace("'list', 'suites'", "'run', '--seeds', '0'")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("ptbench: error:"), proc.stderr


def test_bad_suite_file_in_a_real_process(cli_subprocess, tmp_path):
    (tmp_path / "broken.toml").write_text('seeds = 2\ntasks = ["signal-noise"\n')
    res = cli_subprocess("run", "--suite", "broken.toml", "--store", "s.db", "--no-leaderboard")
    assert_user_error(res, "not valid TOML", "broken.toml")


# --------------------------------------------------------------------------- in this process


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["run", "--task", "signal-noize", "--strategy", "scratch"], ["unknown task 'signal-noize'", "did you mean 'signal-noise'?"]),
        (["run", "--task", "signal-noise[d=abc]"], ["signal-noise", "'d' expects int", "'abc'"]),
        (["run", "--task", "signal-noise[target_specific=abc]"], ["target_specific"]),
        (["run", "--task", "signal-noise[label_flip=0.7]"], ["label_flip must be in [0, 0.5)"]),
        (["run", "--strategy", "partial-filters[fracton=0.5]"], ["no parameter 'fracton'", "did you mean 'fraction'?"]),
        (["run", "--strategy", "partial-filters[fraction=2.0]"], ["fraction must be in [0, 1]"]),
        (["run", "--strategy", "scratch[freeze]"], ["malformed SPEC", "is not key=value"]),
        (["run", "--task", "signal-noise[d=100"], ["malformed SPEC", "name[key=value,...]"]),
        (["run", "--suite", "quik"], ["unknown suite 'quik'", "did you mean 'quick'?"]),
        (["run", "--suite", "missing.toml"], ["unknown suite 'missing.toml'"]),
        (["run", "--seeds", "0"], ["--seeds must be a positive integer"]),
        (["run", "--timeout", "-1"], ["--timeout must be a finite positive"]),
        (["run", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["run", "--plugin", "nowhere.py"], ["plugin file 'nowhere.py' does not exist"]),
        (["export", "--store", "missing.db"], ["no results store"]),
        (["leaderboard", "--store", "missing.db"], ["no results store"]),
        (["export", "--format", "xml"], ["invalid choice: 'xml'"]),
        (["run", "--no-such-option"], ["unrecognized arguments"]),
        (["list", "things"], ["invalid choice: 'things'"]),
    ],
)
def test_user_errors_are_one_line_and_exit_2(cli, tmp_path, args, fragments):
    res = cli(*args, *(["--no-leaderboard"] if args[0] == "run" else []))
    assert_user_error(res, *fragments)
    assert not (tmp_path / "results").exists()  # nothing was created on the way


@pytest.mark.parametrize(
    "suite, fragments",
    [
        ('seed = 2\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\n', ["unknown key 'seed'", "did you mean 'seeds'?"]),
        ('seeds = -1\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\n', ["seeds must be a positive integer"]),
        ('description = "empty"\n', ["nothing to run"]),
        ('tasks = ["signal-noise"]\nstrategies = "scratch"\n', ["non-empty list of SPEC strings"]),
        ('tasks = ["signal-noise"]\nstrategies = ["scrach"]\n', ["did you mean 'scratch'?"]),
    ],
)
def test_bad_suite_files(cli, tmp_path, suite, fragments):
    (tmp_path / "mine.toml").write_text(suite)
    assert_user_error(cli("run", "--suite", "mine.toml", "--no-leaderboard"), *fragments)


def test_no_command_prints_help_and_exits_2(cli):
    res = cli()
    assert res.code == 2
    assert "run" in res.out and "list" in res.out


# --------------------------------------------------------------------------- list


def test_list_shows_tasks_strategies_and_suites(cli):
    res = cli("list")
    assert res.code == 0
    sections = res.out.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["tasks:", "strategies:", "suites:"]
    tasks, strategies, suites = sections
    assert "signal-noise" in tasks and "d=1000" in tasks
    for name in ("scratch", "full", "partial-filters", "partial-layers", "selffer"):
        assert f"  {name} " in strategies
    assert "fraction=0.25|0.5|0.75, freeze=False|True" in strategies
    assert "quick" in suites


def test_list_one_kind(cli):
    res = cli("list", "strategies")
    assert res.code == 0
    assert res.out.startswith("strategies:")
    assert "tasks:" not in res.out and "signal-noise" not in res.out


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def stored(tmp_path_factory, task_spec):
    """A store holding 2 strategies x 2 seeds of a tiny real run."""
    path = tmp_path_factory.mktemp("export") / "runs.db"
    code = main(["run", "--task", task_spec(steps=30), "--strategy", "scratch",
                 "--strategy", "partial-filters[fraction=0.5,freeze=false]", "--seeds", "2",
                 "--store", str(path), "--no-leaderboard", "--quiet", "--device", "cpu"])
    assert code == 0
    return path


def test_export_csv_columns(cli, stored):
    res = cli("export", "--store", str(stored), "--format", "csv")
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert set(EXPORT_COLUMNS) <= set(rows[0])
    assert len(rows) == 4
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [
        ("partial-filters[fraction=0.5,freeze=False]", "0"),
        ("partial-filters[fraction=0.5,freeze=False]", "1"),
        ("scratch", "0"),
        ("scratch", "1"),
    ]
    for row in rows:
        assert row["status"] == "ok"
        assert row["task"].startswith("signal-noise[")
        assert json.loads(row["task_params"])["d"] == 100
        for col in ("source_acc", "target_acc", "target_train_acc"):
            assert 0.0 <= float(row[col]) <= 1.0
        assert float(row["source_seconds"]) > 0 and float(row["target_seconds"]) > 0
    partial = next(r for r in rows if r["strategy"].startswith("partial"))
    assert json.loads(partial["strategy_params"]) == {"fraction": 0.5, "freeze": False}


def test_export_json_columns_and_out_file(cli, stored, tmp_path):
    res = cli("export", "--store", str(stored), "--format", "json", "--out", str(tmp_path / "runs.json"))
    assert res.code == 0 and res.out == ""
    records = json.loads((tmp_path / "runs.json").read_text())
    assert len(records) == 4
    for rec in records:
        assert set(EXPORT_COLUMNS) <= set(rec)
        assert isinstance(rec["seed"], int)
        assert isinstance(rec["task_params"], dict) and rec["task_params"]["steps"] == 30
        assert isinstance(rec["strategy_params"], dict)
    # csv and json describe the same runs
    csv_rows = list(csv.DictReader(io.StringIO(cli("export", "--store", str(stored)).out)))
    assert sorted(float(r["target_acc"]) for r in csv_rows) == sorted(r["target_acc"] for r in records)


def test_export_parquet_needs_out(cli, stored):
    assert_user_error(cli("export", "--store", str(stored), "--format", "parquet"), "--out")
