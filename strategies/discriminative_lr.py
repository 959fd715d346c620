"""Discriminative fine-tuning (Howard and Ruder, "Universal language model fine-tuning for
text classification", ACL 2018): inherit everything `full` inherits, then fine-tune every
layer at its own learning rate, the top layer at the budget's and each layer below at
`decay` times the one above it,

    lr_l = lr * decay^(L - l),   l = 1 .. L in forward order (the head is l = L),

because lower layers hold more general features that the target should move less
(ULMFiT: lr^{l-1} = lr^l / 2.6). Layers count as the model's transfer layers; the top one,
inherited or fresh, trains at the full rate. `decay=1` is plain fine-tuning: the plan's scales
are all 1, and training is bit for bit `full`'s.

Default `decay=0.385` (1/2.6, the paper's factor). On the signal-noise CNN there is one
layer, which is the top one, so every decay equals `full` there; the difference shows on the
deeper image models. The scales are data (`TransferPlan.lr_scale`, one number per
parameter), so the strategy stays on the batched engine.
"""

import math

import torch

from ptbench.api import Strategy, TransferPlan


class DiscriminativeLR(Strategy):
    """Full transfer; each layer's learning rate is `decay` times the one above it."""

    name = "discriminative-lr"
    params = {"decay": [0.385, 1.0]}

    def validate(self):
        if not (math.isfinite(self.decay) and self.decay >= 0):
            raise ValueError(f"decay must be a number >= 0, got {self.decay}")

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        layers = target.transfer_layers()
        for depth, layer in enumerate(reversed(layers)):  # 0 for the top layer
            for name in layer.params:
                plan.lr_scale[name] = torch.tensor(float(self.decay) ** depth)
        return plan
