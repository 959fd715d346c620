"""DELTA (Li, Xiong, Wang, Huan, Wu and Dou, "DELTA: DEep Learning Transfer using feature
map with attention for convolutional networks", ICLR 2019): inherit everything `full`
inherits, then fine-tune with a penalty on how far the target's feature maps move from the
source's, on the same batch:

    loss + alpha * Omega(w, x),   Omega(w, x) = sum_j W_j * || FM_j(w, x) - FM_j(w*, x) ||^2,

FM_j the j-th feature map, w* the source's weights, W_j attention weights. Unlike L2-SP,
which pulls the weights back to the source's (`strategies/l2_sp.py`), DELTA lets the weights
go anywhere that computes the same features on the target data: it regularises behaviour,
not parameters.

Here: every feature layer the model exposes (`TransferModel.feature_layers`; `conv` on the
signal-noise CNN, every conv layer of the image CNNs), uniform attention (W_j = 1, the
paper's variant without its supervised attention), and means instead of sums over the batch
and over each map's entries, so that alpha does not grow with the batch size or the map size:

    Omega = sum_l mean_{i, entries} (F_l(w, x_i) - F_l(w*, x_i))^2.

`alpha=0` is `full`, run for run (no penalty is added). The default `alpha=0.1` keeps the
penalty of the order of the loss at the distances fine-tuning reaches on the quick suite.

This file is the example of `batch_regularizer` with `needs_donor_features`: the harness
computes the donor's features for each batch (no gradient, the donor left as it was; one
more forward pass per step, through the donor). It reads only the batch's tensors, with
operations vmap batches, so it declares `batchable_regularizer = True` and trains on the
task's batched engine with the same weights as on the per-run path: the signal-noise span
engine (`tasks/signal_noise/engine.py`: features rebuilt from its pre-activations, the
donor's once per run, since every step sees the whole split) or the vmapped engine
(`ptbench/run/vmapped.py`: the image CNNs, all runs of a task variant as one program, the
donors' features as one vmapped forward); where a task's engine does not take it, it trains
per run.
"""

from ptbench.api import Strategy, TransferPlan


class Delta(Strategy):
    """Full transfer, fine-tuned with a penalty on the feature-map distance to the source."""

    name = "delta"
    params = {"alpha": [0.1, 1.0]}
    needs_donor_features = True
    batchable_regularizer = True

    def validate(self):
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        if self.alpha == 0:
            return None
        total = None
        for layer, mine in batch.features.items():
            term = ((mine - batch.donor_features[layer]) ** 2).mean()
            total = term if total is None else total + term
        return None if total is None else self.alpha * total
