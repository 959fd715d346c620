"""The static HTML report, rendered without a browser: files, links, escaping, no network.

The frame is built by hand in the store's shape (`Store.frame()`), so these tests need no
training and no browser and run in well under a second.
"""

from __future__ import annotations

import re
import struct
import zlib
from html.parser import HTMLParser

import pandas as pd
import pytest

pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from ptbench.results import leaderboard  # noqa: E402
from ptbench.results.html import write_site  # noqa: E402

EVIL = "a|b[x=<script>]"
EVIL_ERROR = 'CUDA <script>alert("boom")</script> & friends'
TASKS = {
    "signal-noise[d=100]": {"d": 100, "m": 10, "steps": 50},
    "signal-noise[d=200]": {"d": 200, "m": 10, "steps": 50},
}
STRATEGIES = ["scratch", "full", EVIL]


def make_runs() -> pd.DataFrame:
    rows = []
    for t, (task, params) in enumerate(TASKS.items()):
        for s, strategy in enumerate(STRATEGIES):
            for seed in range(3):
                failed = task.endswith("[d=200]") and strategy == "full" and seed == 2
                diagnostics = {
                    "source": {"u_max_all": 1.0 + seed, "noise_all": 0.5},
                    "target": {"u_max_all": 0.5 + s + 0.1 * seed, "noise_all": 0.2 * (s + 1), "nested": {"k": seed}},
                }
                if t == 0 and seed == 0 and s < 2:
                    diagnostics["trajectory"] = {
                        "source": [{"step": k * 10, "u_max_all": 0.1 * k, "noise_all": 0.05 * k} for k in range(6)],
                        "target": [{"step": k * 10, "u_max_all": 0.2 * k, "noise_all": 0.01 * k} for k in range(6)],
                    }
                rows.append(
                    {
                        "key": f'{task.split("[")[0]}{{"d": {params["d"]}}}|{strategy}|{seed}',
                        "task": task,
                        "task_params": dict(params),
                        "strategy": strategy,
                        "strategy_params": {"x": "<script>"} if strategy == EVIL else {},
                        "seed": seed,
                        "status": "failed" if failed else "ok",
                        "error": EVIL_ERROR if failed else None,
                        "source_acc": None if failed else 0.9 + 0.01 * seed,
                        "target_acc": None if failed else 0.6 + 0.1 * s - 0.02 * t + 0.01 * seed,
                        "target_train_acc": None if failed else 1.0,
                        "source_seconds": 0.5,
                        "target_seconds": None if failed else 0.25 + 0.1 * s,
                        "device": "cpu",
                        "diagnostics": {} if failed else diagnostics,
                        "ptbench_version": "0.1.0",
                        "torch_version": "2.13.0+cpu",
                        "git_commit": "0123456789abcdef",
                        "host": "box<1>",
                        "created_at": "2025-01-01T00:00:00+0000",
                        "python_version": "3.11.7",
                        "git_dirty": 0,
                    }
                )
    return pd.DataFrame(rows)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))  # 4x4 red, filter 0 per row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Page(HTMLParser):
    """The tags of a page (script and style contents are not parsed as tags)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.h1 = ""
        self._in_h1 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_h1 = self._in_h1 or tag == "h1"
        self.attrs += [(tag, name, value or "") for name, value in attrs]

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1 += data

    def values(self, attribute: str) -> list[str]:
        return [v for _, name, v in self.attrs if name == attribute]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    png = out.parent / "plot.png"
    png.write_bytes(tiny_png())
    runs = make_runs()
    index = write_site(
        runs,
        out,
        labels={"signal-noise[d=100]": "small <d>"},
        plots=[png],
        sections_md=["## Extra <b>section</b>\n\nSome `code` here.\n\n| a | b |\n|---|---|\n| `1` | <i>2</i> |"],
    )
    return runs, out, index


def test_writes_index_and_one_page_per_run(site):
    runs, out, index = site
    assert index == out / "index.html" and index.is_file()
    pages = sorted((out / "runs").glob("*.html"))
    assert len(pages) == len(runs) == 18
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", p.name) for p in pages)


def test_user_strings_are_escaped_everywhere(site):
    _, out, index = site
    for path in [index, *(out / "runs").glob("*.html")]:
        text = path.read_text()
        assert "<script>]" not in text and "<script>alert" not in text, path.name
        assert "<b>section" not in text and "<i>2</i>" not in text and "box<1>" not in text
    text = index.read_text()
    assert "a|b[x=&lt;script&gt;]" in text  # the name shown as text
    assert "alert(&#34;boom&#34;)" in text or "alert(&quot;boom&quot;)" in text  # the failure's error
    assert "small &lt;d&gt;" in text and "&lt;b&gt;section&lt;/b&gt;" in text
    evil_page = next(p for p in (out / "runs").glob("*.html") if "a-b-x-script" in p.name)
    assert "a|b[x=&lt;script&gt;]" in evil_page.read_text()


def test_no_external_urls(site):
    _, out, index = site
    for path in [index, *(out / "runs").glob("*.html")]:
        page = Page(path.read_text())
        assert "link" not in page.tags and "iframe" not in page.tags
        for tag, name, value in page.attrs:
            if name in ("src", "href", "action", "data", "poster", "srcset"):
                assert not re.match(r"\s*(https?:)?//", value, re.I), (path.name, tag, value)
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", path.read_text()[:20000], re.I)  # the style block
        assert "cdn.plot.ly" not in "".join(page.values("src"))


def test_run_pages_are_linked_both_ways(site):
    runs, out, index = site
    page = Page(index.read_text())
    linked = {h for h in page.values("href") if h.startswith("runs/")}
    assert linked == {f"runs/{p.name}" for p in (out / "runs").glob("*.html")}
    for href in linked:
        run = Page((out / href).read_text())
        assert "../index.html" in run.values("href")
        assert " | seed " in run.h1
    first = Page((out / sorted(linked)[0]).read_text())
    assert all((out / "runs" / h).is_file() for h in first.values("href") if not h.startswith("../"))


def test_a_run_page_lists_its_seeds_own_in_bold_others_linked_failures_noted(site):
    runs, out, index = site
    from ptbench.results.html.site import safe_id

    def page_of(seed: int) -> str:
        row = runs[(runs["task"] == "signal-noise[d=200]") & (runs["strategy"] == "full") & (runs["seed"] == seed)].iloc[0]
        return f"{safe_id(row['task'], row['strategy'], row['seed'], row['key'])}.html"

    text = (out / "runs" / page_of(0)).read_text()
    line = re.search(r"Seeds of this strategy on this task:\n(.*)</p>", text).group(1)
    assert line == f'<strong>0</strong>, <a href="{page_of(1)}">1</a>, <a href="{page_of(2)}">2</a> (failed)'
    failed = (out / "runs" / page_of(2)).read_text()
    assert f'<a href="{page_of(0)}">0</a>, <a href="{page_of(1)}">1</a>, <strong>2</strong> (failed)</p>' in failed


def test_task_tables_carry_the_markdown_leaderboard_numbers(site):
    runs, _, index = site
    text = index.read_text()
    markdown = leaderboard.render(runs, "scratch")
    compared = 0
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not cells[0].startswith("`") or cells[0] == "`a":
            continue  # not a task row, or the name with a pipe that splits the markdown row
        for cell in cells[1:]:
            assert f">{cell}</td>" in text, cell
        compared += 1
    assert compared == 4  # scratch and full on two tasks
    headers = Page(text)
    assert "Δ vs scratch (pp) [95% CI]" in text and "negative transfer (seeds) [95% CI]" in text
    assert 'title="signal-noise[d=100,m=10,steps=50]"' in text  # full SPEC in the heading's tooltip
    assert re.search(r'<h2 title="signal-noise\[d=100,m=10,steps=50\]">small &lt;d&gt;</h2>', text)
    assert 'data-type="number"' in text and headers.values("id").count("filter") == 1


def test_failures_plots_sections_and_charts(site):
    _, out, index = site
    text = index.read_text()
    assert 'id="failures"' in text and "status-bad" in text
    assert text.count('<img src="data:image/png;base64,') == 1
    assert "<h3>Extra &lt;b&gt;section&lt;/b&gt;</h3>" in text and "<code>code</code>" in text
    assert text.count("Plotly.newPlot(") >= 2  # one diagnostics chart per task
    assert text.count('id="diagnostics-1"') == 1 and text.count('id="diagnostics-2"') == 1
    assert text.count('"showSendToCloud": false') == text.count("Plotly.newPlot(")  # no upload button
    # plotly.js once per site, next to the index, loaded by a relative path (works from file://)
    assert '<script src="plotly.min.js"></script>' in text.split("</head>")[0]
    assert "plotly.js v" in (out / "plotly.min.js").read_text(encoding="utf-8")[:2000]
    assert "plotly.js v" not in text
    sizes = {p.name: p.stat().st_size for p in (out / "runs").glob("*.html")}
    traced = [p for p in (out / "runs").glob("*.html") if "Plotly.newPlot(" in p.read_text()]
    assert len(traced) == 2  # the runs with a trajectory, and only those load plotly.js
    for page in (out / "runs").glob("*.html"):
        head = page.read_text().split("</head>")[0]
        assert ('<script src="../plotly.min.js"></script>' in head) == (page in traced)
    assert max(sizes.values()) < 50_000 and index.stat().st_size < 200_000


def test_empty_frame_still_writes_a_page(tmp_path):
    runs = make_runs().iloc[0:0]
    index = write_site(runs, tmp_path / "empty")
    assert "No runs in the store yet" in index.read_text()
    assert list((tmp_path / "empty" / "runs").glob("*.html")) == []
