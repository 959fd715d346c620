"""A catalogue of a user's mistakes: each one gets a single line saying what is wrong and what
to do, exit status 2, no traceback, and nothing is trained.

Most cases run the CLI in this process (fast; an unexpected exception would escape `main`
and fail the test); one runs it as a real process, the way a user meets it.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Callable

import pytest
import torch

from ptbench.results.store import SCHEMA_VERSION

TASK = "signal-noise[d=100,n_test=200,steps=50]"


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()


def _newer_store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('application', 'ptbench')")
    conn.execute("CREATE TABLE runs (key TEXT PRIMARY KEY)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _idx_garbage(folder: Path) -> None:
    """The four MNIST file names, none holding what it should (a failed copy, say)."""
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"<html>not found</html>\n")


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(text)


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True)


def _write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


def _store_with_runs(path: Path) -> None:
    """A store holding scratch and full on one task, two seeds (written by hand: no training)."""
    from ptbench.api import RunResult
    from ptbench.results.store import Store

    with Store(path) as store:
        for strategy, acc in (("scratch", 0.8), ("full", 0.9)):
            for seed in range(2):
                store.write(RunResult(task="toy", task_params={}, strategy=strategy, strategy_params={}, seed=seed,
                                      key=f"toy|{strategy}|{seed}", source_acc=0.9, target_acc=acc + 0.01 * seed,
                                      target_train_acc=1.0, source_seconds=0.1, target_seconds=0.1))


#: A place nobody may write, root included (sysfs refuses new files).
READ_ONLY = "/sys/ptbench-test"
#: Two runs of a tiny task.
SUITE = 'tasks = ["signal-noise[d=100,n_test=200,steps=50]"]\nstrategies = ["scratch"]\n'


def run(*extra: str, task: str = TASK, strategy: str | None = "scratch", store: str = "s.db") -> list[str]:
    args = ["run", "--seeds", "1", "--store", store, "--quiet", "--no-leaderboard"]
    if task:
        args += ["--task", task]
    if strategy:
        args += ["--strategy", strategy]
    return args + list(extra)


# (id, setup(tmp_path) or None, argv, what the one line must say: a regex)
CASES = [
    ("unknown-task", None, run(task="signal-nose"), r"unknown task 'signal-nose' \(did you mean 'signal-noise'\?\); valid: "),
    ("unknown-strategy", None, run(strategy="scrach"), r"unknown strategy 'scrach' \(did you mean 'scratch'\?\); valid: "),
    ("unknown-suite", None, ["run", "--suite", "quik", "--store", "s.db"], r"unknown suite 'quik' \(did you mean 'quick'\?\)"),
    ("undeclared-parameter", None, run(strategy="full[fraction=0.5]"), r"full has no parameter 'fraction'; its parameters: freeze"),
    ("misspelled-parameter", None, run(task="signal-noise[sharred=2.0]"), r"no parameter 'sharred' \(did you mean 'shared'\?\)"),
    ("wrong-type", None, run(task="signal-noise[d=abc]"), r"parameter 'd' expects int \(like 1000\), got 'abc'"),
    ("negative-noise", None, run(task="signal-noise[source_noise=-1]"), r"source_noise must be non-negative"),
    ("nan-value", None, run(task="signal-noise[source_noise=nan]"), r"parameter 'source_noise' is NaN; give a number"),
    ("fraction-above-one", None, run(strategy="partial-filters[fraction=1.5]"), r"fraction must be in \[0, 1\], got 1.5"),
    ("zero-seeds", None, run("--seeds", "0"), r"--seeds must be a positive integer, got 0"),
    ("negative-seeds", None, run("--seeds", "-3"), r"--seeds must be a positive integer"),
    ("spec-unclosed", None, run(strategy="full[freeze=true"), r"malformed SPEC 'full\[freeze=true': write name\[key=value"),
    ("spec-no-value", None, run(strategy="full[freeze]"), r"malformed SPEC .*'freeze' is not key=value"),
    ("spec-stray-bracket", None, run(strategy="full]"), r"malformed SPEC 'full\]'"),
    ("spec-no-name", None, run(strategy="[freeze=true]"), r"malformed SPEC '\[freeze=true\]'"),
    ("spec-empty-list", None, run(strategy="full[freeze=[]]"), r"malformed SPEC .*empty list"),
    ("suite-not-toml", _write("bad.toml", 'seeds = 2\n[[sweep]\ntasks = ["signal-noise"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"suite file 'bad.toml' is not valid TOML: .*line 2"),
    ("suite-tasks-not-a-list", _write("bad.toml", 'tasks = "signal-noise"\nstrategies = ["scratch"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"needs tasks = a non-empty list of SPEC strings"),
    ("suite-zero-seeds", _write("bad.toml", 'seeds = 0\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"seeds must be a positive integer, got 0"),
    ("suite-unknown-key", _write("bad.toml", 'seed = 3\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"unknown key 'seed' \(did you mean 'seeds'\?\)"),
    ("suite-sweep-seeds-bool", _write("bad.toml", '[[sweep]]\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\nseeds = true\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"sweep 1 seeds must be a positive integer"),
    ("suite-baseline-not-a-name", _write("bad.toml", 'baseline = 3\ntasks = ["signal-noise"]\nstrategies = ["scratch"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"baseline must be a strategy name"),
    ("suite-bad-spec-inside", _write("bad.toml", 'tasks = ["signal-noise[d=]"]\nstrategies = ["scratch"]\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"signal-noise: parameter 'd' expects int"),
    ("store-under-a-file", _write("afile", "x"), run(store="afile/s.db"),
     r"cannot write the store 'afile/s.db': 'afile' is a file, not a folder; pass a --store path in a writable folder"),
    ("store-is-a-folder", _mkdir("results"), run(store="results"), r"--store 'results' is a folder; give a file path such as"),
    ("store-not-a-database", _write("notes.db", "these are my notes, not a database\n" * 40), run(store="notes.db"),
     r"'notes.db' is not a ptbench results store \(file is not a database\); pass another --store path"),
    ("store-foreign-sqlite", lambda tmp: _foreign_sqlite(tmp / "other.db"), run(store="other.db"),
     r"'other.db' is an SQLite database but not a ptbench results store; pass another --store path"),
    ("store-newer-schema", lambda tmp: _newer_store(tmp / "new.db"), run(store="new.db"),
     rf"'new.db' was written by a newer ptbench \(schema {SCHEMA_VERSION + 1}, this one reads {SCHEMA_VERSION}\); upgrade ptbench"),
    ("leaderboard-missing-store", None, ["leaderboard", "--store", "missing.db"],
     r"no results store at 'missing.db'; run `python -m ptbench run --store missing.db` first"),
    ("plugin-does-not-import", _write("plug.py", "import a_module_nobody_has\n"), run("--plugin", "plug.py"),
     r"plugin file 'plug.py' failed to import: ModuleNotFoundError: No module named 'a_module_nobody_has'"),
    ("plugin-syntax-error", _write("plug.py", "class Oops(:\n"), run("--plugin", "plug.py"),
     r"plugin file 'plug.py' failed to import: SyntaxError"),
    ("plugin-missing", None, run("--plugin", "nowhere.py"), r"plugin file 'nowhere.py' does not exist"),
    ("plugin-defines-nothing", _write("plug.py", "X = 1\n"), run("--plugin", "plug.py"), r"defines no Task or Strategy"),
    ("timeout-not-positive", None, run("--timeout", "0"), r"--timeout must be a finite positive number of seconds, got 0.0"),
    ("timeout-nan", None, run("--timeout", "nan"), r"--timeout must be a finite positive number of seconds, got nan"),
    ("timeout-inf", None, run("--timeout", "inf"), r"--timeout must be a finite positive number of seconds, got inf"),
    ("lock-timeout-not-positive", None, run("--lock-timeout", "0"), r"--lock-timeout must be a finite positive number of seconds, got 0.0"),
    ("timeout-not-a-number", None, run("--timeout", "soon"), r"argument --timeout: invalid float value: 'soon'"),
    ("unknown-device", None, run("--device", "tpu"), r"unknown device 'tpu'; valid: auto, cpu, cuda"),
    ("data-dir-missing-files", _mkdir("empty"), run("--data-dir", "empty", task="mnist"),
     r"mnist needs MNIST's four IDX files in empty/mnist/ \(train-images-idx3-ubyte, .*\), but 'empty' holds no mnist/; put it there"),
    ("data-dir-malformed-file", lambda tmp: _idx_garbage(tmp / "dd" / "mnist"), run("--data-dir", "dd", task="mnist"),
     r"'dd/mnist/train-images-idx3-ubyte' is not an IDX file .*; replace it with the original file"),
    ("data-dir-does-not-exist", None, run("--data-dir", "nowhere", task="mnist"),
     r"data directory 'nowhere' does not exist; pass --data-dir DIR"),
    ("data-dir-not-given", None, run(task="mnist"), r"mnist needs MNIST's four IDX files in DIR/mnist/ .*; pass --data-dir DIR or set PTBENCH_DATA$"),
    # suite files that are not what a suite is
    ("suite-not-utf8", _write_bytes("bad.toml", b'description = "caf\xe9"\n' + SUITE.encode()),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"suite file 'bad.toml' is not UTF-8 text \(byte 0xe9 on line 1, offset 18\); save it as UTF-8"),
    ("suite-sweep-not-tables", _write("bad.toml", "sweep = 5\n"), ["run", "--suite", "bad.toml", "--store", "s.db"],
     r"sweep must be a list of tables, each under a \[\[sweep\]\] header, got int 5"),
    ("suite-report-no-module", _write("bad.toml", 'report = ":f"\n' + SUITE), ["run", "--suite", "bad.toml", "--store", "s.db"],
     r"report must be a string 'module:function' \(a dotted module path and a function name.*got ':f'"),
    ("suite-report-not-identifiers", _write("bad.toml", 'report = "my-module:f()"\n' + SUITE),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"report must be a string 'module:function'"),
    ("suite-nested-1500-deep", _write("bad.toml", "x = " + "[" * 1500 + "]" * 1500 + "\n"),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"suite file 'bad.toml' nests arrays or tables too deeply to read"),
    ("suite-label-names-no-task", _write("bad.toml", SUITE + '[labels]\n"signal-noise[d=10]" = "tiny"\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"the label key 'signal-noise\[d=10\]' is neither a task SPEC"),
    ("suite-label-not-text", _write("bad.toml", SUITE + '[labels]\n"signal-noise" = 3\n'),
     ["run", "--suite", "bad.toml", "--store", "s.db"], r"the label of 'signal-noise' must be one line of 1 to 80 characters"),
    # sweeps too big to mean, refused before anything is built
    ("seeds-a-billion", None, run("--seeds", "1000000000"),
     r"this sweep plans 1,000,000,000 runs, more than 1,000,000: .*or pass --allow-huge"),
    ("seeds-huge-range", None, run("--seeds", "0-99999999", strategy="partial-filters[fraction=[0.25,0.5]]"),
     r"this sweep plans 200,000,000 runs"),
    ("seeds-backwards-range", None, run("--seeds", "7-3"), r"argument --seeds: '7-3': a range A-B needs A <= B"),
    ("seeds-not-seeds", None, run("--seeds", "three"), r"argument --seeds: 'three' is not N \(seeds 0..N-1\), A-B"),
    # output paths that cannot be written: a folder, a missing folder, a read-only place
    ("export-out-is-a-folder", _mkdir("adir"), ["export", "--store", "s.db", "--out", "adir"],
     r"--out 'adir' is a folder; give a file path such as 'adir/out.txt'"),
    ("export-out-missing-folder", None, ["export", "--store", "s.db", "--out", "nowhere/runs.csv"],
     r"--out 'nowhere/runs.csv': the folder 'nowhere' does not exist; create it or pass another --out"),
    ("export-out-under-a-file", _write("afile", "x"), ["export", "--store", "s.db", "--out", "afile/runs.csv"],
     r"--out 'afile/runs.csv': 'afile' is a file, not a folder"),
    ("export-out-read-only", lambda tmp: _store_with_runs(tmp / "s.db"), ["export", "--store", "s.db", "--out", f"{READ_ONLY}.csv"],
     rf"cannot write '{READ_ONLY}.csv': .*; pass another --out"),
    ("compare-out-is-a-folder", _mkdir("adir"), ["compare", "--strategy", "scratch", "--strategy", "full", "--out", "adir"],
     r"--out 'adir' is a folder"),
    ("compare-out-missing-folder", None, ["compare", "--strategy", "scratch", "--strategy", "full", "--out", "no/c.md"],
     r"the folder 'no' does not exist"),
    ("compare-out-read-only", lambda tmp: _store_with_runs(tmp / "s.db"),
     ["compare", "--store", "s.db", "--strategy", "scratch", "--strategy", "full", "--out", f"{READ_ONLY}.md"],
     rf"cannot write '{READ_ONLY}.md': .*; pass another --out"),
    ("leaderboard-out-is-a-file", _write("afile", "x"), ["leaderboard", "--store", "s.db", "--out", "afile"],
     r"--out 'afile' is a file; pass a folder"),
    ("leaderboard-table-out-is-a-folder", _mkdir("adir"), ["leaderboard", "--store", "s.db", "--format", "csv", "--out", "adir"],
     r"--out 'adir' is a folder"),
    ("leaderboard-table-out-missing-folder", None, ["leaderboard", "--store", "s.db", "--format", "json", "--out", "no/l.json"],
     r"the folder 'no' does not exist"),
    ("leaderboard-out-read-only", lambda tmp: _store_with_runs(tmp / "s.db"), ["leaderboard", "--store", "s.db", "--out", READ_ONLY],
     rf"cannot create the leaderboard folder '{READ_ONLY}': "),
    ("leaderboard-table-out-read-only", lambda tmp: _store_with_runs(tmp / "s.db"),
     ["leaderboard", "--store", "s.db", "--format", "latex", "--out", f"{READ_ONLY}.tex"], rf"cannot write '{READ_ONLY}.tex': "),
    ("run-log-file-is-a-folder", _mkdir("adir"), run("--log-file", "adir"), r"cannot write the log file 'adir': .*pass another --log-file"),
]


@pytest.fixture(autouse=True)
def _restore_data_env(monkeypatch):
    """`--data-dir` sets PTBENCH_DATA for the process; put it back, and start without it."""
    monkeypatch.setenv("PTBENCH_DATA", "")
    monkeypatch.delenv("PTBENCH_DATA")


def assert_one_line(result, pattern: str) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ptbench: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("setup, argv, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_line_and_exit_status_2(tmp_path, cli, setup, argv, pattern):
    if setup is not None:
        setup(tmp_path)
    # what ptbench writes (Python's own bytecode cache of an imported plugin file is not:
    # it appears where PYTHONDONTWRITEBYTECODE is unset)
    written = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")  # noqa: E731
    before = written()
    result = cli(*argv)
    assert_one_line(result, pattern)
    if "mnist" not in argv:  # refused before the store is even created (the data is read when a run starts)
        assert written() == before


def test_cuda_asked_for_without_cuda(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU-only machine reports
    assert_one_line(cli(*run("--device", "cuda")), r"--device cuda was asked for but this torch sees no CUDA device; use --device cpu")
    assert not (tmp_path / "s.db").exists()


def test_a_real_process_prints_one_line_and_exits_2(cli_subprocess):
    result = cli_subprocess(*run(strategy="partial-filters[fraction=2]"))
    assert_one_line(result, r"fraction must be in \[0, 1\], got 2.0")
