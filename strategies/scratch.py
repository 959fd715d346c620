"""Train the target model from its own random initialisation: the baseline every other
strategy is compared against, seed by seed. It inherits nothing (`donor = None`), so a group
of only scratch runs trains no source model: its rows show the source model's accuracy only
when the donor cache already holds that model."""

from ptbench.api import Strategy, TransferPlan


class Scratch(Strategy):
    """Inherit nothing."""

    name = "scratch"
    donor = None

    def plan(self, source, target, rng):
        return TransferPlan.nothing()
