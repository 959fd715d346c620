"""Surgical fine-tuning (Lee, Chen, Tajwar, Kumar, Yao, Liang and Finn, "Surgical
fine-tuning improves adaptation to distribution shifts", ICLR 2023): inherit everything
`full` inherits, then fine-tune only a chosen subset S of the layers and keep every other
inherited layer at its source value:

    theta_l(0) = theta_l^source;   theta_l(t+1) = theta_l(t) - lr * grad_l L   for l in S,
                                   theta_l(t+1) = theta_l(t)                   otherwise.

The paper's finding: which layers to tune depends on the kind of shift. Input-level shifts
(corruptions) are best served by tuning the first block, output-level ones (label shift) by
the last layer, and tuning the wrong block, or everything, does worse with little target
data. `layers` names S: `first`, `last`, transfer-layer names (`conv2`, `head`, ...) or
1-based indices in forward order, joined by `+` (`first+conv3`, `1+2`). Entries the plan does
not inherit (a fresh head for other classes) always train: freezing them would leave them
at random.

On a one-layer model (the signal-noise CNN, whose only trainable layer is `conv`) `first`
and `last` are that layer, and the strategy is `full` with that layer free, run for run.
The default `first` is the paper's headline setting; the plan is copy and freeze masks, so
the strategy stays on the batched engine.
"""

from ptbench.api import Strategy, TransferPlan


class Surgical(Strategy):
    """Full transfer; only the named layers are fine-tuned, the other inherited ones frozen."""

    name = "surgical"
    params = {"layers": ["first", "last"]}

    def validate(self):
        if not self.items():
            raise ValueError("layers must name at least one layer: first, last, a layer name or an index, joined by +")
        for item in self.items():
            if item.isdigit() and int(item) < 1:
                raise ValueError(f"layer indices count from 1, got {item!r}")

    def items(self) -> list[str]:
        return [item.strip() for item in str(self.layers).split("+") if item.strip()]

    def chosen(self, target) -> set[str]:
        """The names of the layers S that train."""
        names = [layer.name for layer in target.transfer_layers()]
        out = set()
        for item in self.items():
            if item == "first":
                out.add(names[0])
            elif item == "last":
                out.add(names[-1])
            elif item.isdigit() and int(item) <= len(names):
                out.add(names[int(item) - 1])
            elif item in names:
                out.add(item)
            else:
                raise ValueError(f"surgical: no layer {item!r} in {type(target).__name__}; its layers: {', '.join(names)} (or first, last, 1-{len(names)})")
        return out

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        tuned = self.chosen(target)
        for layer in target.transfer_layers():
            if layer.name in tuned:
                continue
            for name in layer.params:
                if name in plan.copy and bool(plan.copy[name].any()):
                    plan.freeze[name] = plan.copy[name].clone()
        return plan
