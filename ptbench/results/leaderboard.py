"""The leaderboard: markdown tables (tabulate, pipe format) built from the store.

Every number is a mean over seeds with its 95% interval, and every strategy is also shown as
a paired difference to the baseline, because "transfer helps" is a claim about that
difference, not about two overlapping accuracy intervals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tabulate import tabulate

from ptbench.errors import PtbenchError
from ptbench.results import markdown as md
from ptbench.results.stats import overall_ranks, summarize

HEADERS = [
    "strategy",
    "target acc % [95% CI]",
    "Δ vs {baseline} (pp) [95% CI]",
    "negative transfer (seeds) [95% CI]",
    "source acc %",
    "seconds",
    "seeds",
]


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
                r["source_acc"].fmt(),
                "·" if stable else f"{r['seconds']:.2f}",
                r["seeds"],
            ]
        )
    headers = [h.format(baseline=md.text(baseline)) for h in HEADERS]
    return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)


def failures_table(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "ok"]
    body = [[md.code(r.task), md.code(r.strategy), r.seed, md.text(r.status), md.text(r.error or "", md.ERROR_CAP)] for r in bad.itertuples()]
    return tabulate(body, headers=["task", "strategy", "seed", "status", "error"], tablefmt="pipe", disable_numparse=True)


def render(
    runs: pd.DataFrame,
    baseline: str = "scratch",
    title: str = "ptbench leaderboard",
    sections: Sequence[Callable[[pd.DataFrame], str | None]] = (),
    stable: bool = False,
) -> str:
    """The whole leaderboard page. `sections` are extra renderers (a strategy's
    `leaderboard_section`, say) given the summary table; those returning None are skipped.
    `stable` leaves out what changes from machine to machine with equal results (the
    seconds column, the provenance line): its digest says whether the results changed."""
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
            lines += [f"## {md.code(task)}", "", task_table(rows, baseline, stable), ""]
        for section in sections:
            text = section(table)
            if text:
                lines += [text.rstrip(), ""]
    if (runs["status"] != "ok").any():
        lines += ["## Failed runs", "", failures_table(runs), ""]
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


def write(
    runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch", registry=None, title: str = "ptbench leaderboard"
) -> tuple[Path, bool]:
    """Write out_dir/README.md; (its path, whether it was rewritten)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PtbenchError(f"the leaderboard folder {str(out)!r} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PtbenchError(f"cannot create the leaderboard folder {str(out)!r}: {err.strerror}") from None
    sections = strategy_sections(registry, runs) if registry is not None else []
    path = out / "README.md"
    page = render(runs, baseline, title, sections)
    return path, write_page(path, page, render(runs, baseline, title, sections, stable=True))
