"""L2-SP (Li, Grandvalet and Davoine, "Explicit inductive bias for transfer learning with
convolutional networks", ICML 2018): inherit everything `full` inherits, then fine-tune with
a penalty that pulls the inherited weights back toward the source weights,

    loss + alpha/2 * ||w_S - w_S^src||^2 + beta/2 * ||w_new||^2,

where S are the inherited entries (the plan's copy masks) and w_new everything else (a fresh
head, filters a task does not inherit). Plain weight decay pulls the inherited weights toward
zero, which forgets what they learned; L2-SP pulls them toward what they learned instead, so
fine-tuning may only move as far from the source as the target data pays for.

The penalty is declared in the plan (`plan.penalty`, a `WeightPenalty`), not coded as a
`regularizer` hook, so every training path applies the same term: the per-run loop adds it
to the loss, the batched engines fold it into their step. On the signal-noise CNN the run
goes to the span engine: every filter is inherited and starts at its source value, so the
pull alpha (w - w_src) is alpha times the filter's distance travelled in the span of the
training patches, a shrink of its span coefficients each step (beta has nothing to act on
there: no filter is fresh). A beta on fresh filters that train is not in that span, and such
a plan trains per-run. Sums, not means, as in the paper: alpha is per squared unit of distance.
"""

from __future__ import annotations

from ptbench.api import Strategy, TransferPlan, WeightPenalty


class L2SP(Strategy):
    """Full transfer, fine-tuned with a penalty toward the source weights (Li et al. 2018)."""

    name = "l2-sp"
    params = {"alpha": [0.01], "beta": [0.0]}

    def validate(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got alpha={self.alpha}, beta={self.beta}")

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        if self.alpha or self.beta:
            plan.penalty = WeightPenalty(self.alpha, self.beta, {name: mask.clone() for name, mask in plan.copy.items()})
        return plan
