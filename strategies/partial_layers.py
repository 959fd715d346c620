"""Inherit the first `layers` layers whole (Yosinski et al. 2014: AnB frozen, AnB+ fine-tuned).

On the two-layer CNN the only trainable layer is the convolution, so layers=1 equals `full`;
the parameter matters on the deeper image models."""

from ptbench.api import Strategy, TransferPlan


class PartialLayers(Strategy):
    """Copy the first k transferable layers."""

    name = "partial-layers"
    params = {"layers": [1], "freeze": [False, True]}

    def validate(self):
        if self.layers < 0:
            raise ValueError(f"layers must be non-negative, got {self.layers}")

    def plan(self, source, target, rng):
        return TransferPlan.layers(source, target, count=self.layers, freeze=self.freeze)
