"""The images suite's report: `ANALYSIS.md`, the suite next to Yosinski et al. 2014.

The generic leaderboard (README.md) gives every cell's paired difference to scratch with its
uncorrected interval. This page asks the questions of "How transferable are features in deep
neural networks?" (Yosinski et al., 2014) of those numbers: per table of layer transfer (and
the one of filter transfer) which cells differ from scratch after Holm's correction over the
table and which are equivalent to it (TOST, ±1 pp), whether frozen transfer gets worse with
depth (per-seed slopes, seeds as the unit), whether fine-tuning or the target's own layers
(BnB) stay at scratch, and what that says about specificity against co-adaptation.

It used to be written by hand from a script kept elsewhere, and a change to the engine left
its numbers stale. Now every sentence that states a result is filled in from the numbers
(as the paper suite's report does), so a regenerated store cannot leave a stale claim; only
the method and the framing against Yosinski are fixed text. The harness reaches this module
through the images suite's `report` key (ptbench.results.suite_report), so nothing generic
depends on it. The page holds no timings or provenance: the same results give the same
bytes, so a rerun leaves `git status` clean.

`images_stats.py` computes the tests; `images_prose.py` (with `images_prose_tuning.py` and
`images_prose_filters.py`) writes the conclusions; `images_words.py` and `images_format.py`
word and round what both the tables and the sentences quote.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import images_prose as prose
from .images_prose_filters import fraction_trend_sentence
from .images_format import (
    and_join, bold, cell_text, count_word, iv, levels_text, p_fmt, pct, pipe_table, seeds_below,
)
from .images_stats import MARGIN, Analysis, LayerTable, Tested, analyse, prepare

PAGE = "ANALYSIS.md"
REQUIRES = ((), "")  # numpy and pandas only: no plotting library, no scipy
IMAGE_SIZE = 8  # the digits are 8 x 8, and the texture patches are averaged down to 8 x 8


# --------------------------------------------------------------------------- header


def header(runs: pd.DataFrame, a: Analysis) -> list[str]:
    """Where the numbers come from and how every cell is to be read."""
    families = [len(t.cells) for t in a.tables] + ([len(a.filter_cells)] if a.filter_cells else [])
    return [
        "# The `images` suite next to Yosinski et al. 2014", "",
        "Generated from the images suite's runs in its store by `reports/images.py` (the suite's `report`) whenever", "",
        "    python -m ptbench run --suite images", "",
        f"writes the leaderboard (store `results/images.db`, leaderboard `leaderboard/images/`; "
        f"`python -m ptbench report --suite images` rewrites this page alone from the store). {runs_line(runs)} "
        f"`README.md` beside this file is the generated leaderboard. Every cell is the paired difference to `scratch` in "
        f"percentage points: the mean over {seeds_text(a)} with its (uncorrected) 95% t interval, then in parentheses the "
        f"number of seeds below scratch and `p_H`, the two-sided paired t-test p-value **Holm-adjusted over all cells of "
        f"that table** ({and_join(str(n) for n in families)} cells). **Bold** = significant after Holm (p_H < 0.05). "
        f"≡ = equivalent to scratch by TOST with margin ±{MARGIN * 100:g} pp on the paired per-seed differences, the TOST "
        "p-values also Holm-adjusted over the cells of the table (p < 0.05). A cell with neither mark is *inconclusive*: "
        "it shows neither a difference nor an equivalence. Same seed = same split, same target images, same fresh "
        f"initialisation of everything not inherited; seeds ({seeds_text(a, 'n = ')}) are the unit of replication everywhere.",
        "",
        model_paragraph(runs, a), "",
    ]


def runs_line(runs: pd.DataFrame) -> str:
    """'305 runs, all ok, all on the batched (vmapped) engine, ...': counts, not timings."""
    n = len(runs)
    status = runs["status"].value_counts()
    ok = int(status.get("ok", 0))
    text = f"{n} runs, " + ("all ok" if ok == n else ", ".join(f"{int(c)} {s}" for s, c in status.items()))
    paths = runs.loc[runs["status"] == "ok", "path"].fillna("per-run").value_counts() if "path" in runs else pd.Series(dtype=int)
    if len(paths) == 1 and paths.index[0] == "batched":
        text += ", all on the batched (vmapped) engine"
    elif len(paths):
        text += ", " + and_join(f"{int(c)} on the {'batched (vmapped) engine' if p == 'batched' else p + ' path'}" for p, c in paths.items())
    threads = runs["torch_threads"].dropna().unique() if "torch_threads" in runs else []
    if len(threads) == 1 and int(threads[0]) == 1:
        text += "; every unit runs on one torch thread, so no `OMP_NUM_THREADS` setting is needed"
    return text + "."


def seed_count(a: Analysis) -> str:
    """'5', or '3-5' when the tasks have different numbers of seeds."""
    seeds = sorted(set(int(s) for s in a.facts["seeds"])) if len(a.facts) else [0]
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def seeds_text(a: Analysis, prefix: str = "") -> str:
    """'5 seeds', or with a prefix 'n = 5'."""
    return f"{prefix}{seed_count(a)}" if prefix else f"{seed_count(a)} seeds"


def model_paragraph(runs: pd.DataFrame, a: Analysis) -> str:
    """The network and the budget, read from the tasks' parameters."""
    params = [t.params for t in a.tasks] or [{}]
    first = params[0]
    depth, width = int(first.get("depth", 4)), int(first.get("width", 16))
    widths, pools = conv_widths(depth, width)
    same = all(p.get(k) == first.get(k) for p in params for k in ("optimizer", "lr", "batch_size", "source_steps", "target_steps"))
    budget = (f"{str(first.get('optimizer', 'adam')).capitalize() if first.get('optimizer') != 'sgd' else 'SGD'}, lr {first.get('lr')}, "
              f"batch {first.get('batch_size')}, {first.get('source_steps')} source steps and {first.get('target_steps')} target steps")
    return (
        f"The model is a {depth}-conv-layer CNN (widths {', '.join(map(str, widths))}, max-pooling after "
        f"{'layer' if len(pools) == 1 else 'layers'} {and_join(map(str, pools))}, a fresh head whenever the class sets differ, "
        f"as they do in all {count_word(len(a.tasks))} tasks); the budget is {budget}"
        + (", the same for every strategy" if same else " on the first task (the tasks' own are in README.md), the same for every strategy of a task")
        + f". `k` counts conv layers, so k = {depth} is the whole feature extractor and only the head is trained when frozen. "
        "AnB = `partial-layers[layers=k,freeze=true]`, AnB+ = the same, fine-tuned; BnB / BnB+ = `selffer` (the first k "
        "layers of a model trained on the target task itself, from another initialisation)."
    )


def conv_widths(depth: int, width: int) -> tuple[list[int], list[int]]:
    """The small CNN's channel widths and the layers it pools after (ptbench.tasks.images.models:
    the width doubles at every pooling)."""
    from ptbench.tasks.images.models import pool_after

    widths, out, pools = [], width, []
    for i, pool in enumerate(pool_after(depth, IMAGE_SIZE)):
        widths.append(out)
        if pool:
            pools.append(i + 1)
            out *= 2
    return widths, pools


# --------------------------------------------------------------------------- layer tables


def layer_section(table: LayerTable, a: Analysis) -> list[str]:
    """One task's table of AnB / AnB+ / BnB / BnB+ over k, and what it shows on its own."""
    facts = a.facts.loc[table.task.name]
    lines = [f"## {table.task.heading} (scratch {pct(facts['scratch_acc'])})", ""]
    if table.task.kind == "textures":
        lines += [f"The source model tells the three textures apart at {pct(facts['source_acc'])} from "
                  f"{table.task.params.get('patch', 16)} x {table.task.params.get('patch', 16)} patches averaged down to "
                  f"{IMAGE_SIZE} x {IMAGE_SIZE}.", ""]
    rows = [[str(k)] + [cell_text(table.cell(c, k)) for c in table.columns] for k in table.depths]
    lines += pipe_table(["k"] + [c.title for c in table.columns], rows) + [""]
    return lines + [layer_note(table, a), ""]


def cell_name(t: Tested) -> str:
    """'AnB k = 4' for a layer cell."""
    return f"{t.info['column']} k = {t.info['k']}"


def layer_note(table: LayerTable, a: Analysis) -> str:
    """What the table shows cell by cell: significant cells, equivalent ones, or neither."""
    cells = list(table.cells.values())
    significant = [t for t in cells if t.significant]
    equivalent = [t for t in cells if t.equivalent]
    parts = []
    if not significant and not equivalent:
        low = min(cells, key=lambda t: t.p)
        return (f"No cell is significant after Holm and none is TOST-equivalent at ±{MARGIN * 100:g} pp: "
                f"{table.task.phrase} and {seeds_text(a)} every cell here is inconclusive on its own "
                f"(the smallest raw p, {cell_name(low)}: {p_fmt(low.p)}).")
    if significant:
        parts.append("Significant after Holm: " + and_join(f"{cell_name(t)} ({iv(t.interval()).split(' [')[0]}, p_H = {p_fmt(t.p_holm)})"
                                                            for t in significant) + ".")
    if equivalent:
        parts.append(f"Holm-adjusted TOST p (±{MARGIN * 100:g} pp) of the ≡ cells: " + ", ".join(p_fmt(t.tost_holm) for t in equivalent) + ".")
        parts.append(near_equivalence(table, [t for t in cells if not t.equivalent and t.tost.p < 0.05]))
    else:
        parts.append(no_equivalence(cells))
    return " ".join(p for p in parts if p)


def near_equivalence(table: LayerTable, near: list[Tested]) -> str:
    """The cells a single TOST would call equivalent but Holm over the table does not."""
    if not near:
        return ""
    where = and_join(f"{c.label} at {levels_text(t.info['k'] for t in near if t.info['column'] == c.label)}"
                     for c in table.columns if any(t.info["column"] == c.label for t in near))
    raw, adjusted = [t.tost.p for t in near], [t.tost_holm for t in near]
    return (f"The other cells with raw TOST p below 0.05 ({where}) have raw TOST p {p_span(raw)} but Holm-adjusted "
            f"{p_span(adjusted)}.")


def p_span(values: list[float]) -> str:
    low, high = p_fmt(min(values)), p_fmt(max(values))
    return low if low == high else f"between {low} and {high}"


def no_equivalence(cells: list[Tested]) -> str:
    adjusted = [t.tost_holm for t in cells]
    if all(p_fmt(p) == "1.00" for p in adjusted):
        return f"No cell is TOST-equivalent at ±{MARGIN * 100:g} pp (Holm-adjusted TOST p = 1.00 throughout)."
    low = min(cells, key=lambda t: t.tost_holm)
    return f"No cell is TOST-equivalent at ±{MARGIN * 100:g} pp (smallest Holm-adjusted TOST p {p_fmt(low.tost_holm)}, {cell_name(low)})."


# --------------------------------------------------------------------------- filter table


def filter_section(a: Analysis) -> list[str]:
    lines = ["## Filter-wise transfer (`partial-filters`, a random share of every conv layer's filters)", ""]
    if not a.filter_cells:
        return lines + ["No `partial-filters` runs in the store.", ""]
    tasks = [t for t in a.tasks if any(k[0] == t.name for k in a.filter_cells)]
    headers = ["fraction"]
    for i, task in enumerate(tasks):
        headers += [f"{task.column_label}: frozen", "fine-tuned"]
    rows = [[f"{f:g}"] + [cell_text(a.filter_cells.get((t.name, freeze, f))) for t in tasks for freeze in (True, False)]
            for f in a.fractions]
    lines += [f"Holm over the {len(a.filter_cells)} cells of this table.", ""] + pipe_table(headers, rows) + [""]
    return lines + [filter_note(a), ""]


def filter_cell_group(cells: list[Tested]) -> str:
    """'the 100/class 0.25 cells' (both modes of a fraction), '10/class, frozen, 0.5' (one)."""
    both: dict[str, list[float]] = {}
    single = []
    for t in cells:
        task, f = t.info["task"], t.info["fraction"]
        if sum(u.info["task"].name == task.name and u.info["fraction"] == f for u in cells) == 2:
            if f not in both.setdefault(task.short, []):
                both[task.short].append(f)
        else:
            single.append(t)
    parts = [f"the {short} {and_join(f'{f:g}' for f in fs)} cells" for short, fs in both.items()]
    parts += [f"{t.info['task'].short}, {'frozen' if t.info['freeze'] else 'fine-tuned'}, {t.info['fraction']:g}" for t in single]
    return and_join(parts)


def filter_note(a: Analysis) -> str:
    cells = list(a.filter_cells.values())
    equivalent = [t for t in cells if t.equivalent]
    if equivalent:
        return (f"TOST-equivalent at ±{MARGIN * 100:g} pp after Holm: {filter_cell_group(equivalent)} "
                f"(adjusted TOST p {', '.join(p_fmt(t.tost_holm) for t in equivalent)}).")
    if all(p_fmt(t.tost_holm) == "1.00" for t in cells):
        return f"No cell is TOST-equivalent at ±{MARGIN * 100:g} pp after Holm (Holm-adjusted TOST p = 1.00 throughout)."
    low = min(t.tost_holm for t in cells)
    at = [t for t in cells if p_fmt(t.tost_holm) == p_fmt(low)]
    return f"No cell is TOST-equivalent at ±{MARGIN * 100:g} pp after Holm (smallest adjusted TOST p {p_fmt(low)}, {filter_cell_group(at)})."


# --------------------------------------------------------------------------- trends and averages


def trend_section(a: Analysis) -> list[str]:
    n = seeds_text(a, "n = ")
    lines = [f"## Trends over depth, with seeds as the unit ({n} seeds per row)", ""]
    if not a.depth_trends:
        return lines + ["No curve in the store has three or more depths.", ""]
    levels = a.depth_trends[0].levels
    contrast = f"k={levels[-1]} − k={levels[0]}"
    lines += [
        f"For each seed, the least-squares slope of the paired difference over {levels_span(levels)} (pp per layer), then a "
        f"one-sample t test of the {seed_count(a)} slopes; and the per-seed contrast k = {levels[-1]} minus "
        f"k = {levels[0]}. Holm over the {len(a.depth_trends)} rows (separately for the slopes and for the contrasts).", "",
    ]
    rows = []
    for t in a.depth_trends:
        s, c = t.slope, t.contrast
        rows.append([f"{t.task.row_label}, {t.label}", bold(iv(s.interval(), 2), s.significant), seeds_below(s),
                     bold(p_fmt(s.p_holm), s.significant), bold(iv(c.interval()), c.significant), bold(p_fmt(c.p_holm), c.significant)])
    lines += pipe_table(["curve", "mean slope, pp/layer [95% CI]", "slopes < 0", "p_H (slope)", f"{contrast}, pp [95% CI]", "p_H (contrast)"], rows)
    return lines + ["", fraction_trend_sentence(a), ""]


def levels_span(levels: list) -> str:
    return f"k = {levels[0]}..{levels[-1]}"


def average_section(a: Analysis) -> list[str]:
    lines = [f"## Seed-level averages over k ({seeds_text(a, 'n = ')} seeds per row)", ""]
    if not a.averages:
        return lines + ["No curve in the store has two or more depths.", ""]
    levels = a.depth_trends[0].levels if a.depth_trends else []
    span = f" over {levels_span(levels)}" if levels else ""
    lines += [
        f"The mean{span} of each seed's paired difference (one number per seed, so the {count_word(len(levels)) if levels else ''} "
        f"depths, which share one scratch run per seed, are not counted as independent). Frozen AnB is left out: it is "
        f"expected to change with depth, so its mean over k answers no question. Holm over the {len(a.averages)} rows, for "
        f"the t test and for the TOST (±{MARGIN * 100:g} pp).", "",
    ]
    rows = [[f"{t.info['task'].row_label}, {t.info['column']}", bold(iv(t.interval(), 2), t.significant), seeds_below(t),
             bold(p_fmt(t.p_holm), t.significant), bold(p_fmt(t.tost_holm), t.equivalent) + (" ≡" if t.equivalent else "")]
            for t in a.averages]
    return lines + pipe_table(["average over k", "mean, pp [95% CI]", "seeds < 0", "p_H", f"TOST p_H (±{MARGIN * 100:g} pp)"], rows) + [""]


# --------------------------------------------------------------------------- the page


METHOD = """## How these numbers are computed

`reports/images.py` and its `reports/images_*.py` modules, called by the harness with the suite's runs, with the \
helpers of `ptbench/results/stats.py`: `paired_to_baseline` for the per-seed differences to scratch (same task and \
seed), `t_test` and `holm` for each family's t tests, `tost_test` at ±1 pp with its own Holm, `holm_levels` for the \
Holm step-down intervals quoted in the text (an interval at the level Holm's step used), `welch` for the comparison \
of two tasks (different runs), and `numpy.polyfit` for the per-seed slopes; `interval(0.90)` of a test is the 90% \
interval that goes with its TOST. Regenerate this page from the store without running anything:

    python -m ptbench report --suite images
"""


def render(runs: pd.DataFrame, baseline: str = "scratch") -> str:
    """The page's markdown."""
    df = prepare(runs, baseline)
    a = analyse(df, baseline)
    if not a.tables:
        return "\n".join(["# The `images` suite next to Yosinski et al. 2014", "",
                          "No successful digits-split or cross-domain runs in the store yet: `python -m ptbench run --suite images`.", ""])
    lines = header(runs, a)
    for t in a.tables:
        lines += layer_section(t, a)
    lines += filter_section(a) + trend_section(a) + average_section(a)
    lines += prose.conclusions(a)
    lines += [METHOD]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch") -> list[Path]:
    """Write out_dir/ANALYSIS.md; returns [that path]. The file is left untouched when its text
    would not change, like the leaderboard beside it."""
    page = Path(out_dir) / PAGE
    text = render(runs, baseline)
    if not page.exists() or page.read_text() != text:
        page.write_text(text)
    return [page]
