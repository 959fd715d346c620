"""The paper's transfer: a random alpha-fraction of the filters, in every class block of
every transferable layer, comes from the source model; the rest keep their fresh
initialisation. `freeze` holds the inherited filters fixed while the target trains."""

from ptbench.api import Strategy, TransferPlan


class PartialFilters(Strategy):
    """Copy a fraction of every transferable layer's filters."""

    name = "partial-filters"
    params = {"fraction": [0.25, 0.5, 0.75], "freeze": [False, True]}

    def validate(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")

    def plan(self, source, target, rng):
        return TransferPlan.filters(source, target, fraction=self.fraction, rng=rng, freeze=self.freeze)
