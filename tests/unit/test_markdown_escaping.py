"""User-controlled text cannot break the markdown leaderboard: names, string parameters and
error texts with pipes, backticks, newlines or raw HTML keep every table's column count."""

from __future__ import annotations

import pandas as pd

from ptbench.results.leaderboard import render
from ptbench.results.store import Store


def _tables(page: str) -> list[list[str]]:
    return [[line for line in block.splitlines() if line.startswith("|")] for block in page.split("\n\n") if block.startswith("|")]


def test_a_hostile_strategy_name_and_error_keep_the_tables_intact(tmp_path, result):
    evil = "a|b[x=x<script>alert(1)</script>`]"
    rows = [
        result("t", "scratch", 0, target_acc=0.8), result("t", "scratch", 1, target_acc=0.7),
        result("t", evil, 0, target_acc=0.9, strategy_params={"x": "x<script>"}),
        result("t", evil, 1, target_acc=0.6),
        result("t", "broken", 0, status="failed", target_acc=None,
               error="ValueError: d=" + "9" * 40 + " is too large\n| extra | row |\n<img src=x onerror=alert(1)>"),
    ]
    with Store(tmp_path / "s.db") as store:
        for row in rows:
            store.write(row)
        runs = store.frame()
    page = render(runs, "scratch")
    assert "<script>" not in page and "<img" not in page
    for table in _tables(page):
        widths = {line.replace("\\|", "").count("|") for line in table}
        assert len(widths) == 1, table  # every row has the header's column count
    failures = page.split("## Failed runs", 1)[1]
    assert "extra" not in failures and "is too large" in failures  # the error's first line only
