"""How the images report writes numbers: one place, so that a table cell and the sentence that
quotes it can never round the same value differently."""

from __future__ import annotations

import math
from typing import Iterable

from ptbench.results.stats import Interval

from .images_stats import Tested

WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def p_fmt(p: float) -> str:
    """A p-value: two decimals from 0.1 up, three below (0.047), '<0.001' below that ('0' for
    the exact zero of seeds that all differ by the same amount); 'n/a' when there is none."""
    if p is None or math.isnan(p):
        return "n/a"
    if p >= 0.1:
        return f"{p:.2f}"
    if p >= 0.001:
        return f"{p:.3f}"
    return "0" if p == 0 else "<0.001"


def threshold_fmt(p: float) -> str:
    """A significance threshold such as 0.05 / 18: two significant digits (0.0028)."""
    return f"{p:.2g}"


def pp(value: float, decimals: int = 1) -> str:
    """A difference in accuracy units as signed percentage points: '+1.3' (never '-0.0')."""
    return "n/a" if math.isnan(value) else f"{round(value * 100, decimals) + 0.0:+.{decimals}f}"


def magnitude(value: float, decimals: int = 1) -> str:
    """The size of a difference in points, unsigned: '5.7'."""
    return f"{round(abs(value) * 100, decimals) + 0.0:.{decimals}f}"


def pct(value: float, decimals: int = 1) -> str:
    """An accuracy as a percentage without the sign: '92.7%'."""
    return "n/a" if math.isnan(value) else f"{value * 100:.{decimals}f}%"


def iv(interval: Interval, decimals: int = 1) -> str:
    """'-0.6 [-3.4, +2.2]' in percentage points."""
    return interval.fmt(signed=True, decimals=decimals)


def bounds(interval: Interval, decimals: int = 1) -> str:
    """'[-0.7, +0.4]': the bounds alone."""
    return "[" + iv(interval, decimals).split(" [", 1)[1] if interval.n >= 2 else "[n/a]"


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def cell_text(t: Tested | None) -> str:
    """A table cell: the mean with its 95% interval, seeds below scratch and the Holm p; bold
    when Holm rejects zero, ≡ when the Holm-adjusted TOST shows equivalence."""
    if t is None:
        return "n/a"
    text = bold(f"{iv(t.interval())} ({t.below}/{t.n}; p_H={p_fmt(t.p_holm)})", t.significant)
    return text + (" ≡" if t.equivalent else "")


def seeds_below(t: Tested) -> str:
    """'5/5'."""
    return f"{t.below}/{t.n}"


def and_join(items: Iterable[str], word: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def levels_text(levels: Iterable[int], name: str = "k") -> str:
    """'k = 1', 'k = 1 and 2', 'k = 1, 3 and 4'."""
    return f"{name} = " + and_join(str(k) for k in levels)


def count_word(n: int) -> str:
    return WORDS.get(n, str(n))


def table_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def pipe_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A pipe table in the compact form the page has always used (`|---|`)."""
    return [table_row(headers), "|" + "---|" * len(headers)] + [table_row(r) for r in rows]


def range_text(values: list[float], decimals: int = 1) -> str:
    """'+0.0 to +1.6' (or one value) in percentage points."""
    low, high = pp(min(values), decimals), pp(max(values), decimals)
    return low if low == high else f"{low} to {high}"

