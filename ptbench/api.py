"""The plugin contract: Task, Strategy, TransferPlan, and the records a run produces.

A contributor reads this file and one example in `strategies/` or `tasks/`, and nothing else.
The harness only ever talks to plugins through what is defined here, which is why it can batch
runs, move them to a GPU, cache source models and check that a strategy left the source model
untouched, without knowing any particular task or strategy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from .spec import Parametrized
from .rng import RandomStreams

# --------------------------------------------------------------------------- data and budgets


@dataclass
class Split:
    """Inputs and labels of one split. Labels are +1/-1 floats for the logistic loss, class
    indices for cross-entropy."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: str | torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class TaskData:
    """One side (source or target) of a task: training and test splits, and whatever the task
    wants its diagnostics to see again (for signal-noise: the signal directions)."""

    train: Split
    test: Split
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: str | torch.device) -> "TaskData":
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device))


@dataclass(frozen=True)
class TrainBudget:
    """How a model is trained. A task declares one budget for all strategies, so that every
    strategy is compared under the same number of steps and the same optimiser."""

    steps: int
    lr: float
    optimizer: str = "gd"  # "gd" (full batch), "sgd" or "adam" (minibatches)
    loss: str = "logistic"  # "logistic" (labels +1/-1, scalar output) or "cross_entropy"
    batch_size: int | None = None  # None: the whole training set every step
    momentum: float = 0.0
    weight_decay: float = 0.0


class Diverged(RuntimeError):
    """Training produced NaN or infinity; the run is stored as `diverged`. A strategy that
    trains candidates while planning (auto-fraction) may catch it to skip a candidate."""


class RunTimeout(RuntimeError):
    """Training went past its deadline (`--timeout`); the run is stored as `timeout`."""


# --------------------------------------------------------------------------- transfer layers


@dataclass(frozen=True)
class TransferLayer:
    """A layer as transfer strategies see it: the parameters that belong to it and the shape
    of its filter index. The leading `len(filter_shape)` dimensions of every parameter in the
    layer index filters; all but the last of those are blocks (the theory's model has one
    block of m filters per class), and fraction-based strategies choose within each block.

    `follow` lists (parameter, dim) pairs of the *next* layer whose slices along dim belong
    to these filters (a conv's output channels are the next conv's input channels); copying a
    filter also copies those slices, so an inherited filter keeps the weights that read it.
    """

    name: str
    params: tuple[str, ...]
    filter_shape: tuple[int, ...]
    head: bool = False
    follow: tuple[tuple[str, int], ...] = ()


class TransferModel(nn.Module):
    """A model the harness can transfer between: it lists its layers in forward order.

    The feature hook (optional; `Strategy.batch_regularizer` needs it): `feature_layers()`
    names, in forward order, the layers whose outputs the model exposes, and
    `forward_features(x)` returns the model's output for `x` together with those outputs,
    `{name: tensor [N, ...]}`, from the one forward pass (the output is exactly `self(x)`).
    A layer's feature is its output as the next layer reads it (after its activation, and its
    pooling where the model pools there). `features(x)` is the dict alone."""

    #: Whether the target's head may be inherited (False when the class sets differ).
    inherit_head: bool = False

    def transfer_layers(self) -> list[TransferLayer]:  # pragma: no cover - abstract
        raise NotImplementedError

    def head_params(self) -> set[str]:
        """Parameters of the layers the model marks as its head."""
        return {p for layer in self.transfer_layers() if layer.head for p in layer.params}

    def feature_layers(self) -> list[str]:
        """Names of the features `forward_features` returns, in forward order ([]: none)."""
        return []

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(self(x), {layer name: that layer's output for x}), in one forward pass."""
        raise NotImplementedError(
            f"{type(self).__name__} has no feature hook: implement feature_layers() and forward_features(x) "
            "to use strategies with a batch_regularizer on it"
        )

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer name: that layer's output for x} (see `forward_features`)."""
        return self.forward_features(x)[1]


# --------------------------------------------------------------------------- plans


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def _fits(values: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """Whether `values` is one number (0-dim), one per filter (a leading part of `shape`) or
    one per entry (`shape` itself): the three shapes plans give per-parameter numbers in."""
    return tuple(values.shape) == tuple(shape[: values.dim()]) and values.dim() <= len(shape)


def _lead(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`values` (see `_fits`) as a view that broadcasts against a tensor of `shape`."""
    return values.reshape(tuple(values.shape) + (1,) * (len(shape) - values.dim()))


def _row_length_split(shape: tuple[int, ...], length: int) -> int | None:
    """How many leading dims of `shape` index the rows a projection of row length `length`
    maps: the fewest trailing dims whose sizes multiply to `length` (None: none do)."""
    size = 1
    for split in range(len(shape), 0, -1):
        size *= shape[split - 1]
        if size == length:
            return split - 1
        if size > length:
            return None
    return None


@dataclass
class ValueRule:
    """Where one parameter's entries start in the target: pure data (tensors), applied once by
    `TransferPlan.apply` before training. For every entry,

        start = donor * P(D) + fresh * F + offset

    where D is the donor's value of the parameter, F the target's fresh initial value, and
    P(D) is D itself or, with a projection, D with every row mapped linearly. The rows are
    the parameter's trailing dims of length f (f = the projection's size; for a signal-noise
    W [2, m, d] and f = d, the 2 m filters):

    * `remove` [k, f], orthonormal rows R: each row r becomes r - (r R^T) R (its component in
      the span of R removed: "the donor's filters without their v_1 component");
    * `matrix` [f, f], M: each row r becomes M r.

    `donor`, `fresh` and `offset` are tensors with one number for the whole parameter
    (0-dim), one per filter (the parameter's leading dims: [2, m] for W) or one per entry
    (its whole shape). `offset` holds given values (drawn from the plan's `rng`, say), never
    the donor's own: donor values reach the target through `donor` only.

    The entries a rule reads are those where `donor` is non-zero (with a projection, also the
    rest of their rows' entries the projection mixes in). They must be declared in the plan's
    `copy` mask of the parameter (`TransferPlan.check_against` refuses the plan otherwise);
    `copy` without a rule is the rule donor=copy, fresh=~copy (a plain copy).
    """

    donor: torch.Tensor | float = 1.0
    fresh: torch.Tensor | float = 0.0
    offset: torch.Tensor | None = None
    remove: torch.Tensor | None = None
    matrix: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.donor = _as_tensor(self.donor)
        self.fresh = _as_tensor(self.fresh)

    # -- the usual rules --------------------------------------------------------------------
    @classmethod
    def copy(cls) -> "ValueRule":
        """Start at the donor's value."""
        return cls(1.0, 0.0)

    @classmethod
    def keep_fresh(cls) -> "ValueRule":
        """Start at the fresh initialisation (what an entry no rule names does)."""
        return cls(0.0, 1.0)

    @classmethod
    def mix(cls, donor: torch.Tensor | float, fresh: torch.Tensor | float) -> "ValueRule":
        """donor * D + fresh * F, per parameter, per filter or per entry."""
        return cls(donor, fresh)

    @classmethod
    def project_out(cls, rows: torch.Tensor, donor: torch.Tensor | float = 1.0, fresh: torch.Tensor | float = 0.0) -> "ValueRule":
        """The donor's rows without their component in the span of `rows` (orthonormal,
        [k, f]; a single direction may be given as [f]), times `donor`, plus fresh * F."""
        rows = rows.reshape(1, -1) if rows.dim() == 1 else rows
        return cls(donor, fresh, remove=rows)

    @classmethod
    def linear(cls, matrix: torch.Tensor, donor: torch.Tensor | float = 1.0, fresh: torch.Tensor | float = 0.0) -> "ValueRule":
        """The donor's rows mapped by `matrix` [f, f], times `donor`, plus fresh * F."""
        return cls(donor, fresh, matrix=matrix)

    # -- reading it -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the rule by field name (those that are set)."""
        return {k: v for k, v in (("donor", self.donor), ("fresh", self.fresh), ("offset", self.offset), ("remove", self.remove), ("matrix", self.matrix)) if v is not None}

    def to(self, device: str | torch.device) -> "ValueRule":
        return ValueRule(**{k: v.to(device) for k, v in self.tensors().items()})

    def projection(self) -> torch.Tensor | None:
        return self.remove if self.remove is not None else self.matrix

    def rows_split(self, shape: tuple[int, ...]) -> int | None:
        """The number of leading dims that index the projection's rows (None: no projection)."""
        projection = self.projection()
        return None if projection is None else _row_length_split(tuple(shape), projection.shape[-1])

    def projected(self, donor: torch.Tensor) -> torch.Tensor:
        """P(D): the donor with the projection applied to every row (D itself without one)."""
        projection = self.projection()
        if projection is None:
            return donor
        split = self.rows_split(tuple(donor.shape))
        rows = donor.reshape(math.prod(donor.shape[:split]), -1)
        projection = projection.to(device=donor.device, dtype=donor.dtype)
        if self.remove is not None:
            rows = rows - (rows @ projection.T) @ projection
        else:
            rows = rows @ projection.T
        return rows.reshape(donor.shape)

    def value(self, donor: torch.Tensor | None, fresh: torch.Tensor) -> torch.Tensor:
        """The start of every entry: donor * P(D) + fresh * F + offset (D may be None when
        the rule reads no donor entry)."""
        shape = tuple(fresh.shape)
        on = dict(device=fresh.device)
        out = _lead(self.fresh.to(**on), shape) * fresh
        if bool((self.donor != 0).any()):
            if donor is None:
                raise ValueError("the value rule reads the donor, which has no such parameter")
            out = _lead(self.donor.to(**on), shape) * self.projected(donor) + out
        if self.offset is not None:
            out = out + _lead(self.offset.to(**on), shape)
        return out

    def reads(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Bool mask of `shape`: the donor entries the rule reads (over-approximated through a
        projection: a row's every entry the projection mixes into a read entry)."""
        read = (_lead(self.donor, shape) != 0).expand(shape)
        projection = self.projection()
        if projection is None:
            return read.clone()
        split = self.rows_split(shape)
        rows = read.reshape(math.prod(shape[:split]), -1).to(torch.float64)
        if self.remove is not None:
            ends = projection.abs().to(torch.float64)
            mixed = (rows @ ends.T) @ ends > 0  # r - (r R^T) R: entry i reads every j with (R^T R)_ij != 0
        else:
            mixed = rows @ (projection != 0).to(torch.float64) > 0  # M r: entry i reads every j with M_ij != 0
        return (rows > 0).logical_or(mixed).reshape(shape)


@dataclass
class WeightPenalty:
    """An L2 penalty in weight space, declared as data rather than coded as a hook, so that
    every training path applies the same term: the per-run loop adds `value` to the loss, and
    the batched engines fold it into their update (the signal-noise engine: a pull toward a
    donor filter the training span also represents is a shrink of the filter's span
    coefficients). L2-SP (Li et al. 2018) is this penalty:

        toward_donor/2 * sum over `inherited` entries of (w - w_donor)^2
      + toward_zero/2  * sum over every other entry of w^2

    `inherited` holds bool masks of parameter shapes (usually the plan's copy masks); a
    parameter without a mask is wholly "other". Sums, not means: the weights are per squared
    unit of distance."""

    toward_donor: float = 0.0
    toward_zero: float = 0.0
    inherited: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, weight in (("toward_donor", self.toward_donor), ("toward_zero", self.toward_zero)):
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"WeightPenalty.{name} must be a finite number >= 0, got {weight!r}")

    def active(self) -> bool:
        return bool(self.toward_donor or self.toward_zero)

    def value(self, named_parameters: "Iterable[tuple[str, torch.Tensor]]", reference: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The penalty for these parameters, `reference` holding the donor's (None: inactive)."""
        if not self.active():
            return None
        pull = shrink = None
        device = None
        for name, param in named_parameters:
            device = param.device
            mask = self.inherited.get(name)
            inherited = mask.to(param.device) if mask is not None else None
            # Masks multiply rather than index: no data-dependent shapes, no device sync.
            if inherited is not None and self.toward_donor:
                term = (((param - reference[name]) ** 2) * inherited).sum()
                pull = term if pull is None else pull + term
            if self.toward_zero:
                term = (param**2).sum() if inherited is None else ((param**2) * ~inherited).sum()
                shrink = term if shrink is None else shrink + term
        total = torch.zeros((), device=device)
        if pull is not None:
            total = total + 0.5 * self.toward_donor * pull
        if shrink is not None:
            total = total + 0.5 * self.toward_zero * shrink
        return total

    def to(self, device: str | torch.device) -> "WeightPenalty":
        return WeightPenalty(self.toward_donor, self.toward_zero, {k: v.to(device) for k, v in self.inherited.items()})


@dataclass
class TransferPlan:
    """What the target model takes from the donor, where it starts, and how it trains.

    * `copy[name]`: bool mask of the parameter's shape: the entries that inherit, that is,
      whose start may read the donor. Alone, they take the donor's value (a plain copy).
    * `init[name]`: a `ValueRule` for the parameter: where its entries start (a mix of donor
      and fresh values, the donor with a component projected out, ...). The entries it reads
      from the donor must be declared in `copy[name]`.
    * `freeze[name]`: bool mask: entries that never change while the target trains.
    * `lr_scale[name]`: learning-rate multipliers, one number (0-dim), one per filter (the
      leading dims) or one per entry; finite and >= 0; 0 freezes. On the per-run path each
      optimiser step's change of an entry is multiplied by its scale: exactly a per-entry
      learning rate for GD, SGD (momentum, weight decay) and AdamW, whose step is the
      learning rate times a quantity that does not depend on it. The signal-noise engine
      takes whole-filter scales (it multiplies a filter's GD step).
    * `penalty`: a `WeightPenalty` added to the training loss (L2-SP's pull toward the
      donor's weights), or None.

    Parameters missing from a dict are not inherited, start fresh, train at the budget's
    learning rate and are not frozen. A plan is pure data (tensors, no callables), so the
    harness can check it (`check_against`), batch it and move it (`to`).
    """

    copy: dict[str, torch.Tensor] = field(default_factory=dict)
    freeze: dict[str, torch.Tensor] = field(default_factory=dict)
    #: What the strategy decided while planning (a fraction chosen on validation data, say),
    #: numbers and strings only; stored with the run as diagnostics["strategy"]. Carried by
    #: the plan rather than the strategy instance, which is shared across seeds and workers.
    notes: dict[str, Any] = field(default_factory=dict)
    init: dict[str, ValueRule] = field(default_factory=dict)
    lr_scale: dict[str, torch.Tensor] = field(default_factory=dict)
    penalty: WeightPenalty | None = None

    # -- building plans -------------------------------------------------------------------
    @classmethod
    def nothing(cls) -> "TransferPlan":
        return cls()

    @classmethod
    def from_filter_masks(
        cls, target: TransferModel, masks: dict[str, torch.Tensor], freeze: bool, follow: bool = True
    ) -> "TransferPlan":
        """Expand per-layer filter masks (layer name -> bool tensor of filter_shape) to
        per-parameter masks, including (with `follow`) the `follow` slices of the next layer.
        Whole-layer plans pass follow=False: "the first k layers" must not reach into k+1."""
        shapes = dict(target.named_parameters())
        plan = cls()
        for layer in target.transfer_layers():
            mask = masks.get(layer.name)
            if mask is None:
                continue
            mask = mask.to(torch.bool).cpu()
            for pname in layer.params:
                full = _broadcast_leading(mask, shapes[pname].shape)
                plan._merge(pname, full, freeze)
            for pname, dim in layer.follow if follow else ():
                shape = shapes[pname].shape
                index = [slice(None)] * len(shape)
                full = torch.zeros(shape, dtype=torch.bool)
                flat = mask.reshape(-1)
                index[dim] = flat
                full[tuple(index)] = True
                plan._merge(pname, full, freeze)
        return plan

    @classmethod
    def full(cls, source: TransferModel, target: TransferModel, freeze: bool = False) -> "TransferPlan":
        """Every transferable layer, whole: the head only when the task allows it."""
        layers = _transferable(source, target)
        return cls.from_filter_masks(
            target, {l.name: torch.ones(l.filter_shape, dtype=torch.bool) for l in layers}, freeze, follow=False
        )

    @classmethod
    def layers(
        cls, source: TransferModel, target: TransferModel, count: int, freeze: bool = False
    ) -> "TransferPlan":
        """The first `count` transferable layers, whole (Yosinski's AnB / AnB+)."""
        layers = _transferable(source, target)[:count]
        return cls.from_filter_masks(
            target, {l.name: torch.ones(l.filter_shape, dtype=torch.bool) for l in layers}, freeze, follow=False
        )

    @classmethod
    def filter_masks(
        cls, source: TransferModel, target: TransferModel, fraction: float, rng: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The per-layer filter masks `filters` uses (layer name -> bool [filter_shape]), with
        the same draws: a strategy that starts from them chooses the filters partial-filters
        chooses under the same seed."""
        masks = {}
        for layer in _transferable(source, target):
            *blocks, width = layer.filter_shape
            n_blocks = int(torch.tensor(blocks).prod()) if blocks else 1
            keep = int(round(fraction * width))
            mask = torch.zeros(n_blocks, width, dtype=torch.bool)
            for b in range(n_blocks):
                order = torch.randperm(width, generator=rng)
                mask[b, order[:keep]] = True
            masks[layer.name] = mask.reshape(layer.filter_shape)
        return masks

    @classmethod
    def filters(
        cls,
        source: TransferModel,
        target: TransferModel,
        fraction: float,
        rng: torch.Generator,
        freeze: bool = False,
    ) -> "TransferPlan":
        """round(fraction * block size) random filters of every block of every transferable
        layer. One permutation per block is drawn whatever the fraction, so under one seed the
        filters inherited at fraction 0.25 are among those inherited at 0.5 (nested plans)."""
        return cls.from_filter_masks(target, cls.filter_masks(source, target, fraction, rng), freeze)

    def mix(self, donor: float, fresh: float) -> "TransferPlan":
        """Every inherited entry (the `copy` masks) starts at donor * D + fresh * F instead of
        D; the others stay fresh. Returns the plan itself (shrink-perturb: `.mix(0.4, 0.1)`)."""
        for name, mask in self.copy.items():
            self.init[name] = ValueRule.mix(
                donor=torch.where(mask, float(donor), 0.0), fresh=torch.where(mask, float(fresh), 1.0)
            )
        return self

    def _merge(self, name: str, mask: torch.Tensor, freeze: bool) -> None:
        self.copy[name] = self.copy.get(name, torch.zeros_like(mask)) | mask
        if freeze:
            self.freeze[name] = self.freeze.get(name, torch.zeros_like(mask)) | mask

    # -- using plans ----------------------------------------------------------------------
    def apply(self, donor: nn.Module, target: nn.Module) -> None:
        """Set the target's planned entries: by their value rule, else (a plain copy) to the
        donor's value. The donor is only read."""
        donor_params = dict(donor.named_parameters())
        with torch.no_grad():
            for name, param in target.named_parameters():
                rule = self.init.get(name)
                if rule is not None:
                    source = donor_params[name].detach().to(param.device) if name in donor_params else None
                    param.copy_(rule.value(source, param.detach()))
                    continue
                mask = self.copy.get(name)
                if mask is None:
                    continue
                mask = mask.to(param.device)
                source = donor_params[name].detach().to(param.device)
                param.copy_(torch.where(mask, source, param))

    def fraction_copied(self) -> float:
        total = sum(m.numel() for m in self.copy.values())
        return float(sum(m.sum() for m in self.copy.values()) / total) if total else 0.0

    def to(self, device: str | torch.device) -> "TransferPlan":
        """The same plan with every tensor on `device`."""
        return TransferPlan(
            copy={k: v.to(device) for k, v in self.copy.items()},
            freeze={k: v.to(device) for k, v in self.freeze.items()},
            notes=dict(self.notes),
            init={k: v.to(device) for k, v in self.init.items()},
            lr_scale={k: v.to(device) for k, v in self.lr_scale.items()},
            penalty=self.penalty.to(device) if self.penalty is not None else None,
        )

    def lr_scales(self, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The parameter's learning-rate scales expanded to its shape (None: none given)."""
        scale = self.lr_scale.get(name)
        return None if scale is None else _broadcast_leading(scale, torch.Size(shape))

    def check_against(self, model: nn.Module) -> None:
        """Raise ValueError unless the plan fits `model`: its masks, rules and scales name
        known parameters in fitting shapes (`check_shapes`), its value rules are finite and read
        only declared entries (`check_value_rules`), its learning-rate scales are finite and
        non-negative (`check_lr_scales`)."""
        self.check_shapes(model)
        self.check_value_rules(model)
        self.check_lr_scales()

    def check_shapes(self, model: nn.Module) -> None:
        """Raise ValueError when a mask, rule or scale names an unknown parameter or has a
        shape that does not fit it."""
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        inherited = self.penalty.inherited if self.penalty is not None else {}
        for kind, masks in (("copy", self.copy), ("freeze", self.freeze), ("penalty", inherited)):
            for name, mask in masks.items():
                if name not in shapes:
                    raise ValueError(f"{kind} mask for unknown parameter {name!r}")
                if tuple(mask.shape) != tuple(shapes[name]) or mask.dtype != torch.bool:
                    raise ValueError(
                        f"{kind} mask for {name!r} has shape {tuple(mask.shape)} {mask.dtype}, "
                        f"expected {tuple(shapes[name])} bool"
                    )
        per = "() (one number), a leading part of {0} (one per filter) or {0} (one per entry)"
        for name, rule in self.init.items():
            if name not in shapes:
                raise ValueError(f"value rule for unknown parameter {name!r}")
            if not isinstance(rule, ValueRule):
                raise ValueError(f"plan.init[{name!r}] is a {type(rule).__name__}, not a ValueRule")
            shape = shapes[name]
            for key in ("donor", "fresh", "offset"):
                values = getattr(rule, key)
                if values is None:
                    continue
                if not isinstance(values, torch.Tensor) or not values.is_floating_point():
                    raise ValueError(f"value rule for {name!r}: {key} must be a float tensor, got {type(values).__name__} {getattr(values, 'dtype', '')}")
                if not _fits(values, shape):
                    raise ValueError(f"value rule for {name!r}: {key} has shape {tuple(values.shape)}, expected " + per.format(shape))
            if rule.remove is not None and rule.matrix is not None:
                raise ValueError(f"value rule for {name!r} has both remove and matrix; give one projection")
            projection = rule.projection()
            if projection is not None:
                which = "remove" if rule.remove is not None else "matrix"
                if not isinstance(projection, torch.Tensor) or not projection.is_floating_point() or projection.dim() != 2:
                    raise ValueError(f"value rule for {name!r}: {which} must be a 2-d float tensor")
                if which == "matrix" and projection.shape[0] != projection.shape[1]:
                    raise ValueError(f"value rule for {name!r}: matrix has shape {tuple(projection.shape)}, expected a square [f, f]")
                if rule.rows_split(shape) is None:
                    raise ValueError(
                        f"value rule for {name!r}: {which} acts on rows of length {projection.shape[-1]}, "
                        f"and no trailing dims of {shape} have that size"
                    )
        for name, scale in self.lr_scale.items():
            if name not in shapes:
                raise ValueError(f"learning-rate scale for unknown parameter {name!r}")
            if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
                raise ValueError(f"learning-rate scale for {name!r} must be a float tensor, got {type(scale).__name__} {getattr(scale, 'dtype', '')}")
            if not _fits(scale, shapes[name]):
                raise ValueError(f"learning-rate scale for {name!r} has shape {tuple(scale.shape)}, expected " + per.format(shapes[name]))

    def check_value_rules(self, model: nn.Module) -> None:
        """Raise ValueError when a value rule has a non-finite number, `remove` rows that are
        not orthonormal, or reads donor entries its parameter's `copy` mask does not declare."""
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        for name, rule in self.init.items():
            for key, values in rule.tensors().items():
                if not bool(torch.isfinite(values).all()):
                    raise ValueError(f"value rule for {name!r}: {key} has a value that is not finite")
            if rule.remove is not None:
                gram = rule.remove.to(torch.float64) @ rule.remove.to(torch.float64).T
                if not torch.allclose(gram, torch.eye(len(gram), dtype=torch.float64), atol=1e-4):
                    raise ValueError(f"value rule for {name!r}: the rows of remove are not orthonormal (orthonormalise them first, e.g. with torch.linalg.qr)")
            read = rule.reads(shapes[name])
            declared = self.copy.get(name)
            outside = read if declared is None else read & ~declared.to(read.device)
            if bool(outside.any()):
                first = tuple(int(i) for i in torch.nonzero(outside)[0])
                raise ValueError(
                    f"value rule for {name!r} reads the donor outside its declared entries: {int(outside.sum())} entries "
                    f"(the first at {first}) read the donor that plan.copy[{name!r}] does not declare; declare them, "
                    "or give the rule's donor coefficient 0 there"
                )

    def check_lr_scales(self) -> None:
        """Raise ValueError when a learning-rate scale is negative or not finite."""
        for name, scale in self.lr_scale.items():
            if not bool(torch.isfinite(scale).all()):
                raise ValueError(f"learning-rate scale for {name!r} is not finite; scales are numbers >= 0 (0 freezes)")
            if bool((scale < 0).any()):
                raise ValueError(f"learning-rate scale for {name!r} is negative ({float(scale.min()):g}); scales are numbers >= 0 (0 freezes)")


def _broadcast_leading(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A mask over the leading dims of `shape`, repeated along the rest."""
    view = mask.reshape(tuple(mask.shape) + (1,) * (len(shape) - mask.dim()))
    return view.expand(shape).clone()


def _transferable(source: TransferModel, target: TransferModel) -> list[TransferLayer]:
    """Layers present in both models with equal shapes; heads only when the target allows."""
    source_params = dict(source.named_parameters())
    out = []
    for layer in target.transfer_layers():
        if layer.head and not getattr(target, "inherit_head", False):
            continue
        target_params = dict(target.named_parameters())
        if all(
            p in source_params and source_params[p].shape == target_params[p].shape
            for p in layer.params
        ):
            out.append(layer)
    return out


# --------------------------------------------------------------------------- plugins


class Task(Parametrized):
    """A source/target pair of datasets, the architecture both models share, and the budget.

    Draw everything random from `streams` (one generator per role): the harness relies on
    equal roles giving equal draws to pair strategies under one seed.
    """

    def data(self, role: str, streams: RandomStreams) -> TaskData:  # pragma: no cover - abstract
        """role is "source" or "target"."""
        raise NotImplementedError

    def model(self, role: str, generator: torch.Generator) -> TransferModel:  # pragma: no cover
        """A freshly initialised model for `role`, its parameters drawn from `generator`."""
        raise NotImplementedError

    def budget(self, role: str) -> TrainBudget:  # pragma: no cover - abstract
        raise NotImplementedError

    def diagnostics(self, model: nn.Module, data: TaskData, plan: "TransferPlan | None") -> dict[str, Any]:
        """Task-specific measurements of a model (numbers only), stored with the run: the
        harness calls it after source training and after target training (optional)."""
        return {}

    def trace_every(self) -> int:
        """Record `diagnostics` every this many training steps as a trajectory (0: never).
        Tracing costs time, so tasks turn it on only where plots need it."""
        return 0

    def batched_engine(self) -> Any:
        """A `ptbench.run.engines.BatchedEngine` that trains many runs of this task's model as one
        tensor program, or None (the default: every run takes the per-run path). The runner
        still sends it only the runs it `supports`; strategies with a `regularizer` hook never."""
        return None


@dataclass
class RegularizerBatch:
    """What `Strategy.batch_regularizer` sees at every training step.

    `x`, `y`: the step's batch; `step`: its index (from 0); `model`: the target model;
    `output`: the target's output for `x`; `features`: the target's features for `x`
    (`TransferModel.forward_features`, from the same forward pass as `output`; both carry
    gradients); `donor_features`: the donor's features for the same `x` when the strategy sets
    `needs_donor_features = True` (computed under no_grad with the donor in eval mode and
    left as it was), else None; `plan`: the run's plan."""

    x: torch.Tensor
    y: torch.Tensor
    step: int
    model: nn.Module
    output: torch.Tensor
    features: dict[str, torch.Tensor]
    donor_features: dict[str, torch.Tensor] | None
    plan: TransferPlan


class Strategy(Parametrized):
    """How the target model inherits from a trained model.

    Most strategies only implement `plan`, and their plans say everything: which entries
    inherit (`copy`), where entries start (`init`: value rules), which stay fixed (`freeze`),
    how fast each trains (`lr_scale`) and what weight penalty training adds (`penalty`).
    `donor` says which trained model they inherit from: the source model, a model trained on
    the target task itself (the selffer control of Yosinski et al.), or None: the strategy
    inherits nothing (scratch), so a group of such strategies trains no source model.

    The optional hooks below change training or plan on target data. Which path a run takes
    is decided once, by `ptbench.run.protocol.batched_refusal`: `regularizer` (arbitrary code
    on the model each step) always trains per run; `phases` and `batch_regularizer` train on
    a task's batched engine when its `supports` accepts them (the vmapped image engine
    batches both; `batch_regularizer` only with `batchable_regularizer = True`);
    `plan_with_data` only plans, and `context.train_many` trains its candidates as one
    batch. CONTRIBUTING.md's table lists what each costs.
    """

    donor: ClassVar[str | None] = "source"
    #: Names in the task's `TaskData.extras` that planning needs (signal-noise names its signal
    #: "directions"); they reach `plan_with_extras`. On a task without them the run fails with
    #: a message that says so, and the contract checks skip that task (not applicable).
    needs_extras: ClassVar[tuple[str, ...]] = ()
    #: Whether `batch_regularizer` wants the donor's features of each batch (one more forward
    #: pass per step, through the donor, without gradient).
    needs_donor_features: ClassVar[bool] = False
    #: A promise that lets a batched engine run `batch_regularizer` under torch.func.vmap: it
    #: reads the batch's tensors (x, y, output, features, donor_features) and the plan, reads
    #: `batch.model` only for its structure (`feature_layers()`), never its parameters, and
    #: uses only operations vmap can batch (no in-place writes to inputs, no `.item()`, no
    #: data-dependent shapes). Without it the strategy trains per run.
    batchable_regularizer: ClassVar[bool] = False

    def plan(self, source: TransferModel, target: TransferModel, rng: torch.Generator) -> TransferPlan:
        raise NotImplementedError  # pragma: no cover - abstract

    def plan_with_extras(
        self, source: TransferModel, target: TransferModel, rng: torch.Generator, extras: dict[str, Any]
    ) -> TransferPlan:
        """Like `plan`, for strategies that use what the task says about its target data
        (`extras`, which holds at least the names in `needs_extras`): signal-noise's
        "directions" are the rows u, v_1, v_2. Planning only, so the strategy keeps the batched
        engine. The default ignores the extras."""
        return self.plan(source, target, rng)

    def plan_with_data(
        self,
        source: TransferModel,
        target: TransferModel,
        rng: torch.Generator,
        context: "PlanContext",
    ) -> TransferPlan:
        """Like `plan`, for strategies that must look at the target data first (choosing a
        fraction on a validation split, say). The harness always calls this; the default
        calls `plan_with_extras` with the context's extras. Only planning changes: the run
        itself then trains on whichever path its plan takes, and `context.train_many` trains
        candidates as one batch where the task's engine supports them."""
        return self.plan_with_extras(source, target, rng, context.extras)

    def regularizer(self, model: nn.Module, reference: dict[str, torch.Tensor], plan: TransferPlan) -> torch.Tensor | None:
        """An extra loss term each step, in weight space: `reference` holds the donor's
        parameters (a copy: the donor itself is never handed out); a scalar tensor, or None
        for none. It sees no data, so it costs no forward pass. Arbitrary code on the model
        each step: only the per-run loop runs it. A penalty that is a weighted L2 distance to
        the donor's (or zero) weights is better declared as `plan.penalty` (`WeightPenalty`,
        as `strategies/l2_sp.py` does), which every engine applies."""
        return None

    def batch_regularizer(self, batch: RegularizerBatch) -> torch.Tensor | None:
        """An extra loss term each step that sees the batch: x, y, the step, the target's
        output and features for x, the donor's features when `needs_donor_features`, the plan
        (`RegularizerBatch`). A scalar tensor, or None for none. DELTA (feature-map distance)
        and BSS (spectral shrinkage of the batch features) use it."""
        return None

    def phases(self, steps: int, plan: TransferPlan, model: TransferModel) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """Training as (steps, freeze masks) phases; the default is one phase under the plan."""
        return [(steps, plan.freeze)]

    @classmethod
    def leaderboard_section(cls, summary: "Any") -> str | None:
        """Extra markdown for the leaderboard when this strategy has results (optional).
        `summary` is `ptbench.results.stats.summarize`'s table over all tasks and strategies."""
        return None

    @classmethod
    def has_weight_hook(cls) -> bool:
        """Whether the strategy overrides `regularizer`: arbitrary code on the model each step,
        which only the per-run training loop can run."""
        return cls.regularizer is not Strategy.regularizer

    @classmethod
    def customises_training(cls) -> bool:
        """Whether the strategy overrides any hook beyond planning from the models (each may
        cost more than a plain plan; `has_weight_hook` is the one that forces the per-run path)."""
        return (
            cls.regularizer is not Strategy.regularizer
            or cls.batch_regularizer is not Strategy.batch_regularizer
            or cls.phases is not Strategy.phases
            or cls.plan_with_data is not Strategy.plan_with_data
        )


@dataclass
class PlanContext:
    """What `Strategy.plan_with_data` may use: the target training data, the task's budget,
    the task itself (for fresh models), `train(model, split, plan)` which trains under the
    task's budget with the harness's own training loop, `evaluate(model, split)` (accuracy),
    `loss(model, split)` (the budget's loss on a split, no gradient), and `extras`: what the
    task's target data names about itself (signal-noise: its signal "directions" u, v_1, v_2),
    empty for tasks that name nothing.

    `train_many(models, split, plans)` trains several models on one split as `train` would,
    one after the other, and returns per model None (trained) or the `Diverged` error that
    ended it; where the task's batched engine supports them it trains them as one program
    (auto-fraction's candidates). Every model sees the minibatches `train` would give it."""

    train_data: Split
    budget: TrainBudget
    task: "Task"
    streams: RandomStreams
    device: str
    train: Any  # Callable[[TransferModel, Split, TransferPlan], None]
    evaluate: Any  # Callable[[TransferModel, Split], float]
    loss: Any = None  # Callable[[TransferModel, Split], float]
    extras: dict[str, Any] = field(default_factory=dict)
    train_many: Any = None  # Callable[[list[TransferModel], Split, list[TransferPlan]], list[Diverged | None]]


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One (task variant, strategy variant, seed): one row of results."""

    task: Task
    strategy: Strategy
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task.key}|{self.strategy.key}|{self.seed}"


@dataclass
class RunResult:
    """What one run produced; `status` is ok, failed, diverged or timeout."""

    task: str
    task_params: dict[str, Any]
    strategy: str
    strategy_params: dict[str, Any]
    seed: int
    key: str
    status: str = "ok"
    error: str | None = None
    source_acc: float | None = None
    target_acc: float | None = None
    target_train_acc: float | None = None
    source_seconds: float | None = None
    target_seconds: float | None = None
    device: str = "cpu"
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: How the target was trained: "batched" (a task's engine) or "per-run" (the training
    #: loop); None when the run failed before training.
    path: str | None = None
    #: Digest of the task's and strategy's plugin code (ptbench.sources.plugin_hash), set
    #: when the sweep stores the run.
    plugin_hash: str | None = None
    donor_digest: str | None = None

    @classmethod
    def for_spec(cls, spec: RunSpec, **fields: Any) -> "RunResult":
        return cls(
            task=spec.task.instance_name,
            task_params=spec.task.values,
            strategy=spec.strategy.instance_name,
            strategy_params=spec.strategy.values,
            seed=spec.seed,
            key=spec.key,
            **fields,
        )
