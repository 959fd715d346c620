"""A static HTML leaderboard: one index page and one page per run, viewable from file://.

The numbers are those of the markdown leaderboard (`ptbench.results.leaderboard`): the same
`summarize` and `overall_ranks` tables, the same columns and formatting. On top of them the
index has sortable tables, one filter box for every table, the report's PNG plots inlined,
and a small Plotly chart of the target diagnostics per task; every run has its own page with
its record, parameters, diagnostics, trajectory chart and provenance.

Everything the site needs is inside its folder: PNGs as data: URIs, and plotly.js written
once as `plotly.min.js` next to the index, which every page with a chart loads by a relative
`<script src>` (a copy in each page would cost 4.8 MB a page), so the folder can be zipped,
archived or opened from file:// with no network at all. At most `max_run_pages` runs get a
page (and a row in the all-runs table): past that, the failed runs first, then the run each
task table links to (the first ok seed of every task and strategy); `python -m ptbench show`
prints any run.
Templates are Jinja2 with autoescaping on, so a strategy named `x<script>` is shown as text.
Needs `pip install 'ptbench[html]'` (Jinja2 and plotly); both are imported on first use.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_escape
import json
import math
import mimetypes
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ptbench.errors import PtbenchError
from ptbench.results import glossary as gl
from ptbench.results.stats import Interval, mean_ci, overall_ranks, summarize
from ptbench.results.flatten import dotted

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: The markdown leaderboard's task-table columns (ptbench.results.leaderboard.HEADERS).
HEADERS = [
    "strategy",
    "target acc % [95% CI]",
    "Δ vs {baseline} (pp) [95% CI]",
    "negative transfer (seeds) [95% CI]",
    "source acc %",
    "seconds",
    "seeds",
]

#: Plotly's configuration for every chart: no logo linking to plotly's site and no "share
#: chart" button (it uploads to Plotly Cloud); the rest of the modebar (zoom, pan, download
#: as PNG) works offline and stays.
PLOTLY_CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True}

#: plotly.js, written once per site next to index.html.
PLOTLY_FILE = "plotly.min.js"
#: Pages for every run up to this many runs (a page is some 10-15 kB); past it, this many
#: pages: for the failed runs, then the runs the tables link to.
MAX_RUN_PAGES = 300
_PAGE_NAME = re.compile(r"[A-Za-z0-9._-]+-[0-9a-f]{10}(-x)*\.html")


@lru_cache(maxsize=1)
def site_version() -> str:
    """A digest of what shapes the pages besides the results (this module, its templates,
    the plotly version): a site written by other code is rewritten even for equal results."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for template in sorted(TEMPLATES.glob("*.j2")):
        digest.update(template.name.encode() + template.read_bytes())
    try:
        import plotly

        digest.update(str(plotly.__version__).encode())
    except ImportError:  # pragma: no cover - write_site needs it anyway
        pass
    return digest.hexdigest()[:12]


def _deps() -> tuple[Any, Any]:
    try:
        import jinja2
        import plotly  # noqa: F401
    except ImportError:
        raise PtbenchError("the HTML report needs Jinja2 and plotly: pip install 'ptbench[html]'") from None
    return jinja2, plotly


# --------------------------------------------------------------------------- small helpers


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def _num(value: Any) -> float | None:
    """A finite float, or None."""
    if _missing(value) or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _sort_key(value: Any) -> str:
    """A data-sort attribute: the raw number, or empty (sorted last) when there is none."""
    number = _num(value)
    return "" if number is None else repr(number)


def _pct(value: Any, decimals: int = 2) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number * 100:.{decimals}f}%"


def _plain(value: Any) -> str:
    if _missing(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_value(value: Any) -> str:
    from ptbench.spec import format_value

    return format_value(value)


def task_spec(task: str, params: Any) -> str:
    """The full SPEC of a task variant, every parameter written out (the store's task names
    show only the parameters that differ from the defaults)."""
    base = str(task).split("[", 1)[0]
    if not isinstance(params, dict) or not params:
        return str(task)
    return f"{base}[{','.join(f'{k}={_format_value(v)}' for k, v in params.items())}]"


def safe_id(task: str, strategy: str, seed: Any, key: str) -> str:
    """A file name for a run page: readable, ASCII, and unique through a hash of the key."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{str(task).split('[', 1)[0]}_{strategy}_s{seed}").strip("-.")
    digest = hashlib.sha1(str(key).encode("utf-8")).hexdigest()[:10]
    return f"{readable[:60]}-{digest}"


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    return {k: n for k, v in values.items() if not isinstance(v, bool) and (n := _num(v)) is not None}


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    if not mime.startswith("image/"):
        raise PtbenchError(f"{str(path)!r} is not an image; the HTML report inlines PNG plots")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PtbenchError(f"cannot read the plot {str(path)!r}: {err.strerror}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------- markdown sections


def _inline_md(text: str, markup: Any) -> Any:
    """Escape, then `code`, **bold** and *italic*: the subset leaderboard sections use."""
    escaped = str(markup.escape(text))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    escaped = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", escaped)
    return markup.Markup(escaped)


def _code_spans(text: str) -> Any:
    """Escaped text with its `code` spans as <code> (the glossary's markup, nothing more)."""
    import markupsafe

    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: plain text
        return markupsafe.escape(text)
    return markupsafe.Markup("".join(
        f"<code>{markupsafe.escape(p)}</code>" if i % 2 else str(markupsafe.escape(p)) for i, p in enumerate(parts)
    ))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_html(text: str) -> Any:
    """The markdown of a leaderboard section (headings, paragraphs, pipe tables, inline code)
    as HTML; every piece of text is escaped first, so nothing in it becomes markup."""
    import markupsafe

    parts: list[str] = []
    for block in re.split(r"\n\s*\n", str(text).strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", lines[0])
        if heading and len(lines) == 1:
            level = min(len(heading.group(1)) + 1, 6)  # the page's own title is the only h1
            parts.append(f"<h{level}>{_inline_md(heading.group(2), markupsafe)}</h{level}>")
        elif all(line.lstrip().startswith("|") for line in lines):
            rows = [line for line in lines if not re.fullmatch(r"\s*\|[\s:|-]+\|\s*", line)]
            head, body = rows[0], rows[1:]
            html = ['<table class="md sortable"><thead><tr>']
            html += [f"<th>{_inline_md(c, markupsafe)}</th>" for c in _cells(head)]
            html.append("</tr></thead><tbody>")
            for row in body:
                html.append("<tr>" + "".join(f"<td>{_inline_md(c, markupsafe)}</td>" for c in _cells(row)) + "</tr>")
            html.append("</tbody></table>")
            parts.append("".join(html))
        else:
            parts.append(f"<p>{_inline_md(' '.join(line.strip() for line in lines), markupsafe)}</p>")
    return markupsafe.Markup("\n".join(parts))


# --------------------------------------------------------------------------- charts


def _chart_html(fig: dict[str, Any], div_id: str) -> Any:
    """A Plotly figure (a plain dict: building graph objects costs far more than writing the
    page) as a div and its newPlot call; plotly.js itself comes once per page. Written here
    as plotly.io.to_html writes it, because importing plotly.io (and narwhals under it) cost
    0.15 s of every site written, more than the pages themselves."""
    import markupsafe

    layout = fig.get("layout", {})
    height = layout.get("height")
    outer = f"{height}px" if isinstance(height, (int, float)) and not isinstance(height, bool) else "100%"
    target = json.dumps(div_id)
    html = (
        f'<div style="height:{outer}; width:100%;"><div id="{html_escape.escape(div_id)}" class="plotly-graph-div" '
        'style="height:100%; width:100%;"></div><script>window.PLOTLYENV=window.PLOTLYENV || {};'
        f"if (document.getElementById({target})) {{Plotly.newPlot({target}, {_figure_json(fig.get('data', []))}, "
        f"{_figure_json(layout)}, {json.dumps(PLOTLY_CONFIG)})}};</script></div>"
    )
    return markupsafe.Markup(html)


def _figure_json(value: Any) -> str:
    """Strict JSON for a figure's part, safe inside a <script>: NaN and infinities become
    null, and <, > and / are escaped (as plotly's own encoder does)."""
    text = json.dumps(value, separators=(",", ":"))
    if "NaN" in text or "Infinity" in text:  # maybe inside a string only; decoding tells
        text = json.dumps(json.loads(text, parse_constant=lambda _: None), separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\u002f")


#: The look of every chart (the figure dicts skip plotly's Python templates, which are slow).
_AXIS = {"gridcolor": "#e5e8ee", "zerolinecolor": "#c9ced8", "linecolor": "#c9ced8", "automargin": True}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _short(value: Any) -> Any:
    """A chart's number with 5 significant digits (hover shows 4; full precision would
    double the size of a page with many charts); None and non-finite values as None."""
    number = _num(value)
    return None if number is None else float(f"{number:.5g}")


def _layout(**fields: Any) -> dict[str, Any]:
    base = {
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#1d2330"},
        "colorway": _PALETTE,
        "hovermode": "closest",
    }
    return {**base, **fields}


def diagnostics_chart(runs: pd.DataFrame, task: str, label: str, div_id: str, order: Sequence[str] = ()) -> Any | None:
    """Bar chart of the target model's diagnostics per strategy (mean over seeds, 95% t
    interval), one diagnostic at a time with a menu to pick it; None when there are none.
    Bars follow `order` (the task table's), then any other strategy."""
    per_strategy: dict[str, list[dict[str, float]]] = {}
    for r in runs.itertuples():
        diagnostics = r.diagnostics if isinstance(r.diagnostics, dict) else {}
        values = _numeric(dotted(diagnostics.get("target") or {}))
        if values:
            per_strategy.setdefault(r.strategy, []).append(values)
    if not per_strategy:
        return None
    keys = list(dict.fromkeys(k for records in per_strategy.values() for rec in records for k in rec))
    keys.sort(key=lambda k: gl.order(k.split(".")[-1]))  # the glossary's order: u_max_all first
    strategies = [s for s in order if s in per_strategy] + [s for s in per_strategy if s not in order]
    traces = []
    for i, key in enumerate(keys):
        cis = [mean_ci([rec.get(key, math.nan) for rec in per_strategy[s]]) for s in strategies]
        traces.append(
            {
                "type": "bar",
                "x": strategies,
                "y": [None if ci.n == 0 else _short(ci.mean) for ci in cis],
                "name": key,
                "visible": i == 0,
                "marker": {"color": _PALETTE[0]},
                "error_y": {
                    "type": "data",
                    "array": [0.0 if ci.n < 2 else _short(ci.high - ci.mean) for ci in cis],
                    "arrayminus": [0.0 if ci.n < 2 else _short(ci.mean - ci.low) for ci in cis],
                    "visible": True,
                    "color": "#1d2330",
                },
                "hovertemplate": "%{x}<br>" + key.replace("%", "%%") + " = %{y:.4g}<extra></extra>",
            }
        )
    layout = _layout(
        title={"text": f"target diagnostics: {label}", "font": {"size": 14}},
        height=360,
        margin={"l": 60, "r": 20, "t": 80, "b": 60},
        xaxis={**_AXIS, "type": "category"},
        yaxis={**_AXIS, "title": {"text": keys[0]}},
        showlegend=False,
    )
    if len(keys) > 1:
        buttons = [
            {
                "label": key,
                "method": "update",
                "args": [{"visible": [j == i for j in range(len(keys))]}, {"yaxis.title.text": key}],
            }
            for i, key in enumerate(keys)
        ]
        layout["updatemenus"] = [
            {"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom", "pad": {"b": 6}}
        ]
        layout["title"]["x"], layout["title"]["xanchor"] = 0.5, "center"
    return _chart_html({"data": traces, "layout": layout}, div_id)


def trajectory_chart(trajectory: Any, div_id: str) -> Any | None:
    """Line chart of the diagnostics over training steps, one panel per model (source,
    target); click a legend entry to hide a line. None when nothing was traced."""
    if not isinstance(trajectory, dict):
        return None
    sides = [(side, recs) for side, recs in trajectory.items() if isinstance(recs, list) and recs]
    if not sides:
        return None
    gap = 0.08
    width = (1.0 - gap * (len(sides) - 1)) / len(sides)
    traces: list[dict[str, Any]] = []
    layout = _layout(height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50}, annotations=[], legend={"orientation": "v"})
    colours: dict[str, tuple[str, str]] = {}
    for n, (side, records) in enumerate(sides):
        suffix = "" if n == 0 else str(n + 1)
        left = n * (width + gap)
        layout[f"xaxis{suffix}"] = {**_AXIS, "domain": [left, left + width], "anchor": f"y{suffix}", "title": {"text": "step"}}
        layout[f"yaxis{suffix}"] = {**_AXIS, "anchor": f"x{suffix}"}
        layout["annotations"].append(
            {"text": f"{side} model", "x": left + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
             "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 14}}
        )
        flats = [_numeric(dotted(rec)) for rec in records if isinstance(rec, dict)]
        steps = [f.get("step", i) for i, f in enumerate(flats)]
        for key in dict.fromkeys(k for f in flats for k in f if k != "step"):
            new = key not in colours
            if new:  # past ten lines the colours come round again, dashed, then dotted
                k = len(colours)
                colours[key] = (_PALETTE[k % len(_PALETTE)], ("solid", "dash", "dot")[(k // len(_PALETTE)) % 3])
            colour, dash = colours[key]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": steps,
                    "y": [_short(f.get(key)) for f in flats],
                    "name": key,
                    "legendgroup": key,
                    "showlegend": new,
                    "line": {"color": colour, "dash": dash},
                    "marker": {"size": 4, "color": colour},
                    "xaxis": f"x{suffix}",
                    "yaxis": f"y{suffix}",
                }
            )
    return _chart_html({"data": traces, "layout": layout}, div_id)


@lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    """plotly.js, minified (some 5 MB), written once per site as PLOTLY_FILE."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _write(path: Path, data: str | bytes) -> None:
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as err:
        raise PtbenchError(f"cannot write {str(path)!r}: {err.strerror}; pass another --out folder") from None


def _write_plotly(out: Path) -> None:
    """out/plotly.min.js, unless the same file is there already."""
    path = out / PLOTLY_FILE
    data = _plotly_js()
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    _write(path, data)


# --------------------------------------------------------------------------- page contents


def _interval_cell(ci: Interval, signed: bool = False) -> dict[str, str]:
    return {"text": ci.fmt(signed=signed), "sort": "" if ci.n == 0 else _sort_key(ci.mean)}


def _run_records(runs: pd.DataFrame, max_pages: int | None = MAX_RUN_PAGES) -> list[dict[str, Any]]:
    """One record per run with its page's file name, in a stable order; `href` is None for
    the runs that get no page: with more than `max_pages` runs, only `max_pages` get one,
    the failed runs first, then the first ok seed of every task and strategy (the run its
    table links to), in table order."""
    ordered = runs.sort_values(["task", "strategy", "seed"], kind="stable")
    seen: set[str] = set()
    records = []
    for _, r in ordered.iterrows():
        rid = safe_id(r["task"], r["strategy"], r["seed"], r.get("key", f"{r['task']}|{r['strategy']}|{r['seed']}"))
        while rid in seen:  # two rows of one key (a hand-built frame); never in a store
            rid += "-x"
        seen.add(rid)
        records.append({"row": r, "id": rid, "href": f"runs/{rid}.html"})
    if max_pages is not None and len(records) > max_pages:
        wanted = [rec for rec in records if rec["row"]["status"] != "ok"] + list(_first_records(records).values())
        keep = {id(rec) for rec in list({id(rec): rec for rec in wanted}.values())[:max_pages]}
        for rec in records:
            if id(rec) not in keep:
                rec["href"] = None
    return records


def _first_records(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, strategy) -> its first ok run (lowest seed), else its first run."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in sorted(records, key=lambda rec: rec["row"]["status"] != "ok"):  # stable: seeds stay in order
        first.setdefault((rec["row"]["task"], rec["row"]["strategy"]), rec)
    return first


def _first_runs(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(task, strategy) -> the page of its first ok run (lowest seed), else its first run."""
    return {key: rec["href"] for key, rec in _first_records(records).items() if rec["href"]}


def _overview(runs: pd.DataFrame) -> str:
    versions = ", ".join(sorted({str(v) for v in runs["ptbench_version"].dropna()})) if "ptbench_version" in runs else ""
    commits = sorted({str(c)[:10] for c in runs["git_commit"].dropna()}) if "git_commit" in runs else []
    devices = ", ".join(sorted({str(d) for d in runs["device"].dropna()})) if "device" in runs else ""
    return (
        f"{len(runs)} runs ({int((runs['status'] == 'ok').sum())} ok) over {runs['task'].nunique()} tasks, "
        f"ptbench {versions or '?'}" + (f", commit {', '.join(commits)}" if commits else "") + f", device {devices or '?'}."
    )


def _index_context(
    runs: pd.DataFrame,
    records: list[dict[str, Any]],
    baseline: str,
    labels: dict[str, str],
    plots: Sequence[Path],
    sections_md: Sequence[str],
) -> dict[str, Any]:
    first = _first_runs(records)
    table = summarize(runs, baseline) if not runs.empty else pd.DataFrame()
    specs = {}
    for r in runs.itertuples():
        specs.setdefault(r.task, task_spec(r.task, r.task_params))

    ranking = []
    if not table.empty:
        for i, r in enumerate(overall_ranks(table).itertuples()):
            tasks_of = sorted(table.loc[table["strategy"] == r.strategy, "task"])
            ranking.append(
                {
                    # strategies on fewer tasks than the others are not ranked with them
                    "place": i + 1 if r.complete else "–",
                    "strategy": r.strategy,
                    "href": first.get((tasks_of[0], r.strategy)) if tasks_of else None,
                    "mean_rank": f"{r.mean_rank:.2f}",
                    "mean_rank_sort": _sort_key(r.mean_rank),
                    "tasks": int(r.tasks),
                    "filter": " ".join([r.strategy, *tasks_of, *(labels.get(t, t) for t in tasks_of)]),
                }
            )

    ok = runs[runs["status"] == "ok"] if not runs.empty else runs
    tasks = []
    if not table.empty:
        for n, (task, rows) in enumerate(table.groupby("task", sort=True)):
            body = []
            for _, r in rows.sort_values("acc_mean", ascending=False).iterrows():
                neg = r["negative"]
                incidence = "n/a" if neg.n == 0 else f"{r['negative_k']}/{neg.n} [{neg.low * 100:.0f}, {neg.high * 100:.0f}]%"
                seconds = _num(r["seconds"])
                body.append(
                    {
                        "strategy": r["strategy"],
                        "href": first.get((task, r["strategy"])),
                        "filter": f"{task} {labels.get(task, task)} {r['strategy']}",
                        "cells": [
                            _interval_cell(r["acc"]),
                            _interval_cell(r["delta"], signed=True),
                            {"text": incidence, "sort": "" if neg.n == 0 else _sort_key(neg.mean)},
                            _interval_cell(r["source_acc"]),
                            {"text": "n/a" if seconds is None else f"{seconds:.2f}", "sort": _sort_key(seconds)},
                            {"text": str(r["seeds"]), "sort": _sort_key(r["seeds"])},
                        ],
                    }
                )
            tasks.append(
                {
                    "task": task,
                    "label": labels.get(task, task),
                    "spec": specs.get(task, task),
                    "anchor": f"task-{n + 1}",
                    "rows": body,
                    "chart": diagnostics_chart(
                        ok[ok["task"] == task], task, labels.get(task, task), f"diagnostics-{n + 1}", [r["strategy"] for r in body]
                    ),
                }
            )

    failures = [
        {
            "task": rec["row"]["task"],
            "label": labels.get(rec["row"]["task"], rec["row"]["task"]),
            "strategy": rec["row"]["strategy"],
            "seed": rec["row"]["seed"],
            "status": rec["row"]["status"],
            "error": ("" if _missing(rec["row"].get("error")) else str(rec["row"]["error"]))[:160],
            "href": rec["href"],
        }
        for rec in records
        if rec["row"]["status"] != "ok"
    ]
    bounded = any(not rec["href"] for rec in records)
    all_runs = [
        {
            "task": rec["row"]["task"],
            "label": labels.get(rec["row"]["task"], rec["row"]["task"]),
            "strategy": rec["row"]["strategy"],
            "seed": rec["row"]["seed"],
            "status": rec["row"]["status"],
            "acc": _pct(rec["row"].get("target_acc")),
            "acc_sort": _sort_key(rec["row"].get("target_acc")),
            "href": rec["href"],
        }
        for rec in records
        if rec["href"] or not bounded  # past the bound, the runs with a page: a row costs as much as a small page
    ]
    images = [{"name": Path(p).name, "src": _data_uri(Path(p))} for p in plots]
    g = gl.glossary(runs, baseline)
    pages = sum(1 for rec in records if rec["href"])
    entries = lambda pairs: [(name, _code_spans(text)) for name, text in pairs]  # noqa: E731
    return {
        "glossary": {"columns": entries(g.columns), "sides": entries(g.sides), "diagnostics": entries(g.diagnostics),
                     "notes": [_code_spans(note) for note in g.notes]},
        "column_help": {name: text.replace("`", "") for name, text in g.columns},
        "pages_note": "" if not bounded else (
            f"This table lists the {pages} of the {len(records)} runs that have a page: the failed runs, then the first ok "
            "seed of each task and strategy, the run its table links to. `python -m ptbench export` lists every run and "
            "`python -m ptbench show 'TASK|STRATEGY|SEED'` prints any one."
        ),
        "overview": _overview(runs) if not runs.empty else "",
        "headers": [h.format(baseline=baseline) for h in HEADERS],
        "ranking": ranking,
        "tasks": tasks,
        "failures": failures,
        "all_runs": all_runs,
        "images": images,
        "sections": [markdown_html(md) for md in sections_md if md and str(md).strip()],
        "has_charts": any(t["chart"] is not None for t in tasks),
    }


def _params(values: Any) -> list[tuple[str, str]]:
    if not isinstance(values, dict):
        return []
    return [(str(k), _format_value(v) if not isinstance(v, (dict, list)) else str(v)) for k, v in values.items()]


def _run_context(rec: dict[str, Any], siblings: "SeedLinks", labels: dict[str, str]) -> dict[str, Any]:
    r = rec["row"]
    diagnostics = dict(r["diagnostics"]) if isinstance(r.get("diagnostics"), dict) else {}
    trajectory = diagnostics.pop("trajectory", None) or {}
    sides = {k: v for k, v in diagnostics.items() if isinstance(v, dict)}
    loose = {k: v for k, v in diagnostics.items() if not isinstance(v, dict)}
    if loose:
        sides = {"": loose, **sides}
    flat = {name: dotted(side) for name, side in sides.items()}
    keys = list(dict.fromkeys(k for side in flat.values() for k in side))
    diag_rows = [[k] + [_plain(flat[name][k]) if k in flat[name] else "" for name in sides] for k in keys]
    error = None if _missing(r.get("error")) else str(r["error"])
    dirty = r.get("git_dirty")
    fields = [
        ("task", r["task"]),
        ("strategy", r["strategy"]),
        ("seed", str(r["seed"])),
        ("status", str(r["status"])),
        ("target accuracy", f"test {_pct(r.get('target_acc'))}, train {_pct(r.get('target_train_acc'))}"),
        ("source accuracy", _pct(r.get("source_acc"))),
        ("seconds", f"source {_plain(r.get('source_seconds'))}, target {_plain(r.get('target_seconds'))}"),
        ("device", _plain(r.get("device"))),
        ("key", str(r.get("key", ""))),
    ]
    provenance = [
        ("ptbench", _plain(r.get("ptbench_version"))),
        ("torch", _plain(r.get("torch_version"))),
        ("python", _plain(r.get("python_version"))),
        ("git commit", _plain(r.get("git_commit"))),
        ("uncommitted changes", "n/a" if _missing(dirty) else ("yes" if int(dirty) else "no")),
        ("host", _plain(r.get("host"))),
        ("created", _plain(r.get("created_at"))),
    ]
    chart = trajectory_chart(trajectory, "trajectory")
    task = r["task"]
    return {
        "title": f"{task} | {r['strategy']} | seed {r['seed']}",
        "run": r,
        "label": labels.get(task, task),
        "spec": task_spec(task, r.get("task_params")),
        "status_ok": r["status"] == "ok",
        "error": error,
        "fields": fields,
        "task_params": _params(r.get("task_params")),
        "strategy_params": _params(r.get("strategy_params")),
        "diag_sides": list(sides),
        "diag_rows": diag_rows,
        "trajectory_records": {side: len(recs) for side, recs in trajectory.items() if isinstance(recs, list) and recs},
        "chart": chart,
        "has_charts": chart is not None,
        "provenance": provenance,
        "seeds": seed_line(rec, siblings) if len(siblings) > 1 else None,
        "plotly_src": f"../{PLOTLY_FILE}",
    }


class SeedLinks:
    """The seeds of one task and strategy as a run page lists them, each as HTML twice: as
    the other pages show it (a link where it has a page; its status when not ok) and as its
    own page does (bold). Built once per task and strategy: a page per seed that read every
    sibling's row again made the site quadratic in the seeds (64 seeds: 4,096 row reads and
    20,000 template lookups, most of the site's time)."""

    def __init__(self, records: list[dict[str, Any]]):
        import markupsafe

        self.index = {id(rec): i for i, rec in enumerate(records)}
        self.plain, self.bold = [], []
        for rec in records:
            seed, status = markupsafe.escape(rec["row"]["seed"]), rec["row"]["status"]
            note = "" if status == "ok" else f" ({markupsafe.escape(status)})"
            link = f'<a href="{markupsafe.escape(rec["id"] + ".html")}">{seed}</a>' if rec["href"] else str(seed)
            self.plain.append(link + note)
            self.bold.append(f"<strong>{seed}</strong>{note}")

    def __len__(self) -> int:
        return len(self.plain)


def seed_line(rec: dict[str, Any], siblings: SeedLinks) -> Any:
    """The page of `rec`'s list of its siblings' seeds: its own in bold, the others linked."""
    import markupsafe

    mine = siblings.index[id(rec)]
    return markupsafe.Markup(", ".join(siblings.bold[i] if i == mine else text for i, text in enumerate(siblings.plain)))


@lru_cache(maxsize=1)
def _environment() -> Any:
    """The templates' environment, once per process: it keeps each template compiled, and
    compiling them is most of a small site's cost (`warm` does it ahead, while a sweep's
    workers compute)."""
    jinja2, _ = _deps()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def warm() -> None:
    """Compile the site's templates now, so that writing the site later does not."""
    env = _environment()
    for name in ("index.html.j2", "run.html.j2"):
        env.get_template(name)


def write_site(
    runs: pd.DataFrame,
    out_dir: str | Path,
    baseline: str = "scratch",
    title: str = "ptbench leaderboard",
    labels: dict[str, str] | None = None,
    plots: Iterable[Path] = (),
    sections_md: Iterable[str] = (),
    max_run_pages: int | None = MAX_RUN_PAGES,
    stamp: str | None = None,
) -> Path:
    """Write `out_dir/index.html`, `out_dir/runs/<id>.html` for the runs of `runs` (the
    store's frame, `Store.frame()`; every run up to `max_run_pages`, see the module's doc)
    and `out_dir/plotly.min.js` when a page has a chart; returns the index's path.

    `labels` maps task instance names to the headings shown for them (the full SPEC stays in
    a tooltip); `plots` are image files (PNG) inlined into the index; `sections_md` are extra
    markdown sections (a strategy's `leaderboard_section`, say) rendered after the tables;
    `stamp` is a line (an HTML comment) written at the end of the index.
    Run pages left in out_dir/runs/ by an earlier write, for runs no longer shown, are removed.
    """
    env = _environment()
    labels = dict(labels or {})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PtbenchError(f"the report folder {str(out)!r} is a file; pass a folder")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PtbenchError(f"cannot create the report folder {str(out)!r}: {err.strerror}") from None
    records = _run_records(runs, max_run_pages) if not runs.empty else []
    context = _index_context(runs, records, baseline, labels, list(plots), list(sections_md))
    html = env.get_template("index.html.j2").render(title=title, baseline=baseline, plotly_src=PLOTLY_FILE, **context)
    charts = context["has_charts"]

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["row"]["task"], rec["row"]["strategy"]), []).append(rec)
    page = env.get_template("run.html.j2")
    written = set()
    links = {key: SeedLinks(members) for key, members in groups.items()}
    for rec in records:
        if not rec["href"]:
            continue
        siblings = links[(rec["row"]["task"], rec["row"]["strategy"])]
        run_context = _run_context(rec, siblings, labels)
        charts = charts or run_context["has_charts"]
        _write(out / rec["href"], page.render(site_title=title, **run_context))
        written.add(Path(rec["href"]).name)
    if charts:
        _write_plotly(out)
    for old in (out / "runs").glob("*.html"):
        if old.name not in written and _PAGE_NAME.fullmatch(old.name):
            try:
                old.unlink()
            except OSError:
                pass
    index = out / "index.html"
    _write(index, html.rstrip("\n") + "\n" + (f"{stamp}\n" if stamp else ""))
    return index
