"""Where a sweep's results go: one suite, one store, one leaderboard.

* `run --suite NAME` (a built-in suite, as defined): the store `results/NAME.db` and the
  suite's committed leaderboard folder `leaderboard/NAME/`, rendered from that suite's runs
  only, whatever else the store holds.
* The same suite with other seeds (`--seeds`): the same store, but the leaderboard goes to
  `results/NAME/`: the committed page shows the suite as its file defines it.
* A suite file given by path: `results/STEM.db` and `results/STEM/`.
* Ad-hoc runs (`--task` / `--strategy`): `results/adhoc.db` and `results/adhoc/`, never a
  tracked file.

`--store` and `--leaderboard` override either. `results/` and `.ptbench-cache/` are ignored
by git, and a committed leaderboard is rewritten only when its results change (see
`ptbench.results.leaderboard.write_page`), so runs never dirty a checkout by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = Path("results")
LEADERBOARD_DIR = Path("leaderboard")
ADHOC = "adhoc"
#: The store other commands read when given none: the one the README's Quick start leaves.
DEFAULT_STORE = RESULTS_DIR / "quick.db"


@dataclass(frozen=True)
class Outputs:
    store: Path
    leaderboard: Path
    why: str  # one phrase for the summary line


def outputs_for(suite_name: str, builtin: bool, adhoc: bool, seeds_overridden: bool,
                store: str | None = None, leaderboard: str | None = None) -> Outputs:
    if adhoc:
        name, board, why = ADHOC, RESULTS_DIR / ADHOC, "ad-hoc runs (--task/--strategy) have a store of their own"
    elif builtin and not seeds_overridden:
        name, board, why = suite_name, LEADERBOARD_DIR / suite_name, f"the {suite_name} suite's committed leaderboard"
    elif builtin:
        name, board, why = suite_name, RESULTS_DIR / suite_name, "other seeds than the suite's: not its committed leaderboard"
    else:
        name, board, why = suite_name, RESULTS_DIR / suite_name, "a suite file outside the built-in suites"
    return Outputs(
        store=Path(store) if store else RESULTS_DIR / f"{name}.db",
        leaderboard=Path(leaderboard) if leaderboard else board,
        why=why,
    )
