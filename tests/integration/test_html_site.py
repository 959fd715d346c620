"""The static HTML report in a real headless Chromium (Selenium): it loads from file:// with
no console errors and no network request, its tables sort and filter, its charts draw, and
its run links open the run's page. Screenshots of every page visited land in tmp_path.

The runs come from a real tiny sweep (`python -m ptbench run`, a few seconds); when the CLI
cannot produce them, hand-made results written through the store API stand in.
Needs Debian's chromium and chromium-driver (skipped without them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("jinja2")
pytest.importorskip("plotly")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from ptbench.results.html import write_site  # noqa: E402

TASK = "signal-noise[d=100,m=10,n_source=40,n_target=20,n_test=200,steps=50,trace=10]"
EVIL = "x<script>alert(1)</script>"


def _sweep(tmp: Path) -> "object | None":
    """A real sweep's frame, or None when the CLI fails (it may be mid-change)."""
    from ptbench.results.store import Store

    db = tmp / "sweep.db"
    cmd = [sys.executable, "-m", "ptbench", "run", "--task", TASK, "--strategy", "scratch", "--strategy", "full",
           "--seeds", "2", "--store", str(db), "--no-leaderboard", "--no-cache", "--quiet"]
    try:
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=90, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not db.is_file():
        return None
    with Store(db) as store:
        frame = store.frame()
    return frame if len(frame) == 4 and (frame["status"] == "ok").all() else None


def _stored_by_hand(tmp: Path):
    """Results in the runner's shape, through the real store (JSON columns and all)."""
    from ptbench.api import RunResult
    from ptbench.results.store import Store

    with Store(tmp / "hand.db") as store:
        for task, d in (("signal-noise[d=100]", 100), ("signal-noise[d=200]", 200)):
            for s, strategy in enumerate(["scratch", "full", EVIL]):
                for seed in range(2):
                    failed = strategy == EVIL and seed == 1 and d == 200
                    trajectory = [{"step": k * 10, "u_max_all": 0.1 * k * (s + 1), "noise_all": 0.02 * k} for k in range(6)]
                    store.write(
                        RunResult(
                            task=task,
                            task_params={"d": d, "m": 10, "steps": 50},
                            strategy=strategy,
                            strategy_params={},
                            seed=seed,
                            key=f"{task}|{strategy}|{seed}",
                            status="failed" if failed else "ok",
                            error="RuntimeError: <b>boom</b>" if failed else None,
                            source_acc=None if failed else 0.9,
                            target_acc=None if failed else 0.6 + 0.1 * s + 0.03 * seed - 0.001 * d / 100,
                            target_train_acc=None if failed else 1.0,
                            source_seconds=0.4,
                            target_seconds=None if failed else 0.2 + 0.05 * s,
                            diagnostics={} if failed else {
                                "source": {"u_max_all": 1.0, "noise_all": 0.3},
                                "target": {"u_max_all": 0.5 + s, "noise_all": 0.1 * (3 - s)},
                                "trajectory": {"source": trajectory, "target": trajectory},
                            },
                        )
                    )
        return store.frame()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html_site")
    runs = _sweep(tmp)
    origin = "sweep"
    if runs is None:
        runs, origin = _stored_by_hand(tmp), "hand"
    index = write_site(runs, tmp / "site", labels={t: f"task {i + 1}" for i, t in enumerate(sorted(runs["task"].unique()))})
    return runs, index, origin


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1000", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"].startswith("Network.webSocket"):
            urls.append(message["params"].get("url", "websocket"))
    return urls


def _offline(url: str) -> bool:
    return url.startswith(("file://", "data:")) or url == "about:blank"


def _column(driver, table, index: int) -> list[str]:
    """The visible text of column `index` of a table's body, in row order."""
    return [row.find_elements(By.TAG_NAME, "td")[index].text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def _sort_values(table, index: int) -> list[float]:
    cells = [row.find_elements(By.TAG_NAME, "td")[index] for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    return [float(c.get_attribute("data-sort")) for c in cells if c.get_attribute("data-sort")]


def _scroll_to(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def _click(driver, element) -> None:
    """Click as a person would, with the element scrolled to the middle of the window (not
    under the sticky filter bar)."""
    _scroll_to(driver, element)
    element.click()


def _charts_drawn(driver, minimum: int) -> None:
    WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".plotly-graph-div .main-svg")) >= minimum)


def test_site_in_a_real_browser(driver, site, tmp_path):  # driver first: skip before the sweep
    runs, index, origin = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver.get(index.as_uri())
    assert driver.title == "ptbench leaderboard"
    tasks = driver.find_elements(By.CSS_SELECTOR, "section.task")
    assert len(tasks) == runs["task"].nunique()
    heading = tasks[0].find_element(By.TAG_NAME, "h2")
    assert heading.text == "task 1" and heading.get_attribute("title").startswith("signal-noise[")
    _charts_drawn(driver, len(tasks))  # plotly.js ran from the site's one copy (plotly.min.js): one chart per task
    titles = [b.get_attribute("data-title") for b in driver.find_elements(By.CSS_SELECTOR, ".modebar-btn")]
    assert "Reset axes" in titles and not any("share" in (t or "").lower() for t in titles)  # no upload button
    if origin == "hand":  # the hostile name is text, and no script of it ran
        assert EVIL in driver.find_element(By.ID, "runs-table").text
        assert driver.execute_script("return document.querySelectorAll('script').length") == 1 + 1 + len(tasks)
    driver.save_screenshot(str(shots / "index.png"))
    _scroll_to(driver, driver.find_element(By.CSS_SELECTOR, "section.task .chart"))
    driver.save_screenshot(str(shots / "index-chart.png"))
    assert _severe(driver) == []

    # sorting: the all-runs table is in task, strategy, seed order; by seed, strategies interleave
    table = driver.find_element(By.ID, "runs-table")
    before = _column(driver, table, 2)
    seed_header = table.find_elements(By.CSS_SELECTOR, "thead th")[2]
    _click(driver, seed_header)
    after = [int(s) for s in _column(driver, table, 2)]
    assert after == sorted(after) and [int(s) for s in before] != after
    assert seed_header.get_attribute("aria-sort") == "ascending"
    _click(driver, seed_header)
    assert [int(s) for s in _column(driver, table, 2)] == sorted(after, reverse=True)
    strategy_header = table.find_elements(By.CSS_SELECTOR, "thead th")[1]
    _click(driver, strategy_header)
    strategies = _column(driver, table, 1)
    assert strategies == sorted(strategies, key=str.lower) or strategies == sorted(strategies)
    # numeric sort in a task table: target accuracy ascending, then descending
    task_table = tasks[0].find_element(By.CSS_SELECTOR, "table.task-table")
    acc_header = task_table.find_elements(By.CSS_SELECTOR, "thead th")[1]
    _click(driver, acc_header)
    values = _sort_values(task_table, 1)
    assert values == sorted(values) and len(values) >= 2
    _click(driver, acc_header)
    assert _sort_values(task_table, 1) == sorted(values, reverse=True)

    # filtering: one box hides the rows of every table that lack the query
    box = driver.find_element(By.ID, "filter")
    all_rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-filter]")
    box.send_keys("scratch")
    shown = [r for r in all_rows if r.is_displayed()]
    assert 0 < len(shown) < len(all_rows)
    for row in driver.find_elements(By.CSS_SELECTOR, "table.task-table tbody tr, #runs-table tbody tr"):
        strategy = row.find_element(By.CSS_SELECTOR, "td:nth-child(2) code, td.strategy code").text
        assert row.is_displayed() == ("scratch" in strategy.lower())
    driver.save_screenshot(str(shots / "index-filtered.png"))
    box.clear()
    box.send_keys("no such strategy anywhere")
    assert not any(r.is_displayed() for r in all_rows) and not any(t.is_displayed() for t in tasks)
    box.clear()
    box.send_keys(" ")  # an input event with an empty query shows everything again
    assert all(r.is_displayed() for r in all_rows)

    # a strategy link opens its first run's page, which links back
    link = task_table.find_element(By.CSS_SELECTOR, "tbody tr td.strategy a")
    strategy = link.text
    _click(driver, link)
    WebDriverWait(driver, 10).until(lambda d: "/runs/" in d.current_url)
    title = driver.find_element(By.ID, "run-title").text
    assert strategy in title and "seed" in title and strategy in driver.title
    driver.save_screenshot(str(shots / "run.png"))
    assert _severe(driver) == []
    traced = runs[runs["diagnostics"].map(lambda d: bool((d or {}).get("trajectory", {}).get("target")))]
    if ((traced["task"] == sorted(runs["task"])[0]) & (traced["strategy"] == strategy)).any():
        _charts_drawn(driver, 1)  # the trajectory chart of this run
        _scroll_to(driver, driver.find_element(By.CSS_SELECTOR, ".chart"))
        driver.save_screenshot(str(shots / "run-chart.png"))
    _click(driver, driver.find_element(By.ID, "back"))
    WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith("index.html"))

    # a failed run's page (hand-made runs have one)
    failures = driver.find_elements(By.CSS_SELECTOR, "#failures-table tbody tr td a")
    if failures:
        _click(driver, failures[0])
        WebDriverWait(driver, 10).until(lambda d: "/runs/" in d.current_url)
        assert "failed" in driver.find_element(By.CSS_SELECTOR, ".status-bad").text
        assert "<b>boom</b>" in driver.find_element(By.CSS_SELECTOR, "pre.error").text
        driver.save_screenshot(str(shots / "run-failed.png"))
        assert _severe(driver) == []

    urls = _requested_urls(driver)
    assert urls and all(_offline(u) for u in urls), [u for u in urls if not _offline(u)]
    assert {"index.png", "index-chart.png", "index-filtered.png", "run.png"} <= {p.name for p in shots.iterdir()}
    print(f"runs from: {origin}; screenshots in {shots}")
