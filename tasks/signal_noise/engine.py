"""The batched engine for TwoLayerReLUCNN: full-batch gradient descent on the logistic loss
for many runs at once, in the span of the training patches.

Why it is fast. Gradient descent adds to a filter w_{j,r} only combinations of training
patches, so after any number of steps w_{j,r} = w0_{j,r} + sum_k c_{j,r,k} b_k, where b_k
runs over a basis of the training patches. Every pre-activation the loss needs is then
<w_{j,r}, b_k> = (W0 B^T + C G)_{jr,k} with G = B B^T: a step costs one [2m, K] x [K, K]
product instead of two [2m, d] x [d, nP] ones, and K is about n while d is large. Patches
that are scalar multiples of a few shared vectors (the signal patch y (u + v) of every
example) enter once, not once per example: relu(c z) = c+ relu(z) + c- relu(-z), so their
share of the loss and gradient reduces to two numbers per filter. The runs of one seed share
their G, so all of them are one batched product per step, and no Python loop runs over runs.

Exactness. In exact arithmetic this is the per-run path's gradient descent, step for step;
in float32 the sums are ordered differently, so weights agree to rounding (tests hold them
to a tight tolerance and accuracies to equality). Frozen filters are left out of the
per-step product altogether (their share of every output is computed once), so they stay
bit-identical to their initial value, as on the per-run path; jobs that must end alike
(same data, start, frozen filters, learning-rate scales, phases and penalty) are trained
once (a job with a batch regulariser never counts as another's twin). The engine trains
exactly what `supports` accepts: TwoLayerReLUCNN itself, full-batch GD (no momentum, no
weight decay) on the logistic loss, freeze masks that hold whole filters (a mask that
freezes part of a filter would leave the span, so such a plan goes per-run), learning-rate
scales per whole filter (a filter's GD step on its coefficients times its scale; scale 0 is
frozen; scales that differ within a filter go per-run), and the three training hooks that
stay in the span:

* `Strategy.phases` (LP-FT): a run's phases become a per-filter rate that switches at the
  phase boundaries, each job at its own. The rows of the program are the filters free in
  some phase; a filter frozen in a phase gets rate 0 for it, so its coefficients do not
  move at all (exactly: it keeps its values, as the per-run loop's frozen entries do).
  Phase masks must freeze whole filters, and the phases must add up to the step budget.
* `TransferPlan.penalty` (L2-SP): the pull toward_donor (w - w_donor) on an inherited
  filter is toward_donor C B when the filter starts at the donor's value (w0 = w_donor,
  what a plain copy gives; `supports` checks the plan copies it, training checks the
  weights against the job's donor), so it stays in the span: each step, added to the usual
  update, C_row -= lr rate toward_donor C_row. The loss history, from which divergence is
  read, includes the penalty (toward_donor/2 <C_row, (C G)_row>, from the step's own
  pre-activations), so a run diverges at the step the per-run loop's loss does. Refused:
  toward_zero > 0 on a filter that trains (w0 is not in the span), a penalty mask that
  covers part of a filter, and a pulled training filter the plan does not copy plainly.

* `Strategy.batch_regularizer` (DELTA, BSS, a plugin's), when the strategy declares
  `batchable_regularizer = True`: the promise that the term reads only the batch's tensors
  (x, y, output, features, donor_features), the plan and `model.feature_layers()`, with
  operations torch.func.vmap batches. The model's feature "conv", ReLU(<w_{j,r}, x_p>), is a
  function of the pre-activations on the training basis, which the step has in Z already:
  an own patch reads its column, the signal patch of example i is coef[i, p] times a shared
  vector, so its pre-activation is coef[i, p] z_shared, and a frozen filter reads its start
  (A0). So the engine builds every hooked job's features and output from Z (differentiably),
  calls the strategy's own `batch_regularizer` on a `RegularizerBatch` like the per-run
  loop's (one vmapped call for the jobs of one regulariser, or a plain call per job where
  they are few, `vmap_jobs`; `model` a template, as on the vmapped engine; the donor's
  features computed once per job with the donor's own forward, the batch being the whole
  split under GD), and autograd gives d term / d Z. Since Z_{r,k} =
  <w_r, b_k> and w_r = w0_r + sum_k C_{r,k} b_k, the term's gradient in weight space is
  sum_k (d term / d Z_{r,k}) b_k: the GD step subtracts lr rate d term / d Z from C (a
  shared column collects every patch that uses the vector, with its coefficient, through
  the chain rule). The term is part of the loss history, so a run diverges where the
  per-run loop's loss does. A term that raises fails its own group's jobs only ("failed",
  as the per-run loop would fail them), and a job whose loss was not finite at an earlier
  step (diverged: the per-run loop stopped there) reads zero features from then on, so
  that its ever larger weights cannot fail the SVD of a whole vmapped batch.

`regularizer` hooks (arbitrary code on the model) and batch regularisers without the
promise are not the engine's: `supports` refuses them. Without phases, a penalty or a batch
regulariser a program is the plain one, operation for operation.

Where a filter starts is not the engine's business: it trains from each job's initial W,
the plan already applied, so every value rule (a mix of donor and fresh filters, a donor
filter with a direction projected out, a random filter of the donor's norm) is supported:
w_{j,r} = w0_{j,r} + sum_k c_{j,r,k} b_k holds whatever w0 is.

Data. Splits may be given as `PatchSplit` (the factors the task drew them from) or as plain
dense splits, which are factored trivially (every patch its own basis vector, no sharing).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.func import vmap

from ptbench.api import RegularizerBatch, RunTimeout, Split, Strategy, TrainBudget, TransferModel, TransferPlan
from ptbench.run.engines import BatchedEngine, BatchJob, JobOutcome, torch_threads
from ptbench.run.training import _scalar_term, donor_features, structure_only
from ptbench.run.vmapped import _plan_leaves, _plan_view

from .data import PatchSplit
from .model import TwoLayerReLUCNN

#: The flat per-step buffers whose elementwise functions are transcendental (the margin's
#: softplus and sigmoid) are padded to a multiple of this many elements, so that torch's
#: vectorized CPU loop computes every real element and no scalar remainder loop does (the
#: two round exp differently, which made a program's last dataset train differently from
#: the same dataset in any other position). 64 covers every vector width.
VECTOR_PAD = 64


def _freeze_rows(plan: TransferPlan | None, model: TwoLayerReLUCNN) -> torch.Tensor | None:
    """[2, m] bool: the filters the plan freezes (learning-rate scale 0 included); None when
    it freezes part of a filter."""
    rates = _rate_rows(plan, model)
    if rates is None:
        return None
    if plan is None or "W" not in plan.freeze:
        return rates == 0
    mask = plan.freeze["W"].to(torch.bool).cpu()
    rows = mask.any(dim=-1)
    if not torch.equal(mask, rows[..., None].expand_as(mask)):
        return None
    return rows | (rates == 0)


def _rate_rows(plan: TransferPlan | None, model: TwoLayerReLUCNN) -> torch.Tensor | None:
    """[2, m]: every filter's learning-rate scale (1 without one); None when the plan's
    scales differ within a filter."""
    if plan is None or "W" not in plan.lr_scale:
        return torch.ones(2, model.m)
    scale = plan.lr_scales("W", tuple(model.W.shape)).cpu().to(torch.float64)
    rows = scale[..., 0]
    if not torch.equal(scale, rows[..., None].expand_as(scale)):
        return None
    return rows


def _whole_rows(mask: torch.Tensor, model: TwoLayerReLUCNN) -> torch.Tensor | None:
    """[2, m] bool: the filters a [2, m, d] mask covers; None when it covers part of one."""
    mask = mask.to(torch.bool).cpu()
    if tuple(mask.shape) != tuple(model.W.shape):
        return None
    rows = mask.any(dim=-1)
    return rows if torch.equal(mask, rows[..., None].expand_as(mask)) else None


def _per_entry(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A value rule's number(s) (one, one per filter or one per entry) as a tensor of `shape`."""
    values = values.detach().cpu()
    return values.reshape(tuple(values.shape) + (1,) * (len(shape) - values.dim())).expand(shape)


def _starts_at_donor(plan: TransferPlan, model: TwoLayerReLUCNN, rows: torch.Tensor) -> bool:
    """Whether `plan.apply` sets every entry of these filters ([2, m] bool) to the donor's
    value exactly: copied (`plan.copy`), with no value rule or one that is the plain copy
    there (donor coefficient 1, fresh 0, no offset, no projection)."""
    copied = plan.copy.get("W")
    if copied is None or not bool(copied.to(torch.bool).cpu()[rows].all()):
        return False
    rule = plan.init.get("W")
    if rule is None:
        return True
    if rule.projection() is not None:
        return False
    shape = tuple(model.W.shape)
    if not bool((_per_entry(rule.donor, shape)[rows] == 1).all()) or not bool((_per_entry(rule.fresh, shape)[rows] == 0).all()):
        return False
    return rule.offset is None or bool((_per_entry(rule.offset, shape)[rows] == 0).all())


@dataclass
class _Schedule:
    """How one job trains, per filter ([2, m] tensors): its phases as (steps, rate) segments,
    a rate being the filter's learning-rate scale in that phase (0: frozen in it), and the
    plan's weight penalty. `phased`: the strategy's own phases (False: the plain program's
    single phase under the plan's freeze masks)."""

    segments: list[tuple[int, torch.Tensor]]
    phased: bool
    free: torch.Tensor  # bool: trains in some phase with steps (a row of the program)
    pulled: torch.Tensor  # bool: pulled toward the donor's filter (toward_donor > 0)
    shrunk: torch.Tensor  # bool: pulled toward zero (toward_zero > 0, not inherited)
    toward_donor: float = 0.0
    toward_zero: float = 0.0

    def key(self) -> tuple:
        """What, beyond data, start, freeze masks and scales, makes two jobs end alike."""
        phases = tuple((steps, rate.numpy().tobytes()) for steps, rate in self.segments) if self.phased else None
        penalty = (self.toward_donor, self.toward_zero, self.pulled.numpy().tobytes(), self.shrunk.numpy().tobytes()) if self.pulled.any() or self.shrunk.any() else None
        return phases, penalty


def _schedule(model: TwoLayerReLUCNN, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None) -> _Schedule | str:
    """The job's `_Schedule`, or why the engine cannot train it (phases or a penalty it
    cannot express). Call after the plan's freeze masks and scales passed `supports`."""
    rate = _rate_rows(plan, model).to(torch.float64)
    base = torch.where(_freeze_rows(plan, model), 0.0, rate)  # the plan's own phase
    phased = strategy is not None and type(strategy).phases is not Strategy.phases
    segments = [(budget.steps, base)]
    if phased:
        try:
            phases = strategy.phases(budget.steps, plan or TransferPlan.nothing(), model)
        except Exception as err:  # the per-run loop calls it again and reports the failure
            return f"strategy {strategy.instance_name}'s phases raised {type(err).__name__}"
        segments = []
        for steps, freeze in phases:
            if not isinstance(steps, int) or steps < 0:
                return f"strategy {strategy.instance_name}'s phases give {steps!r} steps, not a number >= 0"
            if set(freeze) - {"W"}:
                return "a phase freezes parameters the model does not have"
            frozen = _whole_rows(freeze["W"], model) if "W" in freeze else torch.zeros(2, model.m, dtype=torch.bool)
            if frozen is None:
                return "a phase freezes part of a filter; the engine freezes whole filters"
            segments.append((steps, torch.where(frozen, 0.0, rate)))  # scale 0 stays frozen in every phase
        if sum(steps for steps, _ in segments) != budget.steps:
            return f"strategy {strategy.instance_name}'s phases train {sum(s for s, _ in segments)} steps, not the budget's {budget.steps}"
    counted = [r for steps, r in segments if steps > 0] or [r for _, r in segments]
    free = torch.stack(counted).gt(0).any(dim=0) if counted else torch.zeros(2, model.m, dtype=torch.bool)
    none = torch.zeros(2, model.m, dtype=torch.bool)
    schedule = _Schedule(segments, phased, free, none, none)
    penalty = plan.penalty if plan is not None else None
    if penalty is None or not penalty.active():
        return schedule
    if set(penalty.inherited) - {"W"}:
        return "the plan's penalty names parameters the model does not have"
    inherited = _whole_rows(penalty.inherited["W"], model) if "W" in penalty.inherited else none
    if inherited is None:
        return "the plan's penalty pulls part of a filter; the engine pulls whole filters"
    schedule.toward_donor, schedule.toward_zero = float(penalty.toward_donor), float(penalty.toward_zero)
    schedule.pulled = inherited if penalty.toward_donor else none
    schedule.shrunk = ~inherited if penalty.toward_zero else none
    if bool((schedule.shrunk & free).any()):
        return "the plan's penalty pulls a training filter toward zero (its start is not in the span of the training patches)"
    if bool((schedule.pulled & free).any()) and not _starts_at_donor(plan, model, schedule.pulled & free):
        return "the plan's penalty pulls a training filter that does not start at the donor's value (a plain copy does)"
    return schedule


def _batch_hook(strategy: Strategy | None) -> bool:
    return strategy is not None and type(strategy).batch_regularizer is not Strategy.batch_regularizer


@dataclass
class _TermGroup:
    """The hooked jobs of one regulariser (strategy class and parameters, plan structure,
    donor features' shapes): `span` of the program's hooked jobs, evaluated on their slices
    of the features and output, with what the `RegularizerBatch` carries besides those,
    stacked (x, y, donor features, plan tensors): by one vmapped call per step, or, for a
    group of fewer than the engine's `vmap_jobs`, one plain call per job (`plans`: each
    job's own plan)."""

    members: list[int]  # the jobs' positions in the program
    span: slice  # their entries along the hooked jobs' axis
    call: Any  # (x, y, output, features, donor features, plan tensors) -> terms [Nj]
    plans: list[TransferPlan]
    x: torch.Tensor
    y: torch.Tensor
    donor: dict[str, torch.Tensor]
    leaves: dict[str, torch.Tensor]
    failed: tuple[int, str] | None = None  # (step, error) once its regulariser raised


class _BatchTerms:
    """The program's batch regularisers: each step, every hooked job's features and output
    rebuilt from Z as the model's own forward computes them from W, its strategy's own
    `batch_regularizer` on them (vmapped over the jobs of a group, as the vmapped engine
    runs it), and d term / d Z by autograd: in weight space the term's gradient on w_r is
    sum_k (d term / d Z_{r,k}) b_k, a step on the coefficients C.

    All hooked jobs (Nh, group by group) share one construction of features per step: a
    step's fixed cost (dispatch, autograd) is paid once, not once per group. `rows`: their
    free filters' rows of Z.view(D R, K), the only rows the terms' gradient reaches, at
    positions `free_at` of the Nh 2 m filters (None: all free, in order), the others'
    starts in `starts` (frozen filters: their A0 rows); `columns` and `coefs` ([Nh, n P,
    1]): every patch's basis column and coefficient."""

    def __init__(self, m: int, K: int, dtype: torch.dtype, device: torch.device, vmap_jobs: int):
        self.vmap_jobs = vmap_jobs
        self.groups: list[_TermGroup] = []
        self.m, self.K = m, K
        self.step = 0
        self.zero = torch.zeros((), device=device, dtype=dtype)
        self.dead = False  # whether some hooked job has diverged (then `alive` masks it)

    @classmethod
    def of(cls, jobs: list[BatchJob], slot_of: list[tuple[int, int]], data: list[PatchSplit], rows: torch.Tensor, free: torch.Tensor,
           A0: torch.Tensor, J: int, m: int, device: torch.device, dtype: torch.dtype, vmap_jobs: int) -> "_BatchTerms | None":
        """None when no job has a batch regulariser. `rows` [D, R]: each row's filter (J M:
        padding); `free` [D, J M + 1]: the filters that are rows; A0: every filter's start."""
        hooked = [i for i, job in enumerate(jobs) if _batch_hook(job.strategy)]
        if not hooked:
            return None
        D, R = rows.shape
        K, M = A0.shape[-1], 2 * m
        row_of = {(ds, f): ds * R + r for ds in range(D) for r, f in enumerate(rows[ds].tolist()) if f < J * M}
        # every patch's column of the basis B (own vectors first, then shared ones) and its
        # coefficient: patch p of example i is coef[i, p] B[column[i, p]]
        columns, coefs = [], []
        for split in data:
            S, nQ = split.shared.shape[0], split.own.shape[0] * split.own.shape[1]
            columns.append(torch.where(split.index >= S, split.index - S, nQ + split.index).reshape(1, -1, 1).to(device))
            coefs.append(split.coef.reshape(1, -1, 1).to(device, dtype))
        found: "OrderedDict[tuple, dict[str, Any]]" = OrderedDict()
        for i in hooked:
            job = jobs[i]
            strategy = job.strategy
            plan = job.plan or TransferPlan.nothing()
            sig, leaves = _plan_leaves(plan)
            wants = bool(type(strategy).needs_donor_features)
            # full-batch GD: the batch is the whole split every step, so the donor's features
            # (its own forward, no gradient, eval mode: the per-run loop's `donor_features`)
            # are computed once
            seen = {k: v.to(device, dtype) for k, v in donor_features(job.donor, job.data.x).items()} if wants else {}
            key = (type(strategy).__module__, type(strategy).__qualname__, strategy.key, sig, wants, tuple((k, tuple(v.shape)) for k, v in seen.items()))
            group = found.setdefault(key, {"plan": plan, "wants": wants, "members": [], "plans": [], "donor": [], "leaves": []})
            group["members"].append(i)
            group["plans"].append(plan)
            group["donor"].append(seen)
            group["leaves"].append({k: t.to(device) for k, t in leaves.items()})
        terms = cls(m, K, dtype, device, vmap_jobs)
        order = [i for group in found.values() for i in group["members"]]  # the hooked jobs' axis
        free_at, free_rows, starts = [], [], []
        for i in order:
            ds, slot = slot_of[i]
            for f in range(slot * M, (slot + 1) * M):  # a free filter reads its row of Z, a frozen one its start
                if bool(free[ds, f]):
                    free_at.append(len(starts))
                    free_rows.append(row_of[(ds, f)])
                starts.append(torch.zeros_like(A0[ds, f]) if bool(free[ds, f]) else A0[ds, f])
        every = len(free_at) == len(starts)
        terms.rows = torch.tensor(free_rows, dtype=torch.long, device=device)
        terms.free_at = None if every else torch.tensor(free_at, dtype=torch.long, device=device)
        terms.starts = None if every else torch.stack(starts)
        terms.columns = torch.cat([columns[slot_of[i][0]] for i in order]).expand(-1, -1, M)
        terms.coefs = torch.cat([coefs[slot_of[i][0]] for i in order])
        terms.patches = data[0].index.shape[1]
        terms.slots = torch.tensor([slot_of[i][0] * J + slot_of[i][1] for i in order], dtype=torch.long, device=device)
        terms.alive = torch.ones(len(order), dtype=torch.bool, device=device)
        start = 0
        for group in found.values():
            members = group["members"]
            first = jobs[members[0]]
            template = structure_only(first.model)  # its structure only (the promise), no run's weights
            ys = [jobs[i].data.y.to(device) for i in members]
            terms.groups.append(_TermGroup(
                members=members,
                span=slice(start, start + len(members)),
                call=terms._terms(first.strategy, template, group["plan"], group["plans"], group["wants"]),
                plans=group["plans"],
                x=torch.stack([jobs[i].data.x.to(device, dtype) for i in members]),
                y=torch.stack([y.to(ys[0].dtype) for y in ys]),
                donor={k: torch.stack([d[k] for d in group["donor"]]) for k in group["donor"][0]},
                leaves={k: torch.stack([lv[k] for lv in group["leaves"]]) for k in group["leaves"][0]},
            ))
            start += len(members)
        return terms

    def _terms(self, strategy: Strategy, template: TwoLayerReLUCNN, plan: TransferPlan, plans: list[TransferPlan], wants_donor: bool):
        """The group's terms [Nj] from its stacked slices: each job's from the per-run loop's
        `RegularizerBatch` (the template model; None, no term, is 0). A group of at least
        `vmap_jobs` jobs is one vmapped call (each job's plan rebuilt from its tensors, as on
        the vmapped engine); a smaller one calls the regulariser once per job, on its own
        plan: vmap's fixed cost per call (flattening and wrapping its inputs, about 0.3 ms on
        the 2-core machine) is more than a few plain calls cost."""

        def one(x, y, output, features, donor, plan_of):
            batch = RegularizerBatch(x, y, self.step, template, output, {"conv": features}, donor if wants_donor else None, plan_of)
            value = _scalar_term(strategy.batch_regularizer(batch), strategy, "batch_regularizer")
            return self.zero if value is None else value

        if len(plans) >= self.vmap_jobs:
            return vmap(lambda x, y, output, features, donor, leaves: one(x, y, output, features, donor, _plan_view(plan, leaves)))

        def each(x, y, output, features, donor, leaves):
            values = [one(x[j], y[j], output[j], features[j], {k: v[j] for k, v in donor.items()}, plans[j]) for j in range(len(plans))]
            return torch.stack(values) if len(values) > 1 else values[0].reshape(1)

        return each

    def evaluate(self, Z: torch.Tensor, step: int, out: torch.Tensor, previous: torch.Tensor | None, previous_terms: torch.Tensor | None) -> torch.Tensor | None:
        """Every hooked job's term at this step into `out` ([Nh]), and d (sum of terms) / d Z
        on `rows` ([len(rows), K]; None when no term depends on Z). `previous`: the last
        step's loss without the terms, [D J], and `previous_terms` its terms (None at step 0)."""
        self.step = step
        m, K = self.m, self.K
        if previous is not None:  # a run whose loss was not finite has ended (diverged) there
            finite = torch.isfinite(previous.index_select(0, self.slots) + previous_terms)
            if self.dead or not bool(finite.all()):
                self.alive.logical_and_(finite)
                self.dead = True
        with torch.enable_grad():
            leaf = Z.view(-1, K).index_select(0, self.rows).requires_grad_()
            start = leaf if self.free_at is None else self.starts.index_copy(0, self.free_at, leaf)
            start = start.view(len(self.slots), 2 * m, K)
            if self.dead:
                # a run that diverged at an earlier step (the per-run loop stopped there; its
                # result is not kept) reads 0: its weights, huge or NaN by now, would make an
                # SVD fail for the whole vmapped batch (LAPACK: non-finite or ill-conditioned)
                start = torch.where(self.alive[:, None, None], start, 0.0)
            # the model's forward_features, from pre-activations: ReLU(<w_{j,r}, x_p>) as
            # [N, 2, m, patches] (the same view of an [N patches, 2 m] product), and f = (1/m)
            # sum over class +1's filters minus class -1's
            pre = torch.gather(start.transpose(1, 2), 1, self.columns) * self.coefs  # [Nh, n P, 2 m]
            features = torch.relu(pre).view(len(self.slots), -1, self.patches, 2, m).permute(0, 1, 3, 4, 2)
            F = features.sum(dim=(3, 4)) / m
            output = F[..., 0] - F[..., 1]
            values = []
            for group in self.groups:
                value = None
                if group.failed is None:
                    try:
                        value = group.call(group.x, group.y, output[group.span], features[group.span], group.donor, group.leaves)
                    except Exception as err:  # noqa: BLE001 - the per-run loop would fail these runs too
                        group.failed = (step, f"batch_regularizer raised at step {step}: {type(err).__name__}: {err}".replace("\n", " "))
                values.append(self.zero.expand(len(group.members)) if value is None else value)
            total = torch.cat(values) if len(values) > 1 else values[0]
            out.copy_(total.detach())
            if not total.requires_grad:
                return None
            return torch.autograd.grad(total.sum(), leaf, allow_unused=True)[0]

    def failures(self) -> dict[int, tuple[int, str]]:
        """Job position -> (step, error), for the groups whose regulariser raised."""
        return {i: group.failed for group in self.groups if group.failed is not None for i in group.members}


class TwoLayerCNNEngine(BatchedEngine):
    """Full-batch GD on the logistic loss for TwoLayerReLUCNN models, all jobs at once,
    phases (LP-FT), weight penalties toward the donor (L2-SP) and batchable batch
    regularisers (DELTA, BSS) included."""

    def __init__(self, dtype: torch.dtype | None = None, threads: int | None = 1, vmap_jobs: int = 4):
        #: Arithmetic precision of the program (None: the data's, float32 for the built-in
        #: tasks).
        self.dtype = dtype
        #: torch CPU threads while a program runs (None: torch's setting). One by default:
        #: a step is a few dozen operations on tensors of about a megabyte, where OpenMP's
        #: barriers cost more than a second core saves, and on a shared machine a busy
        #: neighbour makes them cost twenty times more (measured: benchmarks/RESULTS.md).
        #: Use processes for parallelism instead (`--jobs`).
        self.threads = threads
        #: A batch regulariser's group of at least this many jobs is evaluated by one vmapped
        #: call per step, a smaller one by a plain call per job (measured on the quick suite's
        #: variants, DELTA and BSS: a plain call is the cheaper below 3-4 jobs). Either way
        #: the same terms, to rounding.
        self.vmap_jobs = vmap_jobs
        self.flops = 0.0

    # -- what it can do ---------------------------------------------------------------------
    def supports(self, model: TransferModel, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None = None) -> str | None:
        if strategy is not None and strategy.has_weight_hook():
            return f"strategy {strategy.instance_name} has a regularizer hook (arbitrary code on the model: per run only)"
        if _batch_hook(strategy) and not type(strategy).batchable_regularizer:
            return (f"strategy {strategy.instance_name}'s batch_regularizer does not declare batchable_regularizer = True "
                    "(the engine runs it under torch.func.vmap, on features it builds from its pre-activations)")
        if type(model) is not TwoLayerReLUCNN:
            return f"the engine trains TwoLayerReLUCNN only, not {type(model).__name__}"
        if budget.optimizer != "gd" or budget.momentum or budget.weight_decay:
            return "the engine runs plain full-batch gradient descent (optimizer gd, no momentum or weight decay)"
        if budget.loss != "logistic":
            return "the engine trains the logistic loss only"
        if plan is not None and set(plan.freeze) - {"W"}:
            return "plan freezes parameters the model does not have"
        if plan is not None and set(plan.lr_scale) - {"W"}:
            return "plan scales the learning rate of parameters the model does not have"
        if _rate_rows(plan, model) is None:
            return "plan scales the learning rate of part of a filter; the engine scales whole filters"
        if _freeze_rows(plan, model) is None:
            return "plan freezes part of a filter; the engine freezes whole filters"
        schedule = _schedule(model, budget, plan, strategy)
        return schedule if isinstance(schedule, str) else None

    # -- training ------------------------------------------------------------------------------
    def train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None = None) -> list[JobOutcome]:
        with torch_threads(self.threads):
            return self._train(jobs, budget, deadline)

    def _train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None) -> list[JobOutcome]:
        schedules: list[_Schedule] = []
        for job in jobs:
            reason = self.supports(job.model, budget, job.plan, job.strategy)
            if reason:
                raise ValueError(f"TwoLayerCNNEngine cannot train this job: {reason}")
            schedule = _schedule(job.model, budget, job.plan, job.strategy)
            self._check_donor(job, schedule)
            if _batch_hook(job.strategy) and type(job.strategy).needs_donor_features and job.donor is None:
                raise ValueError(f"TwoLayerCNNEngine cannot train this job: strategy {job.strategy.instance_name} needs the donor's features, and the job has no donor")
            schedules.append(schedule)
        outcomes = [JobOutcome() for _ in jobs]
        # Jobs with the same data, start and frozen filters end the same: train one of them
        # (on the two-layer CNN, partial-layers[layers=1] and reinit-head are `full`); phases
        # and penalties are part of what must match (l2-sp starts where full does). A batch
        # regulariser reads the plan, the donor and whatever else its strategy holds: such a
        # job is nobody's twin (delta[alpha=0] trains like full, and is trained for itself).
        twins: dict[tuple, list[int]] = {}
        same_as: dict[int, int] = {}
        for i, job in enumerate(jobs):
            key = (id(job.data), _freeze_rows(job.plan, job.model).numpy().tobytes(), _rate_rows(job.plan, job.model).numpy().tobytes(), *schedules[i].key(),
                   i if _batch_hook(job.strategy) else None)
            twin = next((u for u in twins.get(key, []) if torch.equal(jobs[u].model.W, job.model.W)), None)
            if twin is None:
                twins.setdefault(key, []).append(i)
            else:
                same_as[i] = twin
        # One program per data shape (all jobs of one task variant and role share it).
        programs: "OrderedDict[tuple, list[int]]" = OrderedDict()
        for i, job in enumerate(jobs):
            if i in same_as:
                continue
            split = PatchSplit.from_dense(job.data)
            shape = (split.shared.shape[0], tuple(split.own.shape), tuple(split.index.shape), job.model.m, job.model.d)
            programs.setdefault(shape, []).append(i)
        for members in programs.values():
            self._program([jobs[i] for i in members], [outcomes[i] for i in members], budget, deadline, [schedules[i] for i in members])
        with torch.no_grad():
            for i, twin in same_as.items():
                jobs[i].model.W.copy_(jobs[twin].model.W)
                outcomes[i] = JobOutcome(outcomes[twin].status, outcomes[twin].error)
        return outcomes

    @staticmethod
    def _check_donor(job: BatchJob, schedule: _Schedule) -> None:
        """A penalty toward the donor needs the donor; a filter that trains under the pull must
        start at the donor's value exactly (then w - w_donor stays in the training span).
        `supports` checked the plan says so (a plain copy); this checks the weights."""
        if not bool(schedule.pulled.any()):
            return
        if job.donor is None:
            raise ValueError("TwoLayerCNNEngine cannot train this job: its plan's penalty pulls toward the donor, and the job has no donor")
        rows = schedule.pulled & schedule.free
        if bool(rows.any()) and not torch.equal(job.model.W.detach()[rows], job.donor.W.detach().to(job.model.W)[rows]):
            raise ValueError("TwoLayerCNNEngine cannot train this job: a filter its penalty pulls toward the donor does not start at the donor's value")

    def _program(self, jobs: list[BatchJob], outcomes: list[JobOutcome], budget: TrainBudget, deadline: float | None, schedules: list[_Schedule]) -> None:
        """One tensor program for jobs whose data have one shape.

        Layout: D datasets (jobs sharing a split share its Gram matrix), J job slots per
        dataset, and "rows": the filters that train (in some phase), gathered per dataset and
        padded to R. Frozen filters never change, so their share of every output is computed
        once. Phases switch the per-row rate at their boundaries (each job's own); a penalty
        toward the donor shrinks the pulled rows' coefficients."""
        splits: "OrderedDict[int, PatchSplit]" = OrderedDict()
        slot_of: list[tuple[int, int]] = []  # (dataset, slot) per job
        counts: dict[int, int] = {}
        for job in jobs:
            key = id(job.data)
            if key not in splits:
                splits[key] = PatchSplit.from_dense(job.data)
                counts[key] = 0
            slot_of.append((list(splits).index(key), counts[key]))
            counts[key] += 1
        data = list(splits.values())
        D, J = len(data), max(counts.values())
        first = jobs[0].model
        m, d = first.m, first.d
        M, groups = 2 * m, 2 * J + 1  # filters per job; (slot, class) groups and a dummy one
        device = first.W.device
        dtype = self.dtype or first.W.dtype
        S, (n, Q) = data[0].shared.shape[0], data[0].own.shape[:2]
        nQ = n * Q
        # Basis columns: own vectors, then shared ones, then zeros up to a multiple of 16
        # (MKL's batched products run about half again as fast on such widths; the zero
        # columns have zero Gram entries and are never read).
        K = -(-(nQ + S) // 16) * 16
        B = torch.zeros(D, K, d, device=device, dtype=dtype)
        for i, split in enumerate(data):
            B[i, :nQ] = split.own.reshape(nQ, d)
            B[i, nQ : nQ + S] = split.shared
        G = torch.bmm(B, B.transpose(1, 2))  # [D, K, K]
        # [D, n, 2S]: per example, its summed positive and negative shared coefficients
        PN = torch.stack([torch.cat(s.shared_weights(), dim=1) for s in data]).to(device, dtype)
        y = torch.stack([s.y for s in data]).to(device, dtype)[:, None, :]  # [D, 1, n]

        W0 = torch.zeros(D, J * M + 1, d, device=device, dtype=dtype)  # + a zero row for padding
        free = torch.zeros(D, J * M + 1, dtype=torch.bool)
        for job, (ds, slot), schedule in zip(jobs, slot_of, schedules):
            W0[ds, slot * M : (slot + 1) * M] = job.model.W.detach().reshape(M, d).to(dtype)
            free[ds, slot * M : (slot + 1) * M] = schedule.free.reshape(M)
        A0 = torch.bmm(W0, B.transpose(1, 2))  # [D, J M + 1, K]: every filter's start
        self.flops += 2.0 * D * K * K * d + 2.0 * D * (J * M + 1) * d * K

        # rows: the free filters of each dataset, padded with the zero row; group of a row:
        # its (slot, class), the dummy group for padding, offset per dataset (flat indexing)
        row_lists = [torch.nonzero(free[ds]).flatten() for ds in range(D)]
        R = max(1, max(len(r) for r in row_lists))
        rows = torch.full((D, R), J * M, dtype=torch.long)
        for ds, r in enumerate(row_lists):
            rows[ds, : len(r)] = r
        group = torch.where(rows < J * M, rows // m, 2 * J) + torch.arange(D)[:, None] * groups
        rows, gidx = rows.to(device), group.reshape(-1).to(device)
        take = torch.arange(D, device=device)[:, None]
        A0r = A0[take, rows]  # [D, R, K]
        # per segment of steps (one without phases; phase boundaries of every job otherwise):
        # the rows' rates (learning-rate scale, 0 where frozen in that phase), [D, R, 1] or
        # None when every one is 1 (the plain program, unchanged), and the pulled rows'
        # shrink factor 1 - lr rate toward_donor ([D, R, 1], None: no pull)
        timeline = self._timeline(schedules, slot_of, rows.cpu(), D, J, M, budget, device, dtype)
        _, row_rate, keep = timeline[0]
        switches = {start: (rate, shrink) for start, rate, shrink in timeline[1:]}
        # the penalty in the loss history: toward_donor/2 |C_r B|^2 = toward_donor/2 <C_r, (C G)_r>
        # per pulled training row, per job; and the frozen filters' constant share
        pull_half, slot_index, penalty_fixed = self._penalty_terms(jobs, schedules, slot_of, rows.cpu(), W0, D, J, M, device, dtype)
        # the batch regularisers (None: no job has one, the program is the plain one)
        terms = _BatchTerms.of(jobs, slot_of, data, rows.cpu(), free, A0, J, m, device, dtype, self.vmap_jobs)

        # the frozen filters' fixed share of F: the same formulas, once, on their A0 rows
        frozen = (~free).to(device)
        frozen[:, J * M] = False
        F_fixed = self._group_sums(torch.where(frozen[..., None], A0, 0.0), torch.div(torch.arange(J * M + 1, device=device), m, rounding_mode="floor").clamp(max=2 * J), D, groups, n, Q, nQ, S)

        sign = torch.tensor([1.0, -1.0], device=device, dtype=dtype).reshape(1, 1, 2, 1)
        scale = -y / (n * m)  # d loss / d f_i = -y_i sigmoid(-y_i f_i) / n, and F's 1/m
        lr, steps = budget.lr, budget.steps
        C = torch.zeros(D, R, K, device=device, dtype=dtype)
        Z = torch.empty_like(C)
        # per row, what it passes on: to each example through its own patches, then its
        # relu(z) and relu(-z) along each shared vector (one buffer: one scatter per step)
        rowbuf = torch.empty(D, R, n + 2 * S, device=device, dtype=dtype)
        # per (slot, class) group: the gradient's weight per example, then per shared vector
        hbuf = torch.zeros(D, groups, n + 2 * S, device=device, dtype=dtype)  # dummy group stays 0
        h_classes = hbuf[:, : 2 * J, :n].view(D, J, 2, n)
        history = torch.empty(steps, D, J, device=device, dtype=dtype)  # the loss, every step
        margin_flat = torch.zeros(-(-(D * J * n) // VECTOR_PAD) * VECTOR_PAD, device=device, dtype=dtype)
        margin = margin_flat[: D * J * n].view(D, J, n)
        if terms is not None:  # the hooked jobs' terms, every step (added to the history at the end)
            term_history = torch.zeros(steps, len(terms.slots), device=device, dtype=dtype)
        if pull_half is not None:
            penalty_history = torch.zeros(steps, D * (J + 1), device=device, dtype=dtype)
            CG = torch.empty_like(C)
        C_own = C[..., :nQ].view(D, R, n, Q)
        fixed = F_fixed.reshape(D * groups, n + 2 * S)
        PNt = PN.transpose(1, 2)
        for step in range(steps):
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(f"batched program exceeded its time limit at step {step} of {steps}")
            if switches and step in switches:  # a phase boundary: the rows' rates change
                row_rate, keep = switches[step]
            torch.baddbmm(A0r, C, G, out=Z)  # every pre-activation <w, b_k> of the free filters
            if terms is not None:  # the regularisers' values and d term / d Z, from this Z
                previous = None
                if step:  # the loss of the step before, as far as it is known here (the pull's share included)
                    previous = history[step - 1] if pull_half is None else history[step - 1] + penalty_history[step - 1].view(D, J + 1)[:, :J]
                    previous = previous.reshape(-1)
                term_grad = terms.evaluate(Z, step, term_history[step], previous, term_history[step - 1] if step else None)
            if pull_half is not None:
                torch.sub(Z, A0r, out=CG)
                penalty_history[step].index_add_(0, slot_index, CG.mul_(C).sum(dim=-1).mul_(pull_half).view(-1))
            if Q == 1:
                act = torch.clamp(Z[..., :nQ], min=0, out=rowbuf[..., :n])  # relu, [D, R, n]
            else:
                act = torch.relu(Z[..., :nQ])  # [D, R, n Q]
                torch.sum(act.view(D, R, n, Q), dim=-1, out=rowbuf[..., :n])
            if S:  # relu(c z) = c+ relu(z) + c- relu(-z): two numbers per filter and shared vector
                Zs = Z[..., nQ : nQ + S]
                torch.clamp(Zs, min=0, out=rowbuf[..., n : n + S])
                torch.clamp(-Zs, min=0, out=rowbuf[..., n + S :])
            sums = torch.index_add(fixed, 0, gidx, rowbuf.view(D * R, n + 2 * S)).view(D, groups, n + 2 * S)
            F = sums[..., :n] if not S else sums[..., :n] + torch.bmm(sums[..., n:], PNt)  # [D, groups, n]
            F2 = F[:, : 2 * J].view(D, J, 2, n)
            torch.sub(F2[:, :, 1], F2[:, :, 0], out=margin).mul_(y / m)  # -y f, [D, J, n]
            torch.mean(torch.nn.functional.softplus(margin_flat)[: margin.numel()].view(D, J, n), dim=-1, out=history[step])
            # the gradient's weight per example, with the class sign, for every (slot, class)
            margin_flat.sigmoid_()
            torch.mul(margin.mul_(scale)[:, :, None, :], sign, out=h_classes)
            if S:
                hbuf[..., n:] = torch.bmm(hbuf[..., :n], PN)
            h_rows = hbuf.view(D * groups, n + 2 * S).index_select(0, gidx).view(D, R, n + 2 * S)
            if row_rate is not None:  # a filter's step on its coefficients times its scale
                h_rows.mul_(row_rate)
            if keep is not None:  # the pull toward the donor: C -= lr rate toward_donor C, same step
                C.mul_(keep)
            C_own.addcmul_(act.sign_().view(D, R, n, Q), h_rows[..., :n, None], value=-lr)  # sign of relu: its derivative
            if S:
                gs = (Zs > 0).to(dtype) * h_rows[..., n : n + S] - (Zs < 0).to(dtype) * h_rows[..., n + S :]
                C[..., nQ : nQ + S].sub_(gs, alpha=lr)
            if terms is not None and term_grad is not None:  # w -= lr rate sum_k (d term / d Z_k) b_k, on the rows the terms reach
                if row_rate is not None:
                    term_grad = term_grad * row_rate.view(-1, 1).index_select(0, terms.rows)
                C.view(-1, K).index_add_(0, terms.rows, term_grad, alpha=-lr)
        if terms is not None:  # the loss the per-run loop sees includes the term
            history.view(steps, D * J).index_add_(1, terms.slots, term_history)
        if pull_half is not None or penalty_fixed is not None:  # the loss the per-run loop sees
            if pull_half is not None:
                history += penalty_history.view(steps, D, J + 1)[:, :, :J]
            if penalty_fixed is not None:
                history += penalty_fixed
        # the first step whose loss was not finite, per run (-1: none), and that loss
        bad = ~torch.isfinite(history)
        first_bad = torch.where(bad.any(dim=0), bad.to(torch.float32).argmax(dim=0), -1)
        bad_loss = history.gather(0, first_bad.clamp(min=0)[None]).squeeze(0) if steps else torch.zeros(D, J)
        self.flops += 2.0 * steps * D * R * K * K

        W = W0.clone()  # frozen filters: exactly their initial values
        W[take, rows] = W0[take, rows] + torch.bmm(C, B)  # trained ones: back to d dimensions, once
        self.flops += 2.0 * D * R * K * d
        first_bad, bad_loss = first_bad.cpu(), bad_loss.cpu()
        with torch.no_grad():
            for job, outcome, (ds, slot) in zip(jobs, outcomes, slot_of):
                job.model.W.copy_(W[ds, slot * M : (slot + 1) * M].reshape(2, m, d).to(job.model.W.dtype))
                bad_step = int(first_bad[ds, slot])
                if bad_step >= 0:
                    outcome.status, outcome.error = "diverged", f"loss became {float(bad_loss[ds, slot])} at step {bad_step}"
                elif not bool(torch.isfinite(job.model.W).all()):
                    outcome.status, outcome.error = "diverged", "parameter W is not finite after training"
        if terms is not None:  # a regulariser that raised: its jobs failed there (unless they diverged before)
            for i, (step, error) in terms.failures().items():
                ds, slot = slot_of[i]
                bad_step = int(first_bad[ds, slot])
                if bad_step < 0 or bad_step >= step:
                    outcomes[i].status, outcomes[i].error = "failed", error

    @staticmethod
    def _timeline(schedules: list[_Schedule], slot_of: list[tuple[int, int]], rows: torch.Tensor, D: int, J: int, M: int,
                  budget: TrainBudget, device: torch.device, dtype: torch.dtype) -> list[tuple[int, torch.Tensor | None, torch.Tensor | None]]:
        """[(first step, row rates [D, R, 1] or None, pulled rows' shrink [D, R, 1] or None)]:
        one entry per stretch of steps in which no job changes phase."""
        bounds: set[int] = {0}
        for schedule in schedules:
            if schedule.phased:
                end = 0
                for steps, _ in schedule.segments:
                    end += steps
                    bounds.add(end)
        starts = sorted(b for b in bounds if b == 0 or b < budget.steps)
        take = torch.arange(D)[:, None]
        out = []
        for start in starts:
            rate = torch.ones(D, J * M + 1, dtype=torch.float64)
            shrink = torch.ones(D, J * M + 1, dtype=torch.float64)
            for schedule, (ds, slot) in zip(schedules, slot_of):
                end, active = 0, schedule.segments[0][1]
                for steps, phase_rate in schedule.segments:  # the phase that trains step `start`
                    end += steps
                    if steps and end > start:
                        active = phase_rate
                        break
                rate[ds, slot * M : (slot + 1) * M] = active.reshape(M)
                if schedule.toward_donor and bool(schedule.pulled.any()):
                    factor = 1.0 - budget.lr * schedule.toward_donor * active
                    shrink[ds, slot * M : (slot + 1) * M] = torch.where(schedule.pulled, factor, 1.0).reshape(M)
            row_rate, row_shrink = rate[take, rows], shrink[take, rows]
            row_rate = None if bool((row_rate == 1).all()) else row_rate.to(device, dtype)[..., None]
            row_shrink = None if bool((row_shrink == 1).all()) else row_shrink.to(device, dtype)[..., None]
            out.append((start, row_rate, row_shrink))
        return out

    @staticmethod
    def _penalty_terms(jobs: list[BatchJob], schedules: list[_Schedule], slot_of: list[tuple[int, int]], rows: torch.Tensor, W0: torch.Tensor,
                       D: int, J: int, M: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What the loss history adds for the plans' penalties: (toward_donor / 2 per pulled
        training row [D, R] or None, every row's job slot [D R] for summing, the frozen
        filters' constant penalty per job [D, J] or None)."""
        if not any(bool(s.pulled.any() or s.shrunk.any()) for s in schedules):
            return None, None, None
        half = torch.zeros(D, J * M + 1, dtype=torch.float64)
        fixed = torch.zeros(D, J, dtype=torch.float64)
        for job, schedule, (ds, slot) in zip(jobs, schedules, slot_of):
            pulled, shrunk = schedule.pulled.reshape(M), schedule.shrunk.reshape(M)
            free = schedule.free.reshape(M)
            half[ds, slot * M : (slot + 1) * M] = torch.where(pulled & free, schedule.toward_donor / 2, 0.0)
            start = W0[ds, slot * M : (slot + 1) * M].cpu().to(torch.float64)
            if bool((pulled & ~free).any()):
                donor = job.donor.W.detach().reshape(M, -1).cpu().to(W0.dtype).to(torch.float64)
                fixed[ds, slot] += schedule.toward_donor / 2 * float(((start - donor)[pulled & ~free] ** 2).sum())
            if bool((shrunk & ~free).any()):
                fixed[ds, slot] += schedule.toward_zero / 2 * float((start[shrunk & ~free] ** 2).sum())
        row_half = half[torch.arange(D)[:, None], rows]
        row_half = None if not bool(row_half.any()) else row_half.to(device, dtype)
        slot_index = (torch.where(rows < J * M, rows // M, J) + torch.arange(D)[:, None] * (J + 1)).reshape(-1).to(device)
        fixed_out = None if not bool(fixed.any()) else fixed.to(device, dtype)
        return row_half, slot_index, fixed_out

    @staticmethod
    def _group_sums(Zall: torch.Tensor, row_group: torch.Tensor, D: int, groups: int, n: int, Q: int, nQ: int, S: int) -> torch.Tensor:
        """Per (slot, class) group, summed over its rows of Zall [D, rows, K]: what they pass
        on to each example through own patches, then relu(z) and relu(-z) per shared vector:
        [D, groups, n + 2 S], the layout of the program's per-step sums."""
        rows = Zall.shape[1]
        act = torch.relu(Zall[..., :nQ])
        per_row = act if Q == 1 else act.reshape(D, rows, n, Q).sum(dim=-1)
        Zs = Zall[..., nQ : nQ + S]
        both = torch.cat([per_row, torch.relu(Zs), torch.relu(-Zs)], dim=-1)
        out = torch.zeros(D, groups, n + 2 * S, device=Zall.device, dtype=Zall.dtype)
        out.index_add_(1, row_group, both)
        return out

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, models: Sequence[TransferModel], splits: Sequence[Split], loss: str) -> list[float]:
        if loss != "logistic":
            raise ValueError("TwoLayerCNNEngine evaluates the logistic loss's +1/-1 predictions only")
        groups: "OrderedDict[int, list[int]]" = OrderedDict()
        for i, split in enumerate(splits):
            groups.setdefault(id(split), []).append(i)
        out = [0.0] * len(models)
        with torch_threads(self.threads):
            for members in groups.values():
                split = PatchSplit.from_dense(splits[members[0]]).transient()  # a deferred test split: drawn, used, freed
                for i, acc in zip(members, self._accuracy([models[i] for i in members], split)):
                    out[i] = acc
                del split  # before the next draw: one seed's test noise in memory at a time
        return out

    def _accuracy(self, models: list[TransferModel], split: PatchSplit) -> list[float]:
        m = models[0].m
        W = torch.stack([model.W.detach() for model in models])  # [J, 2, m, d]
        J, d = W.shape[0], W.shape[-1]
        flat = W.reshape(J * 2 * m, d)
        n, Q = split.own.shape[:2]
        own = torch.relu(split.own.reshape(n * Q, d) @ flat.T)  # [n Q, J 2 m]
        F = own.view(n, Q, J, 2, m).sum(dim=(1, 4))  # [n, J, 2]
        self.flops += 2.0 * n * Q * d * J * 2 * m
        if split.shared.shape[0]:
            pos, neg = split.shared_weights()
            zs = split.shared @ flat.T  # [S, J 2 m]
            up = torch.relu(zs).view(-1, J, 2, m).sum(dim=-1)  # [S, J, 2]
            down = torch.relu(-zs).view(-1, J, 2, m).sum(dim=-1)
            F = F + torch.einsum("ns,sjc->njc", pos, up) + torch.einsum("ns,sjc->njc", neg, down)
        f = (F[:, :, 0] - F[:, :, 1]) / m  # [n, J]
        pred = torch.where(f >= 0, 1.0, -1.0).to(split.y.dtype)
        return [float(a) for a in (pred == split.y[:, None]).to(torch.float64).mean(dim=0).cpu()]
