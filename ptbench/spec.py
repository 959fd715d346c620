"""Parameter grids and the `name[key=value,...]` naming of plugin instances.

A Task or Strategy class declares `params`, a dict from parameter name to the values it
offers; the first value is the default. The one grid rule: a SPEC such as
`partial-filters[fraction=[0.25,0.5],freeze=true]` sweeps exactly the values it names (a
bracketed list sweeps several, as a cartesian product), and every parameter it leaves out
takes its default. So `partial-filters` is one instance (fraction=0.25, freeze=False), and a
sweep over the offered values is written out: `partial-filters[fraction=[0.25,0.5,0.75]]`.
`Parametrized.grid()` lists every offered combination (the contract checks validate them
all). The same grammar serves the command line and suite files, so a name printed in a
leaderboard can be pasted back into `--strategy`.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, ClassVar

from ptbench.errors import PtbenchError, closest


def parse_value(text: str) -> Any:
    """Read a scalar the way a user types it: true/false, none, int, float, else a string."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def _split_top_level(text: str, spec: str) -> list[str]:
    """Split on commas that are not inside [...]; brackets must balance."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise PtbenchError(f"malformed SPEC {spec!r}: unbalanced ']'; write name[key=value,...]")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise PtbenchError(f"malformed SPEC {spec!r}: unbalanced '['; write name[key=value,...]")
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str) -> tuple[str, dict[str, list[Any]]]:
    """`name[k=v,k2=[a,b]]` -> ("name", {"k": [v], "k2": [a, b]})."""
    spec = spec.strip()
    if not spec:
        raise PtbenchError("empty SPEC: give a name, optionally with [key=value,...]")
    if "[" not in spec:
        if "]" in spec or "=" in spec:
            raise PtbenchError(f"malformed SPEC {spec!r}: write name[key=value,...]")
        return spec, {}
    name, _, rest = spec.partition("[")
    if not rest.endswith("]") or not name.strip():
        raise PtbenchError(f"malformed SPEC {spec!r}: write name[key=value,...]")
    fixed: dict[str, list[Any]] = {}
    for item in _split_top_level(rest[:-1], spec):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise PtbenchError(f"malformed SPEC {spec!r}: {item!r} is not key=value")
        value, key = value.strip(), key.strip()
        if key in fixed:
            raise PtbenchError(
                f"malformed SPEC {spec!r}: parameter {key!r} is given twice; give it once "
                f"(a list such as {key}=[a,b] sweeps several values)"
            )
        if value.startswith("[") and value.endswith("]"):
            values = [parse_value(v) for v in _split_top_level(value[1:-1], spec)]
            if not values:
                raise PtbenchError(f"malformed SPEC {spec!r}: empty list for {key!r}")
        else:
            values = [parse_value(value)]
        fixed[key] = values
    return name.strip(), fixed


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class Parametrized:
    """Base of Task and Strategy: a name, a grid, and instances with one value per parameter.

    Subclasses read their parameters as attributes (`self.fraction`). `validate` is where a
    plugin rejects values that are of the right type but make no sense (a fraction above 1);
    it raises ValueError and the harness turns that into a user-facing error.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, list[Any]]] = {}
    #: Types of parameters whose default is None (the default cannot tell): {"key": float}.
    param_types: ClassVar[dict[str, type]] = {}

    def __init__(self, **values: Any):
        cls = type(self)
        unknown = set(values) - set(cls.params)
        if unknown:
            key = sorted(unknown)[0]
            valid = ", ".join(cls.params) or "none"
            raise PtbenchError(
                f"{cls.name} has no parameter {key!r}{closest(key, cls.params)}; its parameters: {valid}"
            )
        self._values: dict[str, Any] = {}
        for key, grid in cls.params.items():
            value = values[key] if key in values else grid[0]
            value = _coerce(cls.name, key, value, grid[0] if grid[0] is not None else cls.param_types.get(key, type(None))())
            self._values[key] = value
            setattr(self, key, value)
        try:
            self.validate()
        except ValueError as err:
            raise PtbenchError(f"{self.instance_name}: {err}") from None

    def validate(self) -> None:
        """Raise ValueError for values out of range; the default accepts everything."""

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def instance_name(self) -> str:
        """Name plus every parameter that is swept by the grid or differs from its default."""
        cls = type(self)
        shown = [
            f"{k}={format_value(v)}"
            for k, v in self._values.items()
            if len(cls.params[k]) > 1 or v != cls.params[k][0]
        ]
        return f"{cls.name}[{','.join(shown)}]" if shown else cls.name

    @property
    def key(self) -> str:
        """Identity for the store and caches: the name and all values, canonical JSON."""
        return f"{type(self).name}{json.dumps(self._values, sort_keys=True)}"

    @classmethod
    def expand(cls, fixed: dict[str, list[Any]] | None = None) -> list["Parametrized"]:
        """The instances a SPEC names: the cartesian product of the values `fixed` gives,
        every other parameter at its default (the first value of its grid)."""
        fixed = fixed or {}
        unknown = set(fixed) - set(cls.params)
        if unknown:
            key = sorted(unknown)[0]
            valid = ", ".join(cls.params) or "none"
            raise PtbenchError(
                f"{cls.name} has no parameter {key!r}{closest(key, cls.params)}; its parameters: {valid}"
            )
        keys = list(cls.params)
        grids = [fixed.get(k, cls.params[k][:1]) for k in keys]
        return [cls(**dict(zip(keys, combo))) for combo in itertools.product(*grids)]

    @classmethod
    def grid(cls) -> list["Parametrized"]:
        """Every combination of the values the plugin offers (its whole `params` grid)."""
        return cls.expand(dict(cls.params))

    def __repr__(self) -> str:
        return self.instance_name


def _coerce(plugin: str, key: str, value: Any, default: Any) -> Any:
    """Give a value the type of the parameter's default, or say what was expected."""
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, float) and value != value:
        # NaN passes every range check a plugin writes (each comparison is False)
        raise PtbenchError(f"{plugin}: parameter {key!r} is NaN; give a number (like {format_value(default)})")
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        # infinity passes a range check written as `value >= 0`, and no run means anything with it
        if not isinstance(value, float) and not _fits_float(value):
            raise PtbenchError(f"{plugin}: parameter {key!r} is an integer too large for a float; give a finite number (like {format_value(default)})")
        if math.isinf(value):
            raise PtbenchError(f"{plugin}: parameter {key!r} is {value!r}; give a finite number (like {format_value(default)})")
    expected = type(default)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if expected is str:
        return str(value)
    raise PtbenchError(
        f"{plugin}: parameter {key!r} expects {expected.__name__} (like {format_value(default)}), got {value!r}"
    )


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True
