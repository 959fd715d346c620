"""What every column and every diagnostic name means: the one place that text lives.

The markdown leaderboard ends with this glossary, the HTML report shows it, and `python -m
ptbench show --legend` prints it. Columns are the leaderboard's own. Diagnostics are whatever
the tasks (and strategies, through their plans' notes) stored with the runs; the harness
knows them only as names, so the text here is keyed by name pattern and worded for any task
that uses the same names, with the signal-noise meaning in parentheses. A name no pattern
knows is a "task-specific diagnostic".
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

#: The leaderboard's columns, in the order they appear ({baseline} is filled in).
COLUMNS: list[tuple[str, str]] = [
    ("strategy", "the strategy instance, with the parameters that tell it apart; paste it into `--strategy`, `show` or `compare`"),
    ("target acc % [95% CI]", "accuracy of the trained target model on held-out target test data, mean over seeds "
     "with a 95% Student-t interval (clipped to 0-100)"),
    ("Δ vs {baseline} (pp) [95% CI]", "paired difference to `{baseline}` on the same task and seed (same target data, same "
     "initialisation of what is not inherited), in percentage points, with a 95% t interval over seeds; "
     "above zero: transfer helped"),
    ("negative transfer (seeds) [95% CI]", "seeds where the strategy ended below `{baseline}` out of the paired seeds, with a "
     "95% Wilson interval for how often that happens"),
    ("source acc %", "accuracy of the source model the strategy inherited from, on source test data (the same model for "
     "every strategy of a seed)"),
    ("seconds", "mean seconds per run of planning and target training (a batched run: its share of its program's time)"),
    ("seeds", "how many seeds ended ok and count in this row"),
    ("#", "place in the overall ranking"),
    ("mean rank", "mean over tasks of the strategy's rank by target accuracy on each task (1 is best; ties share the mean rank)"),
    ("tasks", "how many tasks the strategy ran on (only those on every task are ranked together)"),
    ("status", "how a run ended: ok, failed (an exception), diverged (a non-finite loss) or timeout (past --timeout)"),
    ("error", "the first line of what went wrong; `python -m ptbench show RUN` prints the whole record"),
]

#: Where a diagnostic was measured (the first part of `diag.SIDE.NAME` in `export --flat`).
SIDES: list[tuple[str, str]] = [
    ("source", "measured on the source model after source training"),
    ("target", "measured on the target model after target training"),
    ("strategy", "what the strategy decided while planning (its plan's notes)"),
    ("trajectory", "the same measurements every few training steps (tasks that trace: `show --json` has them all)"),
]

#: The signal directions' roles (signal-noise's u, v_1, v_2; a task that uses the names means the same).
_DIRECTIONS = {"u": "the shared signal", "v1": "the source-only signal", "v2": "the target-only signal"}
_GROUPS = {"all": "all filters", "inherited": "the inherited filters", "fresh": "the fresh filters"}
_STATISTICS = {"max": "largest", "mean": "mean"}
_SIGNAL = re.compile(r"(u|v1|v2)_(max|mean)_(all|inherited|fresh)")
_NOISE = re.compile(r"noise_(all|inherited|fresh)")

#: What the names share, said once above them.
NOTES = [
    "u / v1 / v2: the task's named signal directions (signal-noise: u is shared by source and target, v1 is the "
    "source's own, v2 the target's own); j·⟨w, s⟩ is a filter w's projection onto direction s, signed by the "
    "filter's class (j = +1 or -1), so a filter that learned s counts positive",
    "`*_all`: over every filter; `*_inherited`: over the filters copied from the source model; `*_fresh`: over "
    "the filters left at their new initialisation",
]

#: Fixed names: strategies' notes and trajectory records.
_NAMES = {
    "step": "the training step a trajectory record was taken at",
    "fraction": "the fraction of filters the strategy chose to inherit (auto-fraction: the best on held-out target data)",
    "val_size": "how many target training examples the strategy held out to choose with",
    "val_acc[F]": "accuracy on the held-out target examples when inheriting fraction F",
    "val_loss[F]": "loss on the held-out target examples when inheriting fraction F",
}
UNKNOWN = "task-specific diagnostic"


def describe(name: str) -> str:
    """One line on what a diagnostic name means."""
    if m := _SIGNAL.fullmatch(name):
        direction, statistic, group = m.groups()
        return (f"signal learning: {_STATISTICS[statistic]} j·⟨w, {direction}⟩ over {_GROUPS[group]} "
                f"({direction}: {_DIRECTIONS[direction]})")
    if m := _NOISE.fullmatch(name):
        return f"noise memorisation: the largest ⟨w, ξ⟩ over {_GROUPS[m.group(1)]}, averaged over the training noise patches ξ"
    return _NAMES.get(_pattern(name)[0], UNKNOWN)


def order(name: str) -> tuple:
    """Known names first, in a fixed order (group, then direction, then statistic), then
    the others by name."""
    groups, directions, statistics = list(_GROUPS), list(_DIRECTIONS), list(_STATISTICS)
    if m := _SIGNAL.fullmatch(name):
        d, st, g = m.groups()
        return (0, groups.index(g), directions.index(d), statistics.index(st), "")
    if m := _NOISE.fullmatch(name):
        return (0, groups.index(m.group(1)), len(directions), 0, "")
    if name in _NAMES:
        return (1, list(_NAMES).index(name), 0, 0, "")
    return (2, 0, 0, 0, name)


def _pattern(name: str) -> tuple[str, str | None]:
    """`val_acc[0.5]` -> ("val_acc[F]", "0.5"): names that differ only in a bracketed value
    are one entry."""
    m = re.fullmatch(r"(.+)\[([^\[\]]*)\]", name)
    return (f"{m.group(1)}[F]", m.group(2)) if m else (name, None)


@dataclass
class Glossary:
    """The entries one page shows: (name, meaning) pairs."""

    columns: list[tuple[str, str]]
    sides: list[tuple[str, str]] = field(default_factory=list)
    diagnostics: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what several diagnostics share


def _names(values: Any, prefix: str = "") -> Iterable[str]:
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _names(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def diagnostic_names(runs: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """(sides, names) present in the runs' diagnostics, in order of first appearance;
    trajectory records contribute their keys."""
    sides: dict[str, None] = {}
    names: dict[str, None] = {}
    if runs is None or runs.empty or "diagnostics" not in runs:
        return [], []
    for diagnostics in runs["diagnostics"]:
        if not isinstance(diagnostics, dict):
            continue
        for side, values in diagnostics.items():
            sides.setdefault(str(side), None)
            if side == "trajectory" and isinstance(values, dict):
                for records in values.values():
                    for record in records if isinstance(records, list) else []:
                        names.update(dict.fromkeys(_names(record)))
            elif isinstance(values, dict):
                names.update(dict.fromkeys(_names(values)))
            else:
                names.setdefault(str(side), None)
                sides.pop(str(side), None)
    return list(sides), list(names)


def glossary(runs: pd.DataFrame | None = None, baseline: str = "scratch", every: bool = False) -> Glossary:
    """The glossary of a page of these runs: every column, the sides and the diagnostic names
    they hold. `every`: the names ptbench knows instead (with no runs to look at)."""
    columns = [(name.format(baseline=baseline), text.format(baseline=baseline)) for name, text in COLUMNS]
    if every:
        sides = [name for name, _ in SIDES]
        names = [f"{d}_{s}_{g}" for g in _GROUPS for d in _DIRECTIONS for s in _STATISTICS] + [f"noise_{g}" for g in _GROUPS]
        names += list(_NAMES)
    else:
        sides, names = diagnostic_names(runs)
    known = dict(SIDES)
    side_entries = [(s, known.get(s, "recorded with the run")) for s in sides]
    grouped: dict[str, list[str]] = {}
    for name in names:
        key, value = _pattern(name)
        if value is None or every:
            grouped.setdefault(name, [])
        else:
            grouped.setdefault(key, []).append(value)
    entries = []
    for key, values in sorted(grouped.items(), key=lambda item: order(item[0])):
        text = describe(key)
        if values:
            text += f" (F = {', '.join(dict.fromkeys(values))})"
        entries.append((key, text))
    shared = [n for n in NOTES if any(_SIGNAL.fullmatch(k) or _NOISE.fullmatch(k) for k, _ in entries)]
    return Glossary(columns, side_entries, entries, shared)


def markdown(g: Glossary, escape=None, code=None) -> str:
    """The glossary as a markdown section (`escape` and `code` are the page's escapers)."""
    code = code or (lambda v: f"`{v}`")
    escape = escape or (lambda v: str(v))
    lines = ["## Glossary", "", "Columns:", ""]
    lines += [f"- **{escape(name)}**: {_inline(text, escape, code)}" for name, text in g.columns]
    if g.diagnostics:
        lines += ["", "Diagnostics (`python -m ptbench show RUN` prints a run's; `export --flat` has one column per "
                  "`diag.SIDE.NAME`), measured where SIDE says:", ""]
        lines += [f"- {code(name)}: {_inline(text, escape, code)}" for name, text in g.sides]
        lines += [""]
        if g.notes:
            lines += [" ".join(_inline(note, escape, code) + "." for note in g.notes), ""]
        lines += [f"- {code(name)}: {_inline(text, escape, code)}" for name, text in g.diagnostics]
    lines += ["", "`python -m ptbench show --legend` prints this glossary."]
    return "\n".join(lines)


def _inline(text: str, escape, code) -> str:
    """Escape a meaning, keeping its `code` spans as code."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(code(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def plain(g: Glossary, width: int = 100) -> str:
    """The glossary as plain text (for a terminal)."""
    def block(title: str, entries: list[tuple[str, str]]) -> list[str]:
        if not entries:
            return []
        pad = min(max(len(n) for n, _ in entries), 36) + 2
        out = [title]
        for name, text in entries:
            wrapped = textwrap.wrap(text.replace("`", ""), width=max(width - pad - 2, 30)) or [""]
            head = f"  {name:<{pad}}"
            if len(name) >= pad:
                out.append(f"  {name}")
                head = " " * (pad + 2)
            out.append(head + wrapped[0])
            out += [" " * (pad + 2) + line for line in wrapped[1:]]
        return out + [""]

    lines = block("columns:", g.columns) + block("diagnostic sides (diag.SIDE.NAME in export --flat):", g.sides)
    if g.notes:
        lines += textwrap.wrap(" ".join(n + "." for n in g.notes).replace("`", ""), width=width) + [""]
    lines += block("diagnostics:", g.diagnostics)
    return "\n".join(lines).rstrip() + "\n"
