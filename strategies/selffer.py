"""Yosinski et al.'s BnB control: inherit the first `layers` layers from a model trained on
the *target* task itself (another initialisation, same target data), then train again.

It separates the effect of *what* is inherited (source knowledge) from the effect of
inheriting trained weights at all (co-adaptation, a different starting scale)."""

from ptbench.api import Strategy, TransferPlan


class Selffer(Strategy):
    """Copy the first k layers of a model trained on the target task."""

    name = "selffer"
    donor = "target"
    params = {"layers": [1], "freeze": [False, True]}

    def validate(self):
        if self.layers < 0:
            raise ValueError(f"layers must be non-negative, got {self.layers}")

    def plan(self, source, target, rng):
        return TransferPlan.layers(source, target, count=self.layers, freeze=self.freeze)
