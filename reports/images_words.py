"""How the images report's conclusions name things and quote loose numbers: where a result
holds ('across domains', 'on the digits'), a test's verdict, and the small phrases the
paragraphs of `images_prose*.py` share, so that the same fact is worded the same way in each."""

from __future__ import annotations

from .images_format import and_join, magnitude, p_fmt, pp
from .images_stats import MARGIN, Analysis, LayerTable, TaskInfo, Tested

M = f"±{MARGIN * 100:g} pp"


ORDER = {"equivalent": 0, "above": 1, "below": 2, "inconclusive": 3}


def places(tasks: list[TaskInfo], a: Analysis) -> str:
    """Where something holds: 'across domains', 'with 10 images per class', or 'on the digits'
    when it holds on every digits task (of two or more)."""
    digits = [t for t in tasks if t.kind == "digits"]
    all_digits = [t for t in a.tasks if t.kind == "digits"]
    parts = []
    if digits:
        parts.append("on the digits" if len(digits) == len(all_digits) > 1 else and_join(t.phrase for t in digits))
    if any(t.kind == "textures" for t in tasks):
        parts.append("across domains")
    return and_join(parts)


def verdict(t: Tested) -> str:
    """'above', 'below' (Holm), 'equivalent' (Holm-adjusted TOST) or 'inconclusive'."""
    if t.up:
        return "above"
    if t.down:
        return "below"
    return "equivalent" if t.equivalent else "inconclusive"


def about(value: float) -> str:
    """A bound quoted loosely: '-3' for -2.92 pp, '+0.7' below one point."""
    return f"{round(value * 100) + 0:+d}" if abs(value) >= 0.01 else pp(value)


def deepest(table: LayerTable, column) -> Tested | None:
    return table.cell(column, table.depths[-1]) if table.depths else None


def n_images(task: TaskInfo) -> int:
    """Target images in all: n_target per class times the target classes ('5-9': five)."""
    classes = str(task.params.get("target_classes", "0-9" if task.kind == "textures" else "5-9"))
    low, _, high = classes.partition("-")
    try:
        count = int(high) - int(low) + 1 if high else len(classes.split(","))
    except ValueError:
        count = 10
    return task.n_target * count


def tables_with(a: Analysis, column, kind: str | None = None) -> list[LayerTable]:
    return [t for t in a.tables if column in t.columns and (kind is None or t.task.kind == kind)]


def unique(tasks: list[TaskInfo]) -> list[TaskInfo]:
    seen, out = set(), []
    for t in tasks:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out


def where_cell(c: Tested) -> str:
    """'k = 3 with 100 images per class'."""
    return f"k = {c.info['k']} {c.info['task'].phrase}"


def target_phrase(task: TaskInfo) -> str:
    return f"with {task.n_target} target images per class"


def start(task: TaskInfo) -> str:
    """How a sentence about one task opens: 'From textures to digits' / 'From digits 0-4 with 10
    target images per class'."""
    if task.kind == "textures":
        return "From textures to digits"
    return f"From digits {task.params.get('source_classes', '0-4')} {target_phrase(task)}"


def p_range_loose(values: list[float]) -> str:
    low, high = p_fmt(min(values)), p_fmt(max(values))
    return low if low == high else f"{low} to {high}"


def loose_range(values: list[float]) -> str:
    """'0.01–0.03' (one significant digit), or one value."""
    low, high = f"{min(values):.1g}", f"{max(values):.1g}"
    return low if low == high else f"{low}–{high}"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text.startswith("The ") else text


def loose_magnitude(value: float) -> str:
    """'2' for 1.9 points, '0.4' below one point."""
    return f"{round(abs(value) * 100):d}" if abs(value) >= 0.01 else magnitude(value)
