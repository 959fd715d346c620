"""Shrink and perturb (Ash and Adams, "On warm-starting neural network training", NeurIPS
2020): an inherited parameter does not start at the source's value but at

    theta_target(0) = shrink * theta_source + perturb * theta_fresh,

theta_fresh being the target's own fresh initialisation. Warm-started networks fit their
new data as well as fresh ones but generalise worse; the paper traces this to the inherited
weights' large norm and their gradients, which on the new data are dominated by what the
old data taught. Shrinking toward zero keeps what was learned as a direction while giving
the new data's gradients room, and the fresh perturbation restores the diversity of a
random start (`shrink=0, perturb=1` is a fresh start, `shrink=1, perturb=0` a plain copy).

Here the inherited entries are `fraction` of every transferable layer's filters, chosen
exactly as `partial-filters` chooses them (the same draws from the plan's rng), so
`shrink-perturb[fraction=f,shrink=1.0,perturb=0.0]` starts, trains and ends bit for bit
like `partial-filters[fraction=f]`; the other filters keep their fresh initialisation.

Defaults: `fraction=1.0` (the paper shrinks and perturbs every parameter), `shrink=0.4`,
`perturb=0.1` (the setting of the authors' published example, github.com/JordanAsh/warm_start;
their noise is a scaled fresh initialisation, as here). On the quick suite's signal-noise
tasks the fresh filters are tiny (sigma0 = 0.01), so the perturbation is small and the
strategy mostly asks whether inheriting 40% of the source filters' scale beats inheriting
all of it (`full`) or none (`scratch`).

This file is also the example of a value rule (`TransferPlan.mix`, a `ValueRule` per
parameter): the plan says where every entry starts, and the strategy stays on the batched
engine.
"""

from ptbench.api import Strategy, TransferPlan


class ShrinkPerturb(Strategy):
    """Inherited filters start at shrink * source + perturb * fresh (Ash & Adams 2020)."""

    name = "shrink-perturb"
    params = {"fraction": [1.0, 0.5], "shrink": [0.4, 1.0], "perturb": [0.1, 0.0]}

    def validate(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.shrink < 0 or self.perturb < 0:
            raise ValueError(f"shrink and perturb must be non-negative, got shrink={self.shrink}, perturb={self.perturb}")

    def plan(self, source, target, rng):
        plan = TransferPlan.filters(source, target, fraction=self.fraction, rng=rng)
        return plan.mix(donor=self.shrink, fresh=self.perturb)
