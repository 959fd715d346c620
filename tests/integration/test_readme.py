"""The README's Quick start and every command of its "Using it" block, run as written, in
order, in a fresh folder (real processes, a real quick suite): each must exit 0."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _block_after(heading: str) -> list[str]:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    block = section.split("```", 2)[1]
    commands, current = [], ""
    for line in block.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def _ptbench(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ptbench"], command
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_the_quick_start_then_every_using_it_command_exits_0(tmp_path):
    quick_start = [c.split("&&", 1)[1].strip() for c in _block_after("## Quick start") if "python -m ptbench" in c]
    assert quick_start == ["python -m ptbench run"]
    first = _ptbench(quick_start[0], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "results" / "quick.db").is_file() and (tmp_path / "leaderboard" / "quick" / "README.md").is_file()
    using = _block_after("## Using it")
    assert len(using) >= 8
    for command in using:
        done = _ptbench(command, tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    again = _ptbench("python -m ptbench run", tmp_path)
    assert again.returncode == 0 and "0 run(s) done" in again.stderr and "unchanged, same results" in again.stderr
    # every example in every command's --help, on the same store (the paper suite's take
    # minutes and a store of their own: the paper suite's own test runs that suite)
    # independent of each other (they read the quick store, or write stores of their own),
    # so two at a time, one per core
    examples = [c for c in _help_examples(tmp_path) if "--suite paper" not in c]
    with ThreadPoolExecutor(2) as pool:
        for command, done in zip(examples, pool.map(lambda c: _ptbench(c, tmp_path), examples)):
            assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


def _help_examples(cwd: Path) -> list[str]:
    from ptbench.cli import ORDER

    examples = []
    for name in ORDER + ["report"]:
        text = _ptbench(f"python -m ptbench {name} --help", cwd).stdout
        if "examples" not in text:
            continue
        block = text.split("examples", 1)[1].split("\n\n", 1)[0]
        examples += [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.splitlines() if line.strip().startswith("python -m ptbench")]
    assert len(examples) >= 10
    return examples
