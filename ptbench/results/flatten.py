"""One column per diagnostic: the store's frame with its `diagnostics` JSON spread out.

`export --flat` writes this: a run's diagnostics `{"target": {"u_max_all": 0.8}}` become the
column `diag.target.u_max_all`, so `pandas.read_csv` gives a float column per diagnostic.
Trajectories (lists of records) are left out: they are many values per run (`export` without
--flat, or `show --json`, has them). A column whose values are all numbers (or missing) is
float; one holding text stays text.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

PREFIX = "diag."


def dotted(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, for reading one run (`show`, the HTML run pages): lists
    are summarised as "[n records]", since they are trajectories. Not a dict: nothing."""
    out: dict[str, Any] = {}
    if not isinstance(values, dict):
        return out
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(dotted(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = f"[{len(value)} records]"
        else:
            out[name] = value
    return out


def _spread(values: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            _spread(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(values, list):
        return  # a trajectory
    else:
        out[prefix] = values


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    return float(value)


def flat_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` (a `Store.frame()`) with `diagnostics` replaced by one column per diagnostic,
    `diag.SIDE.NAME`, in order of first appearance; task and strategy parameters stay JSON."""
    rows = []
    for diagnostics in runs["diagnostics"] if "diagnostics" in runs else []:
        flat: dict[str, Any] = {}
        _spread({k: v for k, v in (diagnostics or {}).items() if k != "trajectory"}, "", flat)
        rows.append({PREFIX + k: v for k, v in flat.items()})
    diag = pd.DataFrame.from_records(rows, index=runs.index) if rows else pd.DataFrame(index=runs.index)
    for column in diag.columns:
        present = [v for v in diag[column] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if all(isinstance(v, (int, float)) for v in present):
            diag[column] = [math.nan if v is None else _number(v) for v in diag[column]]
            diag[column] = diag[column].astype(float)
    base = runs.drop(columns=[c for c in ("diagnostics",) if c in runs])
    for name in ("task_params", "strategy_params"):
        if name in base:
            base[name] = base[name].map(lambda v: json.dumps(v, sort_keys=True))
    return pd.concat([base, diag], axis=1)
