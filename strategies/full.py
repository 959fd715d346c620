"""Inherit every transferable parameter of the source model, then fine-tune (or freeze).

With `freeze=true` on the two-layer CNN every filter is frozen, so the target model *is* the
source model: the plain "use the source model as is" control."""

from ptbench.api import Strategy, TransferPlan


class Full(Strategy):
    """Copy every transferable layer whole; the head only where the task allows."""

    name = "full"
    params = {"freeze": [False]}

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target, freeze=self.freeze)
