"""A control for what inherited filters carry: inherit `fraction` of every layer's filters,
chosen as `partial-filters` chooses them (the same draws), but replace each inherited
filter by a random direction of the same norm,

    w_target(0) = |w_source| * z / |z|,   z ~ N(0, I) from the plan's rng,

so the target gets the source's filter *scales* and nothing of what they point at. A filter
is all of its layer's entries that belong to it (weights over every input channel, bias,
BatchNorm scale and shift on the ResNet), one vector. If `partial-filters` beats this at the
same fraction, the directions the source learned are what helps; if this does as well, the
benefit (or the harm) is the scale of a trained filter, not its content. The filters not
inherited keep their fresh initialisation.

The plan is a value rule per parameter (donor coefficient 0, fresh 0 on inherited filters,
an offset holding the random filters): pure data, batched on signal-noise.
"""

import math

import torch

from ptbench.api import Strategy, TransferPlan, ValueRule


class RandomFilters(Strategy):
    """Inherited filters become random vectors of the source filters' norms."""

    name = "random-filters"
    params = {"fraction": [0.5, 0.25, 1.0]}

    def validate(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")

    def plan(self, source, target, rng):
        masks = TransferPlan.filter_masks(source, target, self.fraction, rng)
        plan = TransferPlan.from_filter_masks(target, masks, freeze=False)
        donor = dict(source.named_parameters())
        for layer in target.transfer_layers():
            mask = masks.get(layer.name)
            if mask is None:
                continue
            count = math.prod(layer.filter_shape)
            parts = [donor[p].detach().cpu().reshape(count, -1) for p in layer.params]
            filters = torch.cat(parts, dim=1)  # [filters, every entry of a filter]
            z = torch.randn(filters.shape, generator=rng, dtype=filters.dtype)
            random = z * (filters.norm(dim=1, keepdim=True) / z.norm(dim=1, keepdim=True).clamp_min(1e-30))
            inherited = mask.reshape(count, 1)
            start = 0
            for pname, part in zip(layer.params, parts):
                width = part.shape[1]
                shape = donor[pname].shape
                offset = torch.where(inherited, random[:, start : start + width], 0.0).reshape(shape)
                start += width
                plan.init[pname] = ValueRule(donor=0.0, fresh=(~mask).to(filters.dtype), offset=offset)
        return plan
