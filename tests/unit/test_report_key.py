"""A suite's report key is checked before the sweep by reading the report module, not by
importing it (its imports would delay the workers), and falls back to importing it where
the source does not settle the question."""

from __future__ import annotations

import sys

import pytest

from ptbench.errors import PtbenchError
from ptbench.results.report_key import DEFAULT_REQUIRES, check_report, load_report


@pytest.fixture
def report_module(tmp_path, monkeypatch):
    """Write a module `name` with `body` into a folder on sys.path; its import writes a
    marker file, so a test can tell whether it was imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, body: str) -> tuple[str, object]:
        marker = tmp_path / f"{name}.imported"
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n{body}")
        written.append(name)
        return name, marker

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_a_key_its_source_settles_is_checked_without_importing_the_module(report_module):
    name, marker = report_module("rk_plain", "import pandas\nREQUIRES = (('json',), 'pip install json')\n\ndef write(runs, out, baseline):\n    return []\n")
    assert check_report(f"{name}:write") == (("json",), "pip install json")
    assert not marker.exists() and name not in sys.modules
    assert callable(load_report(f"{name}:write")) and marker.exists()  # the real import, later


def test_without_requires_the_report_needs_matplotlib(report_module):
    name, marker = report_module("rk_default", "def write(runs, out, baseline):\n    return []\n")
    assert check_report(f"{name}:write") == DEFAULT_REQUIRES and not marker.exists()


def test_a_function_bound_where_the_parse_cannot_see_it_is_found_by_importing(report_module):
    name, marker = report_module("rk_dynamic", "globals()['write'] = lambda runs, out, baseline: []\n")
    assert check_report(f"{name}:write") == DEFAULT_REQUIRES and marker.exists()


def test_a_requires_that_is_not_a_literal_is_read_by_importing(report_module):
    name, marker = report_module("rk_computed", "REQUIRES = (tuple(['csv']), 'pip install ' + 'csv')\ndef write(r, o, b):\n    return []\n")
    assert check_report(f"{name}:write") == (("csv",), "pip install csv") and marker.exists()


@pytest.mark.parametrize("body, key, message", [
    ("def write(r, o, b):\n    return []\n", "{name}:wirte", "rk_bad has no function 'wirte'; fix the suite's report key"),
    ("def write(r, o, b):\n    return [\n", "{name}:write", "cannot import 'rk_bad' ('[' was never closed (rk_bad.py, line 3))"),
    ("", "rk_no_such_module:write", "cannot import 'rk_no_such_module'"),
    ("", "rk_no_such_package.sub:write", "cannot import 'rk_no_such_package.sub'"),
])
def test_a_wrong_key_is_one_line(report_module, body, key, message):
    name, _ = report_module("rk_bad", body)
    with pytest.raises(PtbenchError) as err:
        check_report(key.format(name=name))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_run_refuses_a_wrong_report_key_before_anything_trains(cli, tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text('report = "ptbench.reports.paper:no_such_function"\ntasks = ["signal-noise[d=20,m=4,steps=5]"]\nstrategies = ["scratch"]\n')
    res = cli("run", "--suite", str(suite), "--store", str(tmp_path / "s.db"))
    assert res.code == 2 and "ptbench.reports.paper has no function 'no_such_function'" in res.err, res.err
    assert not (tmp_path / "s.db").exists()
