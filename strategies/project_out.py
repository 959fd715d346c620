"""Inherit filters without one direction: `fraction` of every layer's filters, chosen as
`partial-filters` chooses them (the same draws), each with its component along a named
direction of the task removed,

    w_target(0) = w_source - <w_source, v> v        (|v| = 1),

the other filters fresh. On the signal-noise tasks the directions are the task's own signal
directions (`context.extras["directions"]`: rows u, v_1, v_2, orthonormal; see
tasks/signal_noise/task.py): `direction=v1` removes the source-specific signal v_1, which is
the paper's mechanism of negative transfer (inherited filters along v_1 fire on target noise,
which is not orthogonal to v_1), `u` removes the shared signal (what should have helped),
`v2` the target-specific one (which the source never saw: a control that should change
little). So `project-out[direction=v1]` tests the mechanism directly: if it recovers what
`partial-filters` loses on the negative task, v_1 was the culprit.

Not offered: the span of the source's training noise (what the source memorised). The plan
sees the target's data description only, and drawing the source data again inside every plan
would cost a second data draw per run; v_1 and u are what the theory names.

The strategy declares `needs_extras = ("directions",)`: on tasks that name no directions
(the image tasks) a run fails saying so, and the contract checks skip those tasks. Only
parameters whose filters have the direction's length are projected (W on signal-noise);
other inherited parameters are copied. The plan is a value rule (`ValueRule.project_out`),
pure data, so the strategy stays on the batched engine.

Default: `fraction=1.0` (every filter, so the difference from `full` is exactly the removed
direction), `direction=v1` (the theory's suspect).
"""

import torch

from ptbench.api import Strategy, TransferPlan, ValueRule

DIRECTIONS = {"u": 0, "v1": 1, "v2": 2}


class ProjectOut(Strategy):
    """Inherited filters lose their component along a signal direction of the task."""

    name = "project-out"
    params = {"fraction": [1.0, 0.5], "direction": ["v1", "u", "v2"]}
    needs_extras = ("directions",)

    def validate(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")

    def plan(self, source, target, rng):
        raise TypeError("project-out needs the task's directions: the harness calls plan_with_extras")

    def plan_with_extras(self, source, target, rng, extras):
        rows = extras["directions"]
        v = rows[DIRECTIONS[self.direction]].detach().to("cpu", torch.float64)
        v = (v / v.norm()).reshape(1, -1)
        plan = TransferPlan.filters(source, target, fraction=self.fraction, rng=rng)
        shapes = dict(target.named_parameters())
        for name, mask in plan.copy.items():
            shape = shapes[name].shape
            if shape[-1] != v.shape[-1]:
                continue  # filters of another length: copied as they are
            dtype = shapes[name].dtype
            plan.init[name] = ValueRule.project_out(v.to(dtype), donor=mask.to(dtype), fresh=(~mask).to(dtype))
        return plan
