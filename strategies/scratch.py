"""Train the target model from its own random initialisation: the baseline every other
strategy is compared against, seed by seed."""

from ptbench.api import Strategy, TransferPlan


class Scratch(Strategy):
    """Inherit nothing."""

    name = "scratch"

    def plan(self, source, target, rng):
        return TransferPlan.nothing()
