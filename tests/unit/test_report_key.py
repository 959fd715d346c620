"""A suite's report key is checked before the sweep by importing the report module: a key
that names nothing, a module that is not Python or that cannot import what it needs, fails
in one line before anything trains, not after the whole sweep. (Reading the module's source
instead, to spare the import's 0.3 s before the workers start, let such modules through to
fail after the sweep: tried, reviewed, and taken back.)"""

from __future__ import annotations

import sys

import pytest

from ptbench.errors import PtbenchError
from ptbench.results.suite_report import load_report


@pytest.fixture
def report_module(tmp_path, monkeypatch):
    """Write a module `name` with `body` into a folder on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(body)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("body, key, message", [
    ("def write(r, o, b):\n    return []\n", "{name}:wirte", "has no function 'wirte'; fix the suite's report key"),
    ("write = 3\n", "{name}:write", "has no function 'write'; fix the suite's report key"),
    ("def write(r, o, b):\n    return [\n", "{name}:write", "cannot import 'rk_bad_{i}' ('[' was never closed"),
    ("import rk_no_such_library\ndef write(r, o, b):\n    return []\n", "{name}:write", "No module named 'rk_no_such_library'"),
    ("", "rk_no_such_module:write", "cannot import 'rk_no_such_module'"),
])
def test_a_wrong_key_is_one_line(report_module, body, key, message, request):
    i = request.node.callspec.indices["body"]
    name = report_module(f"rk_bad_{i}", body)
    with pytest.raises(PtbenchError) as err:
        load_report(key.format(name=name))
    assert message.format(i=i) in str(err.value) and "\n" not in str(err.value)


def test_run_refuses_a_report_that_cannot_import_before_anything_trains(cli, tmp_path, report_module):
    name = report_module("rk_needs_missing", "import rk_no_such_library\nREQUIRES = ((), '')\ndef write(r, o, b):\n    return []\n")
    suite = tmp_path / "bad.toml"
    suite.write_text(f'report = "{name}:write"\ntasks = ["signal-noise[d=20,m=4,steps=5]"]\nstrategies = ["scratch"]\n')
    res = cli("run", "--suite", str(suite), "--store", str(tmp_path / "s.db"))
    assert res.code == 2 and "No module named 'rk_no_such_library'" in res.err, res.err
    assert not (tmp_path / "s.db").exists()
