"""The leaderboard: markdown tables (tabulate, pipe format) built from the store.

Every number is a mean over seeds with its 95% interval, and every strategy is also shown as
a paired difference to the baseline, because "transfer helps" is a claim about that
difference, not about two overlapping accuracy intervals.

A suite's task labels (`[labels]`, see `ptbench.sweep.plan`) head the task sections, with the
full instance name under them; the page ends with the glossary (`ptbench.results.glossary`).
The same summary is also given as csv, json or LaTeX (`render_table`), and as the HTML site
(`write_html`, rewritten on the same rule as the markdown page).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
from tabulate import tabulate

from ptbench.errors import PtbenchError
from ptbench.results import glossary as gl
from ptbench.results import markdown as md
from ptbench.results.stats import Interval, overall_ranks, summarize

HEADERS = [
    "strategy",
    "target acc % [95% CI]",
    "Δ vs {baseline} (pp) [95% CI]",
    "negative transfer (seeds) [95% CI]",
    "source acc %",
    "seconds",
    "seeds",
]



def _source(interval) -> str:
    """The source column: "-" where no source model was trained (only strategies that
    inherit nothing ran, and the donor cache did not hold the model)."""
    return "-" if interval.n == 0 or math.isnan(interval.mean) else interval.fmt()

def task_table(rows: pd.DataFrame, baseline: str, stable: bool = False) -> str:
    body = []
    for _, r in rows.sort_values("acc_mean", ascending=False).iterrows():
        neg = r["negative"]
        incidence = "n/a" if neg.n == 0 else f"{r['negative_k']}/{neg.n} [{neg.low * 100:.0f}, {neg.high * 100:.0f}]%"
        body.append(
            [
                md.code(r["strategy"]),
                r["acc"].fmt(),
                r["delta"].fmt(signed=True),
                incidence,
                _source(r["source_acc"]),
                "·" if stable else f"{r['seconds']:.2f}",
                r["seeds"],
            ]
        )
    headers = [h.format(baseline=md.text(baseline)) for h in HEADERS]
    return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)


def label_text(label: str) -> str:
    """A suite's label as markdown text: escaped like any text, but `->` stays readable (a
    lone `>` starts no tag, and a label never starts a line)."""
    return md.text(label).replace("&gt;", ">")


def task_cell(task: str, labels: dict[str, str] | None) -> str:
    """A task in a table cell: its label with the instance name next to it, or the name."""
    label = (labels or {}).get(task)
    return f"{label_text(label)} ({md.code(task)})" if label else md.code(task)


def failures_table(runs: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    bad = runs[runs["status"] != "ok"]
    body = [[task_cell(r.task, labels), md.code(r.strategy), r.seed, md.text(r.status), md.text(r.error or "", md.ERROR_CAP)]
            for r in bad.itertuples()]
    return tabulate(body, headers=["task", "strategy", "seed", "status", "error"], tablefmt="pipe", disable_numparse=True)


def task_heading(task: str, labels: dict[str, str] | None) -> list[str]:
    """A task section's heading: `## label` and the instance name on the line under it
    (markdown has no hover), or `## name` when the task has no label."""
    label = (labels or {}).get(task)
    if not label:
        return [f"## {md.code(task)}", ""]
    return [f"## {label_text(label)}", "", md.code(task), ""]


def _prose(text: str) -> str:
    """Running text (the glossary's) escaped like `md.text`, but whole and with its spaces."""
    import html

    out = html.escape(str(text), quote=False).replace("&gt;", ">")
    for char in "\\`*_[]|":
        out = out.replace(char, "\\" + char)
    return " ".join(out.split("\n"))


def glossary_section(runs: pd.DataFrame, baseline: str) -> str:
    return gl.markdown(gl.glossary(runs, baseline), escape=_prose, code=md.code)


def render(
    runs: pd.DataFrame,
    baseline: str = "scratch",
    title: str = "ptbench leaderboard",
    sections: Sequence[Callable[[pd.DataFrame], str | None]] = (),
    stable: bool = False,
    labels: dict[str, str] | None = None,
) -> str:
    """The whole leaderboard page. `sections` are extra renderers (a strategy's
    `leaderboard_section`, say) given the summary table; those returning None are skipped.
    `stable` leaves out what changes from machine to machine with equal results (the
    seconds column, the provenance line): its digest says whether the results changed.
    `labels` maps task instance names to the suite's labels for them."""
    lines = [f"# {md.text(title)}", ""]
    if runs.empty:
        return "\n".join(lines + ["No runs in the store yet: `python -m ptbench run`.", ""])
    table = summarize(runs, baseline)
    code = md.code(baseline)
    n_tasks = runs["task"].nunique()
    counts = f"{len(runs)} runs ({int((runs['status'] == 'ok').sum())} ok) over {n_tasks} task{'s' if n_tasks != 1 else ''}"
    if stable:
        lines += [counts + ".", ""]
    else:
        versions = ", ".join(sorted({str(v) for v in runs["ptbench_version"].dropna()}))
        commits = sorted({str(c)[:10] for c in runs["git_commit"].dropna()})
        devices = ", ".join(sorted({str(d) for d in runs["device"].dropna()}))
        lines += [
            f"{counts}, ptbench {md.text(versions or '?')}" + (f", commit {md.text(', '.join(commits))}" if commits else "")
            + f", device {md.text(devices)}.",
            "",
        ]
    lines += [
        "Accuracy is on held-out test data, as a mean over seeds with a 95% t interval. "
        f"Δ is the paired difference to {code} under the same seed (same target data, same "
        "initialisation of everything not inherited), in percentage points. *Negative transfer* "
        f"counts the seeds where the strategy's target accuracy is below {code}'s, with a 95% "
        "Wilson interval for how often that happens. The negative transfer gap of Wang et al. "
        "(CVPR 2019), target error with the source minus target error without it, is −Δ.",
        "",
    ]
    if not table.empty:
        lines += ranking(overall_ranks(table), table["task"].nunique())
        for task, rows in table.groupby("task", sort=True):
            lines += task_heading(task, labels) + [task_table(rows, baseline, stable), ""]
        for section in sections:
            text = section(table)
            if text:
                lines += [text.rstrip(), ""]
    if (runs["status"] != "ok").any():
        lines += ["## Failed runs", "", failures_table(runs, labels), ""]
    lines += [glossary_section(runs, baseline), ""]
    return "\n".join(lines)


def ranking(ranks: pd.DataFrame, n_tasks: int) -> list[str]:
    """The overall ranking over the strategies present on every task; those on fewer tasks
    follow in a table of their own (a mean rank over fewer tasks is not comparable)."""
    complete, partial = ranks[ranks["complete"]], ranks[~ranks["complete"]]
    over = f"the {n_tasks} tasks" if n_tasks != 1 else "the task"
    lines = ["## Overall ranking", "", f"Mean rank of target accuracy over {over} (1 is best)."]
    if not partial.empty:
        lines[-1] += f" Only strategies run on all {n_tasks} tasks are ranked; the others follow apart, with their task count."
    lines += ["", tabulate(
        [[i + 1, md.code(r.strategy), f"{r.mean_rank:.2f}", r.tasks] for i, r in enumerate(complete.itertuples())],
        headers=["#", "strategy", "mean rank", "tasks"], tablefmt="pipe", disable_numparse=True,
    ), ""]
    if not partial.empty:
        lines += [f"Strategies on fewer than {n_tasks} tasks (mean rank over their own tasks only):", "", tabulate(
            [["–", md.code(r.strategy), f"{r.mean_rank:.2f}", r.tasks] for r in partial.itertuples()],
            headers=["#", "strategy", "mean rank", "tasks"], tablefmt="pipe", disable_numparse=True,
        ), ""]
    return lines


def strategy_sections(registry, runs: pd.DataFrame) -> list[Callable[[pd.DataFrame], str | None]]:
    """The `leaderboard_section` hooks of the registered strategies that have runs."""
    present = set(runs["strategy"].str.split("[", n=1).str[0]) if not runs.empty else set()
    return [cls.leaderboard_section for name, cls in sorted(registry.strategies.items()) if name in present]


#: The last line of a written leaderboard: the digest of its stable rendering.
DIGEST_MARK = "<!-- ptbench results digest: "


def results_digest(page: str) -> str:
    return hashlib.sha256(page.encode()).hexdigest()[:20]


def write_page(path: Path, page: str, stable_page: str) -> bool:
    """Write `page` to `path` unless the file there already shows the same results (its
    digest line matches `stable_page`'s): equal results measured on another machine, or
    at another commit, leave a committed page as it is. True when the file was written."""
    digest = results_digest(stable_page)
    mark = f"{DIGEST_MARK}{digest} (results only: timings and provenance are left out) -->"
    try:
        if path.is_file() and mark in path.read_text(encoding="utf-8", errors="replace"):
            return False
        path.write_text(page.rstrip("\n") + "\n\n" + mark + "\n", encoding="utf-8")
    except OSError as err:
        raise PtbenchError(f"cannot write the leaderboard {str(path)!r}: {err.strerror}; pass another --leaderboard/--out folder") from None
    return True


def _folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PtbenchError(f"the leaderboard folder {str(out)!r} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PtbenchError(f"cannot create the leaderboard folder {str(out)!r}: {err.strerror}") from None
    return out


def write(
    runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch", registry=None, title: str = "ptbench leaderboard",
    labels: dict[str, str] | None = None,
) -> tuple[Path, bool]:
    """Write out_dir/README.md; (its path, whether it was rewritten)."""
    out = _folder(out_dir)
    sections = strategy_sections(registry, runs) if registry is not None else []
    path = out / "README.md"
    page = render(runs, baseline, title, sections, labels=labels)
    return path, write_page(path, page, render(runs, baseline, title, sections, stable=True, labels=labels))


def write_html(
    runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch", registry=None, title: str = "ptbench leaderboard",
    labels: dict[str, str] | None = None, plots: Iterable[Path] = (), force: bool = False,
) -> tuple[Path, bool]:
    """Write the HTML site (out_dir/index.html, out_dir/runs/, out_dir/plotly.min.js) on the
    markdown page's rule: not when the index there already shows the same results (its
    digest comment matches), unless `force`. (index path, whether it was written). Needs
    Jinja2 and plotly (a PtbenchError says how to install them)."""
    from ptbench.results.html import write_site
    from ptbench.results.html.site import site_version

    out = _folder(out_dir)
    sections = strategy_sections(registry, runs) if registry is not None else []
    digest = results_digest(render(runs, baseline, title, sections, stable=True, labels=labels))
    mark = f"{DIGEST_MARK}{digest} (results only: timings and provenance are left out), site {site_version()} -->"
    index = out / "index.html"
    try:
        if not force and index.is_file() and mark in index.read_text(encoding="utf-8", errors="replace")[-2000:]:
            return index, False
    except OSError:
        pass
    table = summarize(runs, baseline) if not runs.empty else pd.DataFrame()
    extra = [text for section in sections if not table.empty and (text := section(table))]
    return write_site(runs, out, baseline, title, labels=labels, plots=plots, sections_md=extra, stamp=mark), True


# --------------------------------------------------------------------------- csv, json, latex

#: The formats `render_table` writes (md and html are pages of their own).
TABLE_FORMATS = ("csv", "json", "latex")


def _number(value: Any, scale: float = 1.0) -> float | None:
    try:
        out = float(value) * scale
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _interval(prefix: str, ci: Interval, scale: float = 100.0) -> dict[str, Any]:
    empty = ci.n == 0
    return {
        prefix: None if empty else _number(ci.mean, scale),
        f"{prefix}_low": None if empty else _number(ci.low, scale),
        f"{prefix}_high": None if empty else _number(ci.high, scale),
    }


def summary_records(runs: pd.DataFrame, baseline: str = "scratch", labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One record per (task, strategy), in the page's order, with the page's numbers as
    numbers: percentages (target_acc_pct, delta_pp, ...) with their 95% bounds, the
    negative-transfer count, seconds, seeds and the overall mean rank."""
    table = summarize(runs, baseline) if not runs.empty else pd.DataFrame()
    if table.empty:
        return []
    ranks = overall_ranks(table).set_index("strategy")
    records = []
    for task, rows in table.groupby("task", sort=True):
        for _, r in rows.sort_values("acc_mean", ascending=False).iterrows():
            neg: Interval = r["negative"]
            records.append({
                "task": task,
                "label": (labels or {}).get(task, ""),
                "strategy": r["strategy"],
                **_interval("target_acc_pct", r["acc"]),
                **_interval(f"delta_vs_{baseline}_pp", r["delta"]),
                "negative_seeds": int(r["negative_k"]),
                "paired_seeds": int(neg.n),
                **_interval("negative_rate_pct", neg),
                **_interval("source_acc_pct", r["source_acc"]),
                "seconds": _number(r["seconds"]),
                "seeds": int(r["seeds"]),
                "rank_on_task": _number(r["rank"]),
                "mean_rank": _number(ranks.loc[r["strategy"], "mean_rank"]),
            })
    return records


def render_table(runs: pd.DataFrame, fmt: str, baseline: str = "scratch", labels: dict[str, str] | None = None,
                 title: str = "ptbench leaderboard") -> str:
    """The leaderboard's summary as csv (one row per task and strategy), json (the same
    records) or LaTeX (one booktabs table per task, as on the page)."""
    records = summary_records(runs, baseline, labels)
    if fmt == "csv":
        frame = pd.DataFrame.from_records(records, columns=list(records[0]) if records else ["task", "strategy"])
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps({"title": title, "baseline": baseline, "rows": records}, indent=1) + "\n"
    if fmt == "latex":
        return _latex(runs, baseline, labels, title)
    raise PtbenchError(f"unknown leaderboard format {fmt!r}; valid: md, html, {', '.join(TABLE_FORMATS)}")


def _latex(runs: pd.DataFrame, baseline: str, labels: dict[str, str] | None, title: str) -> str:
    table = summarize(runs, baseline) if not runs.empty else pd.DataFrame()
    lines = [f"% {title}: generated by ptbench (python -m ptbench leaderboard --format latex); needs \\usepackage{{booktabs}}", ""]
    if table.empty:
        return "\n".join(lines + ["% no ok runs", ""])
    headers = [h.format(baseline=baseline).replace("%", "\\%").replace("Δ", "$\\Delta$") for h in HEADERS]
    for task, rows in table.groupby("task", sort=True):
        body = []
        for _, r in rows.sort_values("acc_mean", ascending=False).iterrows():
            neg = r["negative"]
            incidence = "n/a" if neg.n == 0 else f"{r['negative_k']}/{neg.n} [{neg.low * 100:.0f}, {neg.high * 100:.0f}]%"
            body.append([r["strategy"], r["acc"].fmt(), r["delta"].fmt(signed=True), incidence, _source(r["source_acc"]),
                         f"{r['seconds']:.2f}", r["seeds"]])
        caption = (labels or {}).get(task) or task
        text = tabulate(body, headers=["@@H%d@@" % i for i in range(len(headers))], tablefmt="latex_booktabs",
                        disable_numparse=True)
        for i, h in enumerate(headers):
            text = text.replace("@@H%d@@" % i, h)
        lines += [
            "\\begin{table}[ht]", "\\centering", "\\small",
            f"\\caption{{{_latex_escape(caption)}}}" + (f" % {task}" if caption != task else ""),
            text, "\\end{table}", "",
        ]
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    out = []
    for char in str(text):
        out.append({"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                    "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                    "<": "\\textless{}", ">": "\\textgreater{}"}.get(char, char))
    return "".join(out)
