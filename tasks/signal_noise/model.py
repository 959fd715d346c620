"""Models that tasks build: the two-layer ReLU CNN of the parameter-transfer theory.

Kept in the task family that uses it: the harness knows no particular model.
"""

from __future__ import annotations

import torch
from torch import nn

from ptbench.api import TransferLayer, TransferModel


class TwoLayerReLUCNN(TransferModel):
    """f(W, x) = F_{+1}(W_{+1}, x) - F_{-1}(W_{-1}, x), F_j = (1/m) sum_r sum_p ReLU(<w_{j,r}, x_p>).

    The second layer is fixed (+1/m for class +1's filters, -1/m for class -1's), as in the
    theory (Cao et al. 2022, Kou et al. 2023), so W of shape [2, m, d] is the only parameter:
    W[0] are the m filters of class +1, W[1] those of class -1. Inputs are [N, patches, d].
    """

    def __init__(self, d: int, m: int, sigma0: float, generator: torch.Generator):
        super().__init__()
        self.d, self.m = d, m
        self.W = nn.Parameter(torch.randn(2, m, d, generator=generator) * sigma0)

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(<w_{j,r}, x_p>) as [N, 2, m, patches]."""
        n, patches, d = x.shape
        pre = x.reshape(n * patches, d) @ self.W.reshape(2 * self.m, d).T
        return torch.relu(pre).reshape(n, patches, 2, self.m).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def feature_layers(self) -> list[str]:
        return ["conv"]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output, and the feature "conv": every filter's ReLU(<w_{j,r}, x_p>), [N, 2, m,
        patches] (`activations`), which the fixed second layer sums."""
        acts = self.activations(x)
        F = acts.sum(dim=(2, 3)) / self.m  # [N, 2]
        return F[:, 0] - F[:, 1], {"conv": acts}

    def transfer_layers(self) -> list[TransferLayer]:
        return [TransferLayer(name="conv", params=("W",), filter_shape=(2, self.m))]
