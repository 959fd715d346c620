"""BSS, batch spectral shrinkage (Chen, Wang, Fu, Long and Wang, "Catastrophic forgetting
meets negative transfer: batch spectral shrinkage for safe transfer learning", NeurIPS 2019):
inherit everything `full` inherits, then fine-tune with a penalty on the smallest singular
values of the batch's feature matrix,

    loss + eta * sum_{i=1..k} sigma_{-i}^2,

F = [f(x_1); ...; f(x_b)] (b x d) the features of the batch, sigma_{-1} <= sigma_{-2} <= ...
its smallest singular values. The paper finds that the directions of the inherited features
with small singular values are the ones that do not transfer (negative transfer lives
there), and that fine-tuning on little target data makes them grow; shrinking them keeps
the transferable, dominant directions and suppresses the rest. Defaults eta = 0.001, k = 1,
the paper's.

The features are those of the model's last feature layer (`TransferModel.feature_layers()[-1]`:
what its head reads; the ReLU maps of the signal-noise CNN's filters, the last conv block of
the image CNNs), flattened per example. `eta=0` is `full`, run for run (no penalty is
added). A `batch_regularizer` without the donor's features, costing one singular-value
decomposition of a b x d matrix per step. It reads only the batch's tensors and the model's
`feature_layers()`, with operations vmap batches (`torch.linalg.svdvals`), so it declares
`batchable_regularizer = True` and trains on the task's batched engine with the same
weights as on the per-run path: the signal-noise span engine (`tasks/signal_noise/engine.py`,
the features rebuilt from its pre-activations) or the vmapped engine (`ptbench/run/vmapped.py`:
the image CNNs, all runs of a task variant as one program); where a task's engine does not
take it, it trains per run. The SVD itself, forward and backward, is the same work on every
path.
"""

import torch

from ptbench.api import Strategy, TransferPlan


class BSS(Strategy):
    """Full transfer, fine-tuned with a penalty on the k smallest batch-feature singular values."""

    name = "bss"
    params = {"eta": [0.001, 0.01], "k": [1, 2]}
    batchable_regularizer = True

    def validate(self):
        if self.eta < 0:
            raise ValueError(f"eta must be non-negative, got {self.eta}")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        if self.eta == 0 or not batch.features:
            return None
        names = batch.model.feature_layers()
        last = batch.features[names[-1]] if names else list(batch.features.values())[-1]
        singular = torch.linalg.svdvals(last.reshape(last.shape[0], -1))  # descending
        return self.eta * (singular[-self.k :] ** 2).sum()
