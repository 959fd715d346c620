"""The theory's diagnostics for the two-layer CNN: signal learning against noise memorisation.

Kept apart from the task so that reports and tests can measure any model's filters the way
the task does, without building a task.
"""

from __future__ import annotations

from typing import Any

import torch

from ptbench.api import TaskData, TransferPlan


def signal_noise_diagnostics(
    W: torch.Tensor, data: TaskData, plan: TransferPlan | None, norms: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> dict[str, Any]:
    """The theory's two competing quantities, measured on the model's filters W [2, m, d].

    * Signal learning: j * <w_{j,r}, s> for s = u, v_1, v_2 (j = +1 for W[0], -1 for W[1]),
      keys `u_*`, `v1_*`, `v2_*`; s is the signal vector itself, norm included (`norms`:
      |u|, |v_1|, |v_2|), so that it is in the same units as <w, xi_i>, as in the theory.
      The sign j is the theory's orientation (Cao et al. 2022): a class +1 filter helps when
      it points along +s, a class -1 filter along -s, so the value is positive when a filter
      has learned the signal, and a filter pointing the wrong way counts against it. Both v_1 and v_2 are measured whatever the
      role: on the target model, v_1 is what inherited filters brought from the source (the
      direction the target noise still contains), v_2 what the target has learned itself.
      `*_max_G` is the max over the group's filters, `*_mean_G` the mean.
    * Noise memorisation `noise_G`: for every noise patch xi_i of the training data, the max
      over the group's filters of <w_{j,r}, xi_i> (signed: what the ReLU passes on), averaged
      over the patches.

    G is `all`, and with a plan that copies W also `inherited` and `fresh` (filters the plan
    copied from the donor / left at their fresh initialisation).
    """
    dirs = data.extras["directions"].to(W.device)
    flat = W.reshape(-1, W.shape[-1])  # [2m, d]
    blocks = W.shape[0]
    orientation = torch.tensor([1.0, -1.0], device=W.device, dtype=W.dtype)[:blocks]
    orientation = orientation.repeat_interleave(flat.shape[0] // blocks)  # j per filter
    along = {name: orientation * (flat @ dirs[i]) * norms[i] for i, name in enumerate(("u", "v1", "v2"))}
    x = data.train.x.to(W.device)
    position = data.extras["signal_position"].to(W.device)
    n, patches, _ = x.shape
    noise_mask = torch.ones(n, patches, dtype=torch.bool, device=W.device)
    noise_mask[torch.arange(n, device=W.device), position] = False
    noise = x[noise_mask]  # [n * (patches - 1), d]
    groups = {"all": torch.ones(flat.shape[0], dtype=torch.bool, device=W.device)}
    if plan is not None and "W" in plan.copy:
        inherited = plan.copy["W"].reshape(flat.shape)[:, 0].to(W.device)
        groups["inherited"] = inherited
        groups["fresh"] = ~inherited
    out: dict[str, Any] = {}
    for group, sel in groups.items():
        if not bool(sel.any()):
            continue
        for name, values in along.items():
            out[f"{name}_max_{group}"] = float(values[sel].max())
            out[f"{name}_mean_{group}"] = float(values[sel].mean())
        if len(noise):
            out[f"noise_{group}"] = float((noise @ flat[sel].T).max(dim=1).values.mean())
    return out
