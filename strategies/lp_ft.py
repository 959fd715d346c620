"""LP-FT (Kumar et al., "Fine-tuning can distort pretrained features and underperform
out-of-distribution", ICLR 2022): first train only what was *not* inherited with the
inherited body frozen (the linear probe), then fine-tune everything.

Why: fine-tuning a good body under a random head sends large, random gradients into the
body while the head is still wrong, and distorts the features it inherited. Training the
fresh part first, with the body held fixed, means fine-tuning starts from a head that
already fits, and moves the body less.

The rule used here, on any model: phase 1 (`probe` x the task's step budget) freezes every
inherited entry (the plan's copy masks); phase 2 (the rest of the budget) trains under the
plan's own freeze masks. The plan copies a `fraction` of the filters of every transferable
layer but never the head (see `reinit-head`), so on image CNNs with `fraction=1` phase 1
trains exactly the new head: the LP of the paper.

On the two-layer CNN of the theory (signal-noise tasks) the second layer is fixed and there
is no head. The analogue: inherit a fraction of the filters; phase 1 trains only the fresh
filters, with the inherited ones frozen, so the fresh ones learn what the target needs before
the inherited ones may move. With `fraction=1` nothing is fresh and phase 1 is skipped, so
`lp-ft[fraction=1.0]` equals `full` there; use a fraction below 1 on those tasks. The total
number of steps always equals the task's budget, so LP-FT is compared on equal terms.

This file is also the example of the `phases` hook: it returns (steps, freeze masks) pairs.
Phases keep a strategy on a batched engine that accepts them: the signal-noise span engine
trains them (each phase freezes whole filters, so a phase is a per-filter rate of 0 or 1
that switches at the boundary), as will the vmapped engine for image CNNs; elsewhere the run
takes the per-run loop, with the same phases.
"""

from __future__ import annotations

from ptbench.api import Strategy, TransferPlan


class LPFT(Strategy):
    """Train the fresh part (the head) with the inherited body frozen, then everything."""

    name = "lp-ft"
    params = {"fraction": [1.0], "probe": [0.5]}

    def validate(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 <= self.probe <= 1.0:
            raise ValueError(f"probe (the share of steps for the first phase) must be in [0, 1], got {self.probe}")

    def plan(self, source, target, rng):
        plan = TransferPlan.filters(source, target, fraction=self.fraction, rng=rng)
        for name in target.head_params():
            plan.copy.pop(name, None)
        return plan

    def phases(self, steps, plan, model):
        probe_steps = int(round(self.probe * steps))
        inherited = {name: mask.clone() for name, mask in plan.copy.items()}
        for name, mask in plan.freeze.items():
            inherited[name] = inherited[name] | mask if name in inherited else mask.clone()
        n_free = sum(
            int((~inherited[name]).sum()) if name in inherited else param.numel()
            for name, param in model.named_parameters()
        )
        if probe_steps == 0 or n_free == 0:  # nothing fresh to probe with: plain fine-tuning
            return [(steps, plan.freeze)]
        return [(probe_steps, inherited), (steps - probe_steps, plan.freeze)]
