"""Choose the fraction of filters to inherit from the target data, then transfer that.

The paper shows that the best fraction alpha depends on the tasks (a weak shared signal makes
every inherited filter a liability), and its readers asked for a practical way to pick alpha
without a test set. This is the plain one: hold out a validation split of the target
training data, train a target model at each candidate fraction on the rest, keep the
fraction with the best validation accuracy (ties go to the lower validation loss, then to the
smaller fraction: inherit no more than the data justify), and return that plan; the harness then trains on *all* the target
training data, under the same budget as every other strategy.

Fairness details:
- Each candidate starts from the very same fresh target initialisation the real run uses (a
  copy of `target`), and candidate masks replay the real plan's random generator, so the plan
  returned is exactly the candidate that won (plans are nested: the filters inherited at 0.25
  are among those at 0.5).
- The split comes from its own stream ("auto-fraction-split"), so it is the same for a seed
  whatever else runs, and other strategies' draws are untouched.
- Candidates include 0 (scratch) and 1 (everything): the procedure may decline to transfer.
- It costs (candidates + 1) trainings per run, and the time counts in its `seconds`. The
  candidates are trained with one `context.train_many` call: the task's batched engine trains
  them as one program where it supports them (signal-noise), else the per-run loop trains
  them one after the other; either way with the same minibatches and the same outcome per
  candidate. The run itself, with the chosen plan, then goes where any plan goes (the
  signal-noise engine, on those tasks).

The chosen fraction and every candidate's validation accuracy are stored with the run
(`diagnostics["strategy"]`), and the leaderboard gets a section comparing this strategy with
the best *fixed* fraction per task, the one an oracle with the test set would pick.

This file is also the example of `plan_with_data` and of `leaderboard_section`.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch

from ptbench.api import Diverged, Split, Strategy, TransferPlan


if TYPE_CHECKING:  # the leaderboard's table; importing pandas here would cost every worker process
    import pandas as pd


class AutoFraction(Strategy):
    """Pick the fraction of filters to inherit on a held-out split of the target data."""

    name = "auto-fraction"
    params = {"candidates": [5], "val": [0.25], "freeze": [False]}

    def validate(self) -> None:
        if self.candidates < 2:
            raise ValueError(f"candidates must be at least 2 (0 and 1 are always among them), got {self.candidates}")
        if not 0.0 < self.val < 1.0:
            raise ValueError(f"val (the held-out share of the target training data) must be in (0, 1), got {self.val}")

    def fractions(self) -> list[float]:
        """Evenly spaced candidates from 0 (scratch) to 1 (every filter)."""
        return [i / (self.candidates - 1) for i in range(self.candidates)]

    def plan(self, source, target, rng):
        raise TypeError("auto-fraction chooses its plan from target data: the harness calls plan_with_data")

    def split(self, data: Split, generator: torch.Generator) -> tuple[Split, Split]:
        """(fit, validation): a random `val` share held out, at least one example each."""
        n = len(data)
        if n < 2:
            raise ValueError(f"auto-fraction needs at least 2 target training examples to hold some out, got {n}")
        n_val = min(max(1, int(round(self.val * n))), n - 1)
        order = torch.randperm(n, generator=generator).to(data.y.device)
        val, fit = order[:n_val], order[n_val:]
        return Split(data.x[fit], data.y[fit]), Split(data.x[val], data.y[val])

    def plan_with_data(self, source, target, rng, context):
        fit, val = self.split(context.train_data, context.streams.torch("auto-fraction-split"))
        state = rng.get_state()
        fractions = self.fractions()
        models, plans = [], []
        for fraction in fractions:
            model = copy.deepcopy(target)  # the run's own fresh initialisation
            plan = TransferPlan.filters(source, model, fraction, rng=_replay(rng, state), freeze=self.freeze)
            plan.apply(source, model)
            models.append(model)
            plans.append(plan)
        # every candidate in one call: one batched program where the task's engine takes them
        errors = context.train_many(models, fit, plans) if context.train_many is not None else [_train_one(context, m, fit, p) for m, p in zip(models, plans)]
        scores: dict[float, tuple[float, float]] = {}  # fraction -> (accuracy, loss) on val
        for fraction, model, error in zip(fractions, models, errors):
            if error is not None:  # a fraction whose training blows up (Diverged) is simply not chosen
                scores[fraction] = (-math.inf, math.inf)
            else:
                scores[fraction] = (context.evaluate(model, val), context.loss(model, val))
        best = max(scores, key=lambda f: (scores[f][0], -scores[f][1], -f))
        plan = TransferPlan.filters(source, target, best, rng=rng, freeze=self.freeze)
        plan.notes = {"fraction": best, "val_size": len(val)}
        for f, (acc, loss) in scores.items():
            plan.notes[f"val_acc[{f:g}]"] = acc if math.isfinite(acc) else None
            plan.notes[f"val_loss[{f:g}]"] = loss if math.isfinite(loss) else None
        return plan

    @classmethod
    def leaderboard_section(cls, summary: pd.DataFrame) -> str | None:
        """How close the chosen fraction comes to the best fixed fraction on each task."""
        body = []
        for task, rows in summary.groupby("task", sort=True):
            fixed, autos = [], []
            for _, row in rows.iterrows():
                name, values = row["plugin"], row["params"]
                freeze = values.get("freeze", False)
                if name == cls.name:
                    autos.append((row["strategy"], freeze, row["acc"]))
                elif name == "scratch":
                    fixed.append((0.0, None, row["strategy"], row["acc"]))
                elif name == "full":
                    fixed.append((1.0, freeze, row["strategy"], row["acc"]))
                elif name == "partial-filters" and "fraction" in values:
                    fixed.append((float(values["fraction"]), freeze, row["strategy"], row["acc"]))
            for auto_name, freeze, acc in autos:
                pool = [f for f in fixed if f[1] in (None, freeze) and not math.isnan(f[3].mean)]
                if not pool:
                    continue
                best = max(pool, key=lambda f: (f[3].mean, -f[0]))
                beaten = sum(f[3].mean > acc.mean for f in pool)
                body.append(
                    [
                        f"`{task}`",
                        f"`{auto_name}`",
                        acc.fmt(),
                        f"`{best[2]}` ({best[0]:g})",
                        best[3].fmt(),
                        f"{(acc.mean - best[3].mean) * 100:+.1f}",
                        f"{beaten} of {len(pool)}",
                        ", ".join(f"{f[0]:g}" for f in sorted(pool, key=lambda f: f[0])),
                    ]
                )
        if not body:
            return None
        from tabulate import tabulate  # here, not at import: tabulate's wcwidth tables cost 0.1 s of every run's start-up

        table = tabulate(
            body,
            headers=["task", "strategy", "acc %", "best fixed fraction", "its acc %", "gap (pp)", "fixed fractions better", "fractions compared"],
            tablefmt="pipe",
            disable_numparse=True,
        )
        return (
            "## auto-fraction: choosing the fraction on held-out target data\n\n"
            "`auto-fraction` picks the fraction of filters to inherit on a validation split of the "
            "target training data, then trains on all of it. The best fixed fraction is the one "
            "with the highest mean test accuracy among the fixed-fraction runs of the same task "
            "(`scratch` is 0, `full` is 1): an oracle that looked at the test set. The gap is the "
            "difference of means (negative: below the oracle). The fraction chosen for each run is "
            "in its diagnostics (`ptbench export`).\n\n" + table
        )


def _train_one(context, model, split, plan) -> Diverged | None:
    """`context.train` for a context without `train_many`: None, or the Diverged that ended it."""
    try:
        context.train(model, split, plan)
    except Diverged as err:
        return err
    return None


def _replay(rng: torch.Generator, state: torch.Tensor) -> torch.Generator:
    """A generator in `rng`'s earlier state: every candidate draws the masks the real plan draws."""
    generator = torch.Generator(device=rng.device)
    generator.set_state(state)
    return generator
