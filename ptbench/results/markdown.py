"""Escaping user-controlled text for markdown pages (names, parameter values, error texts).

A strategy name, a string parameter or an error message may contain `|` (which would split
a table cell), backticks (which would end a code span), newlines (which would end a table
row) or raw HTML (which a markdown renderer would pass through). Everything a plugin or a
user controls goes through `code` or `text` before it reaches a page.
"""

from __future__ import annotations

import html

#: The most characters of an error text a table cell shows.
ERROR_CAP = 160


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def code(value: object) -> str:
    """`value` as an inline code span that stays one table cell: one line, pipes escaped,
    fenced with more backticks than it contains. Text with HTML metacharacters becomes
    escaped plain text instead (entities are not decoded inside a code span, and a page
    must not carry raw HTML that some renderer could pass through)."""
    if any(char in str(value) for char in "<>&"):
        return text(_one_line(value))
    body = _one_line(value).replace("|", "\\|")
    run = longest = 0
    for char in body:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def text(value: object, cap: int | None = None) -> str:
    """`value` as plain table text: its first line only (capped), HTML and markdown
    metacharacters escaped."""
    first = str(value).strip().splitlines()[0] if str(value).strip() else ""
    if cap is not None and len(first) > cap:
        first = first[: cap - 1] + "…"
    out = html.escape(first, quote=False)
    for char in "\\`*_[]|":
        out = out.replace(char, "\\" + char)
    return out
