"""L2-SP (Li, Grandvalet and Davoine, "Explicit inductive bias for transfer learning with
convolutional networks", ICML 2018): inherit everything `full` inherits, then fine-tune with
a penalty that pulls the inherited weights back toward the source weights,

    loss + alpha/2 * ||w_S - w_S^src||^2 + beta/2 * ||w_new||^2,

where S are the inherited entries (the plan's copy masks) and w_new everything else (a fresh
head, filters a task does not inherit). Plain weight decay pulls the inherited weights toward
zero, which forgets what they learned; L2-SP pulls them toward what they learned instead, so
fine-tuning may only move as far from the source as the target data pays for.

This file is also the example of a training hook: `regularizer` is called every step with
the donor's parameters (`reference`), and any strategy that overrides it runs on the per-run
training path. Sums, not means, as in the paper: alpha is per squared unit of distance.
"""

from __future__ import annotations

import torch

from ptbench.api import Strategy, TransferPlan


class L2SP(Strategy):
    """Full transfer, fine-tuned with a penalty toward the source weights (Li et al. 2018)."""

    name = "l2-sp"
    params = {"alpha": [0.01], "beta": [0.0]}

    def validate(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got alpha={self.alpha}, beta={self.beta}")

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def regularizer(self, model, reference, plan):
        if self.alpha == 0 and self.beta == 0:
            return None
        pull = shrink = None
        for name, param in model.named_parameters():
            mask = plan.copy.get(name)
            inherited = mask.to(param.device) if mask is not None else None
            # Masks multiply rather than index: no data-dependent shapes, no device sync.
            if inherited is not None and self.alpha:
                term = (((param - reference[name]) ** 2) * inherited).sum()
                pull = term if pull is None else pull + term
            if self.beta:
                term = (param**2).sum() if inherited is None else ((param**2) * ~inherited).sum()
                shrink = term if shrink is None else shrink + term
        total = torch.zeros((), device=next(model.parameters()).device)
        if pull is not None:
            total = total + 0.5 * self.alpha * pull
        if shrink is not None:
            total = total + 0.5 * self.beta * shrink
        return total
