"""The leaderboard: markdown tables (tabulate, pipe format) built from the store.

Every number is a mean over seeds with its 95% interval, and every strategy is also shown as
a paired difference to the baseline, because "transfer helps" is a claim about that
difference, not about two overlapping accuracy intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tabulate import tabulate

from ptbench.errors import PtbenchError
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


def task_table(rows: pd.DataFrame, baseline: str) -> str:
    body = []
    for _, r in rows.sort_values("acc_mean", ascending=False).iterrows():
        neg = r["negative"]
        incidence = "n/a" if neg.n == 0 else f"{r['negative_k']}/{neg.n} [{neg.low * 100:.0f}, {neg.high * 100:.0f}]%"
        body.append(
            [
                f"`{r['strategy']}`",
                r["acc"].fmt(),
                r["delta"].fmt(signed=True),
                incidence,
                r["source_acc"].fmt(),
                f"{r['seconds']:.2f}",
                r["seeds"],
            ]
        )
    headers = [h.format(baseline=baseline) for h in HEADERS]
    return tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)


def failures_table(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "ok"]
    body = [[f"`{r.task}`", f"`{r.strategy}`", r.seed, r.status, (r.error or "")[:160]] for r in bad.itertuples()]
    return tabulate(body, headers=["task", "strategy", "seed", "status", "error"], tablefmt="pipe", disable_numparse=True)


def render(
    runs: pd.DataFrame,
    baseline: str = "scratch",
    title: str = "ptbench leaderboard",
    sections: Sequence[Callable[[pd.DataFrame], str | None]] = (),
) -> str:
    """The whole leaderboard page. `sections` are extra renderers (a strategy's
    `leaderboard_section`, say) given the summary table; those returning None are skipped."""
    lines = [f"# {title}", ""]
    if runs.empty:
        return "\n".join(lines + ["No runs in the store yet: `python -m ptbench run`.", ""])
    table = summarize(runs, baseline)
    versions = ", ".join(sorted({str(v) for v in runs["ptbench_version"].dropna()}))
    commits = sorted({str(c)[:10] for c in runs["git_commit"].dropna()})
    devices = ", ".join(sorted({str(d) for d in runs["device"].dropna()}))
    lines += [
        f"{len(runs)} runs ({int((runs['status'] == 'ok').sum())} ok) over {runs['task'].nunique()} tasks, "
        f"ptbench {versions or '?'}" + (f", commit {', '.join(commits)}" if commits else "") + f", device {devices}.",
        "",
        "Accuracy is on held-out test data, as a mean over seeds with a 95% t interval. "
        f"Δ is the paired difference to `{baseline}` under the same seed (same target data, same "
        "initialisation of everything not inherited), in percentage points. *Negative transfer* "
        f"counts the seeds where the strategy's target accuracy is below `{baseline}`'s, with a 95% "
        "Wilson interval for how often that happens. The negative transfer gap of Wang et al. "
        "(CVPR 2019), target error with the source minus target error without it, is −Δ.",
        "",
    ]
    if not table.empty:
        ranks = overall_ranks(table)
        lines += ["## Overall ranking", "", "Mean rank of target accuracy over tasks (1 is best).", ""]
        lines.append(
            tabulate(
                [[i + 1, f"`{r.strategy}`", f"{r.mean_rank:.2f}", r.tasks] for i, r in enumerate(ranks.itertuples())],
                headers=["#", "strategy", "mean rank", "tasks"],
                tablefmt="pipe",
                disable_numparse=True,
            )
        )
        lines.append("")
        for task, rows in table.groupby("task", sort=True):
            lines += [f"## `{task}`", "", task_table(rows, baseline), ""]
        for section in sections:
            text = section(table)
            if text:
                lines += [text.rstrip(), ""]
    if (runs["status"] != "ok").any():
        lines += ["## Failed runs", "", failures_table(runs), ""]
    return "\n".join(lines)


def strategy_sections(registry, runs: pd.DataFrame) -> list[Callable[[pd.DataFrame], str | None]]:
    """The `leaderboard_section` hooks of the registered strategies that have runs."""
    present = set(runs["strategy"].str.split("[", n=1).str[0]) if not runs.empty else set()
    return [cls.leaderboard_section for name, cls in sorted(registry.strategies.items()) if name in present]


def write(runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch", registry=None) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PtbenchError(f"cannot create the leaderboard folder {str(out)!r}: {err.strerror}") from None
    path = out / "README.md"
    sections = strategy_sections(registry, runs) if registry is not None else []
    path.write_text(render(runs, baseline, sections=sections))
    return path
