"""Finding stored runs by the names people type: run keys, instance names, SPECs.

A SPEC names instances by the one grid rule (`ptbench.spec`): the values it gives, and the
default for every parameter it leaves out. Matching stored runs follows that rule first;
when nothing matches it, a looser reading (parameters left out may take any value) is tried,
so that `digits-split` finds the one digits task of a store whatever its settings. The
exact instance names the leaderboard prints always match themselves.
"""

from __future__ import annotations

import pandas as pd

from ptbench.errors import PtbenchError
from ptbench.spec import parse_spec


def _defaults(registry, column: str, name: str) -> dict | None:
    if registry is None:
        return None
    table = registry.tasks if column == "task" else registry.strategies
    cls = table.get(name)
    return {k: v[0] for k, v in cls.params.items()} if cls is not None else None


def spec_mask(runs: pd.DataFrame, column: str, spec: str, registry=None, strict: bool = True) -> pd.Series:
    """Rows whose `column` ("task" or "strategy") is an instance `spec` names. `strict`: the
    grid rule (parameters left out at their default, known from the registry); otherwise
    every parameter the SPEC names has one of its values and the rest may be anything."""
    if runs.empty:
        return pd.Series(False, index=runs.index, dtype=bool)
    exact = runs[column] == spec.strip()
    name, fixed = parse_spec(spec)
    defaults = _defaults(registry, column, name) if strict else None
    names = runs[column].str.split("[", n=1).str[0]
    ok = []
    for n, params in zip(names, runs[f"{column}_params"]):
        if n != name or not all(k in params and params[k] in values for k, values in fixed.items()):
            ok.append(False)
            continue
        ok.append(defaults is None or all(params.get(k, v) == v for k, v in defaults.items() if k not in fixed))
    return exact | pd.Series(ok, index=runs.index, dtype=bool)


def select_spec(runs: pd.DataFrame, column: str, spec: str, registry=None) -> pd.Series:
    """spec_mask by the grid rule, or the loose reading when the rule matches nothing."""
    mask = spec_mask(runs, column, spec, registry, strict=True)
    return mask if mask.any() else spec_mask(runs, column, spec, registry, strict=False)


def run_names(runs: pd.DataFrame) -> pd.Series:
    return runs["task"] + "|" + runs["strategy"] + "|" + runs["seed"].astype(str)


def find_run(runs: pd.DataFrame, query: str, registry=None) -> pd.Series:
    """The one run `query` names: a key, TASK|STRATEGY|SEED (instance names or SPECs), or a
    part of a key or name that one run alone contains; else a PtbenchError listing candidates."""
    names = run_names(runs)
    for exact in (runs["key"] == query, names == query):
        if exact.sum() == 1:
            return runs[exact].iloc[0]
    hits = _by_specs(runs, query, registry)
    if hits is None or hits.empty:
        hits = runs[runs["key"].str.contains(query, regex=False) | names.str.contains(query, regex=False)]
    if len(hits) == 1:
        return hits.iloc[0]
    if hits.empty:
        raise PtbenchError(
            f"no run matches {query!r}; give a key or TASK|STRATEGY|SEED as the leaderboard prints them "
            "(`python -m ptbench export` lists every run)"
        )
    shown = [f"{r.task}|{r.strategy}|{r.seed}" for r in hits.head(5).itertuples()]
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    raise PtbenchError(f"{len(hits)} runs match {query!r}: {'; '.join(shown)}{more}; give more of the name")


def _by_specs(runs: pd.DataFrame, query: str, registry) -> pd.DataFrame | None:
    """TASK|STRATEGY|SEED or STRATEGY|SEED with SPECs for the names; None if not that shape."""
    parts = _split_outside_brackets(query)
    if len(parts) not in (2, 3) or not parts[-1].strip().lstrip("-").isdigit():
        return None
    try:
        mask = runs["seed"] == int(parts[-1])
        mask &= select_spec(runs[mask], "strategy", parts[-2], registry).reindex(runs.index, fill_value=False)
        if len(parts) == 3:
            mask &= select_spec(runs[mask], "task", parts[0], registry).reindex(runs.index, fill_value=False)
    except PtbenchError:  # a part that is not a SPEC: not this shape after all
        return None
    return runs[mask]


def _split_outside_brackets(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]
