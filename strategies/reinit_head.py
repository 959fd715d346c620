"""Inherit everything but the head, which restarts from its fresh initialisation.

The common fine-tuning recipe when the target task has the same label set as the source:
even where the head *could* be copied (the target model's `inherit_head` is True), a head
fitted to the source labels carries the source task's decision rule, and a fresh one lets
the target data set it. Where the head cannot be inherited (different classes),
`full` already leaves it fresh and this strategy equals `full`.

On the two-layer CNN of the theory (signal-noise tasks) the second layer is fixed and there
is no head parameter, so `reinit-head` equals `full` there, run for run. It differs on the
image CNNs whose last layer is marked `head=True`.
"""

from __future__ import annotations

from ptbench.api import Strategy, TransferPlan


class ReinitHead(Strategy):
    """Copy every transferable layer except the head; the head starts fresh."""

    name = "reinit-head"
    params = {"freeze": [False]}

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target, freeze=self.freeze)
        # Drop the head whole: also the slices the layer before it copies into it (`follow`).
        for name in target.head_params():
            plan.copy.pop(name, None)
            plan.freeze.pop(name, None)
        return plan
