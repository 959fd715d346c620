"""The one exception type a user ever sees from ptbench.

Anything a user can get wrong (a name, a parameter, a file) raises PtbenchError with a message
that says what to do; the CLI prints that message on one line and exits with status 2. Every
other exception is a bug in ptbench or in a plugin, and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class PtbenchError(Exception):
    """A user's mistake, with a message that says how to fix it."""


def closest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close: typos are the usual mistake."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
