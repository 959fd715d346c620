"""A batched engine for any `TransferModel`: many runs of one architecture as one program.

The runs of a task variant (seeds x strategies x inits) that share an architecture are
trained together with `torch.func`: their parameters are stacked along a leading run axis,
one step is the vmapped loss over the stack (`functional_call` runs the model's own
forward on each run's slice: PyTorch's model-ensembling recipe) and one backward pass
through the sum of the runs' losses (each run's gradient exactly), and the
optimiser update is a handful of tensor operations on the stacks. No Python loop runs over
runs, so the per-step overhead of the per-run loop (dispatch, autograd bookkeeping, the
optimiser's per-parameter loop) is paid once per program instead of once per run.

Exactness. Every run follows `ptbench.run.training.train` step for step:

* minibatches: each job's `batches` generator is drawn exactly as the per-run loop draws
  it (one `torch.randperm` at the start, a fresh one whenever the cursor runs out; full
  batch for gd or when the batch is not smaller than the split);
* the loss: the budget's loss on the model's output, plus the plan's `WeightPenalty`
  (its own `value`, on the run's parameters, the donor's as reference), plus the strategy's
  `batch_regularizer` (a `RegularizerBatch` built inside the vmapped function: the run's
  output and features from one `forward_features` pass, the donor's features under no
  gradient with the donor in eval mode, the template model as `model`, the run's plan);
* the update: torch.optim.SGD (momentum, weight decay, no dampening) and torch.optim.AdamW
  (betas 0.9/0.999, eps 1e-8, decoupled weight decay) written out with the same operations
  in the same order as their single-tensor implementations; frozen entries (plan and phase
  masks, learning-rate scale 0) have their gradient zeroed and their value restored after
  each step; other scales multiply each step's change (`before + s * (after - before)`);
* phases: `strategy.phases(steps, plan, model)`, each phase its own freeze masks;
* divergence: the first step whose loss is not finite, else the first parameter that is
  not finite after training, with the per-run loop's messages; other runs are unaffected.

In float64 the weights equal the per-run loop's to rounding (tests hold them within 1e-5,
and accuracies equal; the digits CNN's differ by at most 2e-14); in float32 the vmapped
convolutions sum in another order, so weights agree to float rounding, as on any batched
engine.

Fast paths (each the same arithmetic per run as the general program, up to float rounding
where a kernel sums in another order):

* a model with `stacked_forward_features(params, x)` (the image CNN's: J copies of its
  `forward_features` as grouped convolutions, channels-last on a CPU) runs its own stacked
  forward, outside vmap; vmap then takes only the per-run terms (loss, penalty, batch
  regulariser), and the plain loss (no penalty, no regulariser) needs no vmap at all;
* the trained parameters are views of one flat tensor, so a step's optimiser update, its
  masks and restores are a dozen operations, not a dozen per parameter (elementwise: bit for
  bit the per-parameter loop's result, tested), and a frozen entry is restored to its value
  at the phase's start (kept once per phase, not cloned every step);
* a parameter frozen at every step of a job (every phase, or learning-rate scale 0) is a
  constant: jobs that hold the same parameters constant, at least `min_split` of them, form
  a program of their own that computes no gradient for them, and none below the lowest layer
  they train (`partial-layers[freeze=true]`: the frozen layers' backward is skipped).

What it refuses (`supports`): models with buffers (BatchNorm: running statistics cannot
update under vmap), modules that draw random numbers (dropout), parameters that do not
train or are not real floating point, optimisers other than gd/sgd/adam, strategies with a
weight hook (`regularizer`), and batch regularisers whose class does not promise
`batchable_regularizer = True` (or on models without the feature hook). Anything else vmap
cannot run shows itself on a program's first step: then that program's jobs are trained on
the per-run loop instead (same generators, same results; `fallbacks` records why).

Threads. One by default, measured on the 2-core development machine with the digits CNN
program (125 runs, width 8 and 16, side by side, best of 3): in a quiet moment two threads
ran it 1.5x faster than one, but with other processes on the cores (load 1.6-3.8, the
usual state of a shared machine, and of a sweep with `--jobs` workers on every core) two
threads took 2-3.5x longer than one (OpenMP barriers wait on descheduled threads), the
signal-noise engine's finding too. One thread also keeps float reductions, and so stored
numbers, independent of the machine (`ptbench.sweep.units.UNIT_THREADS`); parallelism comes
from processes (`--jobs`).

Speed (the 2-core machine, load about 1, side by side with the code before this engine,
whose image runs took the per-run loop, all on one thread): the quick suite's 125 digits
target runs (width 8) 38 s -> 14 s (2.7x), the images suite's 305 target runs (width 16)
249 s -> 136 s (1.8x), whole sweeps 81 s -> 53 s and 295 s -> 186 s. Under vmap a step cost
about what the per-run loop's convolutions cost for all its runs (grouped NCHW convolutions,
no faster per run, and NCHW max-pooling, slow on small maps); the saving was the per-run
loop's per-step overhead, once per run. The fast paths above then cut the images suite's
target programs by a third (121 s -> 82 s CPU, `--jobs 1`, load 0.7-1; the suite's training
152 s -> 113 s, its per-run source models unchanged) and the quick suite's digits training
by a quarter, with the stored accuracies unchanged or a few moved by one test image (float
rounding). A program of one job is still about the per-run loop's cost (0.8-1x): it trains
on the per-run loop (`min_jobs`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..api import RegularizerBatch, RunTimeout, Split, Strategy, TrainBudget, TransferModel, TransferPlan, ValueRule, WeightPenalty
from .engines import BatchedEngine, BatchJob, JobOutcome, torch_threads
from .training import Diverged, _scalar_term, loss_fn, predictions, structure_only, train as train_per_run

__all__ = ["VmapEngine"]

log = logging.getLogger(__name__)

#: AdamW's constants (torch.optim.AdamW's defaults; `training._optimizer` sets only lr and
#: weight decay).
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

#: Modules whose forward draws random numbers (per run, which vmap refuses by default).
_RANDOM_MODULES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


class _Method(nn.Module):
    """`model.<method>(*args)` as a module's forward, so that `functional_call` can run a
    model's `forward_features` with swapped-in parameters."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.method)(*args)


def _structure(model: nn.Module) -> tuple:
    """What must be equal for two models to run as one program: class, parameter names,
    shapes, dtypes and device, and every module's plain configuration (kernel sizes,
    strides, a CNN's pooling pattern)."""
    params = tuple((name, tuple(p.shape), p.dtype, str(p.device)) for name, p in model.named_parameters())
    config = []
    for name, module in model.named_modules():
        plain = {
            k: v
            for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple, list, type(None)))
        }
        config.append((name, type(module).__qualname__, repr(sorted(plain.items()))))
    return (type(model).__module__, type(model).__qualname__, params, tuple(config))


def _stacked(model: nn.Module) -> Any:
    """The model's `stacked_forward_features(params, x)` (stacked parameters, x [J, N, ...]:
    J copies of its `forward_features` at once, in a layout of its choosing), or None."""
    method = getattr(model, "stacked_forward_features", None)
    return method if callable(method) else None


def _adam_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int, lr: float, wd: float) -> None:
    """One torch.optim.AdamW step (single-tensor implementation), in place; `step` counts
    this one."""
    t = float(step)
    bias1, bias2 = 1 - BETA1**t, 1 - BETA2**t
    step_size = lr / bias1
    bias2_sqrt = bias2**0.5
    if wd != 0:
        param.mul_(1 - lr * wd)
    exp_avg.lerp_(grad, 1 - BETA1)
    exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
    denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(EPS)
    param.addcdiv_(exp_avg, denom, value=-step_size)


def _sgd_update(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor | None, lr: float, momentum: float, wd: float) -> torch.Tensor | None:
    """One torch.optim.SGD step (no dampening, no Nesterov), in place: weight decay, then the
    momentum buffer (made from the first step's gradient), then the step. Returns the buffer
    (None without momentum). The flat and the per-parameter update both call this."""
    if wd != 0:
        grad = grad.add(param, alpha=wd)
    if momentum != 0:
        if buf is None:
            buf = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1)
        grad = buf
    param.add_(grad, alpha=-lr)
    return buf


def _stacked_loss(kind: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`training.loss_fn` of each run: output [J, N, ...], y [J, N, ...] -> [J]."""
    if kind == "cross_entropy":
        return F.cross_entropy(output.flatten(0, 1), y.flatten(0, 1), reduction="none").view(output.shape[0], -1).mean(dim=1)
    return vmap(lambda out, target: loss_fn(kind, out, target))(output, y)


def balanced_chunks(members: list, size: int) -> list[list]:
    """`members` in order, as the fewest chunks of at most `size`, of sizes that differ by at
    most one. A fixed-size cut would leave a remainder, as small as one job, that depends on
    how many jobs came along: a lone job trains on the per-run loop (other floats than in a
    program), so whether a job stood alone would follow the unit it came in (found by a
    review: 127 seeds cut 126 + 1 under --jobs 1, 64 + 63 under --jobs 2, and the last seed's
    donor differed). Balanced, a chunk holds two or more jobs whenever `size` is 3 or more."""
    count = max(1, -(-len(members) // max(size, 1)))
    base, extra = divmod(len(members), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        chunks.append(members[start:end])
        start = end
    return [c for c in chunks if c]


def _batch_hook(strategy: Strategy | None) -> bool:
    return strategy is not None and type(strategy).batch_regularizer is not Strategy.batch_regularizer


# --------------------------------------------------------------------------- plans under vmap


def _plan_leaves(plan: TransferPlan) -> tuple[tuple, dict[str, torch.Tensor]]:
    """(signature, tensors) of a plan: the tensors by path, and everything else (keys,
    shapes, numbers, notes) as a hashable signature; plans with equal signatures stack."""
    leaves: dict[str, torch.Tensor] = {}
    sig: list = []
    for kind in ("copy", "freeze", "lr_scale"):
        for name, t in getattr(plan, kind).items():
            leaves[f"{kind}/{name}"] = t
            sig.append((kind, name, tuple(t.shape), t.dtype))
    for name, rule in plan.init.items():
        for key, t in rule.tensors().items():
            leaves[f"init/{name}/{key}"] = t
            sig.append(("init", name, key, tuple(t.shape), t.dtype))
    if plan.penalty is not None:
        p = plan.penalty
        sig.append(("penalty", type(p).__qualname__, p.toward_donor, p.toward_zero))
        for name, t in p.inherited.items():
            leaves[f"penalty/{name}"] = t
            sig.append(("penalty", name, tuple(t.shape), t.dtype))
    sig.append(("notes", repr(sorted(plan.notes.items()))))
    return tuple(sig), leaves


def _plan_view(plan: TransferPlan, leaves: dict[str, torch.Tensor]) -> TransferPlan:
    """`plan` (a template of the signature) rebuilt from one run's `leaves` (inside vmap:
    that run's slices of the stacked tensors)."""
    out = TransferPlan(notes=dict(plan.notes))
    for kind in ("copy", "freeze", "lr_scale"):
        getattr(out, kind).update({name: leaves[f"{kind}/{name}"] for name in getattr(plan, kind)})
    for name, rule in plan.init.items():
        out.init[name] = ValueRule(**{key: leaves[f"init/{name}/{key}"] for key in rule.tensors()})
    if plan.penalty is not None:
        p = plan.penalty
        out.penalty = WeightPenalty(p.toward_donor, p.toward_zero, {name: leaves[f"penalty/{name}"] for name in p.inherited})
    return out


# --------------------------------------------------------------------------- one job, prepared


@dataclass
class _Job:
    """One job as the program needs it: its schedule, minibatches and per-step masks."""

    index: int
    job: BatchJob
    plan: TransferPlan
    phases: list[tuple[int, dict[str, torch.Tensor]]]
    steps: int
    batch: int
    order: torch.Tensor | None  # [steps, batch] example indices, None: the full batch
    held: dict[str, torch.Tensor]  # learning-rate scale 0: held like frozen entries
    scaled: dict[str, tuple[torch.Tensor, torch.Tensor]]  # (scale, where 0 < scale != 1)
    penalty: WeightPenalty | None
    hook: bool
    wants_donor: bool
    generator_state: torch.Tensor | None = None
    plan_sig: tuple = ()
    plan_leaves: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Parameters wholly frozen at every step (every phase, or a learning-rate scale of 0
    #: throughout): they keep their start values, so a program of such jobs computes no
    #: gradient for them (nor for what lies below them only they need); see _split_constants.
    constant: frozenset = frozenset()


def _minibatches(n: int, batch: int, steps: int, generator: torch.Generator | None) -> torch.Tensor | None:
    """The example indices of every step, drawn exactly as `training.train` draws them."""
    if batch >= n:
        return None
    if generator is None:
        raise ValueError("a minibatch budget needs the job's batches generator (BatchJob.batches)")
    order = torch.randperm(n, generator=generator)
    cursor = 0
    out = torch.empty(steps, batch, dtype=torch.long)
    for step in range(steps):
        if cursor + batch > n:
            order = torch.randperm(n, generator=generator)
            cursor = 0
        out[step] = order[cursor : cursor + batch]
        cursor += batch
    return out


def _prepare(index: int, job: BatchJob, budget: TrainBudget) -> _Job:
    plan = job.plan or TransferPlan.nothing()
    strategy = job.strategy
    phases = strategy.phases(budget.steps, plan, job.model) if strategy else [(budget.steps, plan.freeze)]
    phases = [(int(steps), dict(freeze)) for steps, freeze in phases]
    steps = sum(s for s, _ in phases)
    params = dict(job.model.named_parameters())
    # learning-rate scales, exactly as training.train reads them
    scales = {name: plan.lr_scales(name, tuple(params[name].shape)).to(params[name].device) for name in plan.lr_scale if name in params}
    held = {name: scale == 0 for name, scale in scales.items() if bool((scale == 0).any())}
    scaled = {name: (scale, (scale != 0) & (scale != 1)) for name, scale in scales.items()}
    scaled = {name: pair for name, pair in scaled.items() if bool(pair[1].any())}
    n = len(job.data)
    batch = budget.batch_size if budget.optimizer != "gd" and budget.batch_size else n
    state = job.batches.get_state() if job.batches is not None else None
    order = _minibatches(n, batch, steps, job.batches)
    penalty = plan.penalty if plan.penalty is not None and plan.penalty.active() else None
    hook = _batch_hook(strategy)
    wants_donor = hook and type(strategy).needs_donor_features
    if (wants_donor or penalty is not None) and job.donor is None:
        what = "the donor's features" if wants_donor else "a weight penalty toward the donor"
        raise ValueError(f"job {index} needs {what}, and its BatchJob has no donor")
    prepared = _Job(index, job, plan, phases, steps, min(batch, n), order, held, scaled, penalty, hook, wants_donor, state)
    prepared.constant = _constant(phases, held, params)
    if hook:
        prepared.plan_sig, prepared.plan_leaves = _plan_leaves(plan)
    return prepared


def _constant(phases: list[tuple[int, dict[str, torch.Tensor]]], held: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> frozenset:
    """The parameters every entry of which is frozen (or held) at every step of `phases`."""
    out = set()
    for name in params:
        if name in held and bool(held[name].all()):
            out.add(name)
        elif any(steps > 0 for steps, _ in phases) and all(name in freeze and bool(freeze[name].all()) for steps, freeze in phases if steps > 0):
            out.add(name)
    return frozenset(out)


def _program_key(p: _Job, budget: TrainBudget) -> tuple:
    """Jobs with equal keys run as one program: same architecture, data shapes, schedule
    length, regulariser (the strategy instance and its plan's structure) and penalty."""
    data = p.job.data
    key: list = [_structure(p.job.model), tuple(data.x.shape), data.x.dtype, tuple(data.y.shape), data.y.dtype, str(data.x.device), p.steps, p.batch]
    if p.penalty is not None:
        pen = p.penalty
        key.append(("penalty", type(pen).__qualname__, pen.toward_donor, pen.toward_zero, tuple(sorted(pen.inherited))))
    if p.hook:
        s = p.job.strategy
        key.append(("hook", type(s).__module__, type(s).__qualname__, s.key, p.plan_sig))
    if p.wants_donor:
        key.append(("donor", _structure(p.job.donor)))
    return tuple(key)


# --------------------------------------------------------------------------- the engine


class VmapEngine(BatchedEngine):
    """Trains and evaluates many runs of any buffer-free `TransferModel` as vmapped programs."""

    def __init__(self, threads: int | None = 1, max_elements: int = 1 << 26, max_jobs: int = 512, min_jobs: int = 2, min_split: int = 2):
        #: torch CPU threads while a program runs (None: torch's setting); see the module
        #: docstring for the measurement behind the default.
        self.threads = threads
        #: Memory bound of one program: runs x batch x activation entries per example (and
        #: the stacked parameters and optimiser state); larger sets of jobs are chunked.
        self.max_elements = max_elements
        self.max_jobs = max_jobs
        #: Programs of fewer jobs train on the per-run loop instead (measured: one digits run
        #: as a vmapped program of one took 1.1-1.25x the per-run loop's time; five, 0.55x;
        #: with the stacked forward and the flat update, 0.98x at width 16 and 0.8x at width
        #: 8, best of 8: too little to give up the reference path for).
        self.min_jobs = min_jobs
        #: Jobs that hold the same parameters constant (wholly frozen throughout) form a
        #: program of their own, without those gradients, when there are at least this many
        #: of them (and min_jobs: a lone job would go per run, 3-5x a job's share of a
        #: program). Measured on the 2-core machine, best of 5-8: an images-suite program of
        #: 46 jobs (2 seeds) as 30 + 4 x 4 took 0.84x the time of one program; 23 jobs (the
        #: suite's units) as 15 + 4 x 2, 0.85-0.97x; the quick suite's 22 digits jobs as
        #: 18 + 2 x 2, 0.92x.
        self.min_split = min_split
        #: Whether a program updates its trained parameters as one flat tensor (the same
        #: arithmetic per entry as the per-parameter loop, in far fewer operations).
        self.flat = True
        #: Whether a program whose jobs all hold the first layers constant (a frozen AnB or
        #: BnB prefix) computes those layers once, over each job's training split, instead of
        #: at every step (models with `stacked_layers`, programs without hooks or penalties).
        #: Bit for bit the same numbers (the kernels compute each example alone, whatever the
        #: batch); measured on the images suite's digits, 2 seeds: the frozen programs of
        #: k = 2, 3, 4 layers took 1.06, 0.81 and 0.44 s of which the constant layers' forward
        #: was about a fifth, two fifths and all.
        self.prefix_cache = True
        #: Not counted (vmapped products are not tallied): stays 0.
        self.flops = 0.0
        #: Why a program went to the per-run loop instead (vmap could not run its model).
        self.fallbacks: list[str] = []
        self._activations: dict[tuple, int] = {}
        #: Whether to train models that live on the CPU. A task whose models are too large per
        #: example for batching to pay on a CPU turns it off (tasks/images/disk.py: on 32x32
        #: CIFAR the vmapped grouped convolutions ran 1.6x slower than the per-run loop), and
        #: keeps the engine for CUDA, where one program per variant is the point.
        self.cpu = True

    # -- what it can do ---------------------------------------------------------------------
    def supports(self, model: TransferModel, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None = None) -> str | None:
        if not self.cpu and all(p.device.type == "cpu" for p in model.parameters()):
            return "on a CPU this task's models are too large per example for the vmapped engine to beat the per-run loop"
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            return f"the model has buffers ({buffers[0]}, ...: BatchNorm running statistics cannot update under vmap)"
        random = [type(m).__name__ for m in model.modules() if isinstance(m, _RANDOM_MODULES)]
        if random:
            return f"the model draws random numbers in its forward ({random[0]})"
        params = list(model.named_parameters())
        if not params:
            return "the model has no parameters"
        for name, param in params:
            if not param.requires_grad:
                return f"parameter {name} does not train (requires_grad=False)"
            if not param.is_floating_point() or param.is_complex():
                return f"parameter {name} is not a real floating-point tensor"
        if len({p.device for _, p in params}) > 1:
            return "the model's parameters are on more than one device"
        if budget.optimizer not in ("gd", "sgd", "adam"):
            return f"optimizer {budget.optimizer!r} (the engine runs gd, sgd and adam)"
        if budget.loss not in ("logistic", "cross_entropy"):
            return f"loss {budget.loss!r}"
        if strategy is not None:
            if strategy.has_weight_hook():
                return f"strategy {strategy.instance_name} has a regularizer hook"
            if _batch_hook(strategy):
                if not type(strategy).batchable_regularizer:
                    return f"strategy {strategy.instance_name}'s batch_regularizer does not declare batchable_regularizer = True"
                if type(model).forward_features is TransferModel.forward_features:
                    return f"{type(model).__name__} has no feature hook (forward_features) for the batch regulariser"
        if plan is not None and plan.penalty is not None and plan.penalty.active() and type(plan.penalty) is not WeightPenalty:
            return f"the plan's penalty is a {type(plan.penalty).__name__}, not a WeightPenalty"
        return None

    # -- training ------------------------------------------------------------------------------
    def train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None = None) -> list[JobOutcome]:
        with torch_threads(self.threads), torch.enable_grad():
            return self._train(jobs, budget, deadline)

    def _train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None) -> list[JobOutcome]:
        for i, job in enumerate(jobs):
            reason = self.supports(job.model, budget, job.plan, job.strategy)
            if reason:
                raise ValueError(f"VmapEngine cannot train job {i}: {reason}")
        prepared = [_prepare(i, job, budget) for i, job in enumerate(jobs)]
        outcomes = [JobOutcome() for _ in jobs]
        programs: "OrderedDict[tuple, list[_Job]]" = OrderedDict()
        for p in prepared:
            programs.setdefault(_program_key(p, budget), []).append(p)
        for members in self._split_constants(programs):
            for chunk in balanced_chunks(members, self._chunk_size(members[0], budget)):
                self._run_or_fall_back(chunk, [outcomes[p.index] for p in chunk], budget, deadline)
        return outcomes

    def _split_constants(self, programs: "OrderedDict[tuple, list[_Job]]") -> list[list[_Job]]:
        """Each program's jobs, as programs by the parameters they hold constant (`_Job.
        constant`): a set of at least `min_split` jobs runs as a program of its own, without
        those gradients; the others run with the largest set, holding constant only what all
        of them do (a program's fixed per-step cost outweighs what a few jobs save)."""
        out = []
        for members in programs.values():
            by_constant: "OrderedDict[frozenset, list[_Job]]" = OrderedDict()
            for p in members:
                by_constant.setdefault(p.constant, []).append(p)
            sets = sorted(by_constant.values(), key=len, reverse=True)
            least = max(self.min_split, self.min_jobs)
            main, rest = sets[0], [m for m in sets[1:] if len(m) >= least]
            pooled = [p for m in sets[1:] if len(m) < least for p in m]
            if pooled:
                main = sorted(main + pooled, key=lambda p: p.index)
                common = frozenset.intersection(*(p.constant for p in main))
                for p in main:
                    p.constant = common
            out += [main] + rest
        return sorted(out, key=lambda m: m[0].index)

    def _constant_prefix(self, model: nn.Module, constant: frozenset) -> int:
        """How many leading layers (`transfer_layers`, in forward order, the head excluded)
        every parameter of which the program holds constant, where the model can run its
        stack from there (`stacked_layers`; `stacked_forward_features(..., start=k)`)."""
        if not self.prefix_cache or not constant or not callable(getattr(model, "stacked_layers", None)):
            return 0
        k = 0
        for layer in model.transfer_layers():
            if layer.head or not all(name in constant for name in layer.params):
                break
            k += 1
        return k

    def _prefix_features(self, model: nn.Module, P: dict[str, torch.Tensor], X: torch.Tensor, ds: torch.Tensor, prefix: int, slice_size: int = 1024) -> torch.Tensor | None:
        """`model.stacked_layers(P, X[ds], prefix)`: each job's whole split (job j reads the
        split X[ds[j]]), a slice of examples at a time, so that no more than a slice of the
        jobs' inputs is ever copied; None (compute them at every step) where the result would
        hold more than `max_elements` entries."""
        n = X.shape[1]
        with torch.no_grad():
            first = model.stacked_layers(P, X[:, :1][ds], prefix)
            if len(ds) * n * first[0, 0].numel() > self.max_elements:
                return None
            return torch.cat([model.stacked_layers(P, X[:, a : a + slice_size][ds], prefix) for a in range(0, n, slice_size)], dim=1)

    def _chunk_size(self, p: _Job, budget: TrainBudget) -> int:
        """How many jobs like `p` one program holds under `max_elements`."""
        per_example = self._activation_entries(p.job.model, p.job.data)
        params = sum(t.numel() for t in p.job.model.parameters())
        per_job = 4 * p.batch * per_example + 8 * params
        if p.order is None:
            per_job += p.job.data.x[0].numel() * p.batch
        return max(1, min(self.max_jobs, self.max_elements // max(per_job, 1)))

    def _activation_entries(self, model: nn.Module, data: Split) -> int:
        """Entries of every module's output for one example (measured once per structure)."""
        key = (_structure(model), tuple(data.x.shape[1:]))
        if key not in self._activations:
            total = [0]

            def count(_module, _inputs, output):
                for t in output if isinstance(output, (tuple, list)) else (output,):
                    if isinstance(t, torch.Tensor):
                        total[0] += t.numel()

            probe = copy.deepcopy(model)
            handles = [m.register_forward_hook(count) for m in probe.modules()]
            try:
                with torch.no_grad():
                    probe(data.x[:1])
            except Exception:  # noqa: BLE001 - the program will say what is wrong
                total[0] = int(data.x[0].numel()) * 64
            finally:
                for h in handles:
                    h.remove()
            self._activations[key] = max(total[0], 1)
        return self._activations[key]

    def _run_or_fall_back(self, chunk: list[_Job], outcomes: list[JobOutcome], budget: TrainBudget, deadline: float | None) -> None:
        if len(chunk) < self.min_jobs:
            # vmap over a single run only adds its own overhead: the per-run loop (the
            # reference) trains it, with the same generator, to the same numbers
            self._per_run(chunk, outcomes, budget, deadline)
            return
        try:
            self._program(chunk, outcomes, budget, deadline)
        except _FirstStepError as err:
            # vmap could not run this model (an operation without a batching rule, say):
            # the per-run loop trains these jobs, from the same starts and generators
            cause = err.__cause__ or err
            reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
            self.fallbacks.append(reason)
            log.warning("VmapEngine: training %d job(s) on the per-run loop: %s", len(chunk), reason)
            self._per_run(chunk, outcomes, budget, deadline)

    @staticmethod
    def _per_run(chunk: list[_Job], outcomes: list[JobOutcome], budget: TrainBudget, deadline: float | None) -> None:
        for p, outcome in zip(chunk, outcomes):
            job = p.job
            if job.batches is not None and p.generator_state is not None:
                job.batches.set_state(p.generator_state)  # undraw what _prepare drew
            try:
                train_per_run(job.model, job.data, budget, job.batches, job.plan, job.strategy, deadline=deadline, donor=job.donor)
            except Diverged as diverged:
                outcome.status, outcome.error = "diverged", str(diverged)

    def _program(self, chunk: list[_Job], outcomes: list[JobOutcome], budget: TrainBudget, deadline: float | None) -> None:
        """One vmapped program over jobs with one program key."""
        J = len(chunk)
        first = chunk[0]
        model0 = first.job.model
        names = [name for name, _ in model0.named_parameters()]
        template = copy.deepcopy(model0).train()
        # what a batch regulariser sees as batch.model: the structure, no run's weights (the
        # batchable_regularizer promise; `training.structure_only`)
        structure = structure_only(model0) if first.hook else None
        caller = _Method(template, "forward_features") if first.hook else template
        prefix = "model." if first.hook else ""
        device = next(model0.parameters()).device

        # stacked parameters (leaves, no autograd history) and the data
        P = {name: torch.stack([dict(p.job.model.named_parameters())[name].detach() for p in chunk]).clone() for name in names}
        splits: "OrderedDict[int, Split]" = OrderedDict()
        for p in chunk:
            splits.setdefault(id(p.job.data), p.job.data)
        ids = list(splits)
        X = torch.stack([s.x for s in splits.values()]) if len(splits) > 1 else next(iter(splits.values())).x[None]
        Y = torch.stack([s.y for s in splits.values()]) if len(splits) > 1 else next(iter(splits.values())).y[None]
        ds = torch.tensor([ids.index(id(p.job.data)) for p in chunk], device=X.device)
        steps, batch = first.steps, first.batch
        minibatch = first.order is not None
        if minibatch:
            order = torch.stack([p.order for p in chunk]).to(X.device)  # [J, steps, batch]
            rows = ds[:, None]
        else:
            xs_full, ys_full = X[ds], Y[ds]

        # what the loss reads besides the parameters and the batch, per job (vmapped)
        aux: dict[str, Any] = {}
        penalty = first.penalty
        if penalty is not None:
            aux["masks"] = {name: torch.stack([p.penalty.inherited[name].to(device) for p in chunk]) for name in penalty.inherited}
            if penalty.toward_donor:
                refs = [dict(p.job.donor.named_parameters()) for p in chunk]
                aux["reference"] = {name: torch.stack([r[name].detach().to(device) for r in refs]) for name in penalty.inherited if name in P}
            else:
                aux["reference"] = {}
        if first.hook:
            aux["plan"] = {k: torch.stack([p.plan_leaves[k].to(device) for p in chunk]) for k in first.plan_leaves}
        strategy = first.job.strategy
        donor_call = None
        if first.wants_donor:
            donor_template = copy.deepcopy(first.job.donor).eval()
            donor_names = [name for name, _ in donor_template.named_parameters()]
            donor_stacked = _stacked(donor_template)
            donor_P = {("" if donor_stacked else "model.") + n: torch.stack([dict(p.job.donor.named_parameters())[n].detach() for p in chunk]) for n in donor_names}
            if donor_stacked is not None:
                donor_call = lambda dp, x: {k: v.detach() for k, v in donor_stacked(dp, x)[1].items()}  # noqa: E731
            else:
                donor_call = vmap(lambda dp, x: {k: v.detach() for k, v in functional_call(_Method(donor_template, "forward_features"), dp, (x,))[1].items()})

        step_now = [0]
        kind = budget.loss
        stacked = _stacked(template)
        ahead_layers = self._constant_prefix(template, first.constant) if stacked is not None and penalty is None and not first.hook else 0

        def job_loss(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
            call_params = {prefix + k: v for k, v in params.items()}
            if first.hook:
                output, features = functional_call(caller, call_params, (xb,))
            else:
                output = functional_call(caller, call_params, (xb,))
            return job_terms(params, xb, yb, extra, output, features if first.hook else {})

        def job_terms(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, extra: dict[str, Any], output: torch.Tensor, features: Any) -> torch.Tensor:
            loss = loss_fn(kind, output, yb)
            if penalty is not None:
                batch_penalty = WeightPenalty(penalty.toward_donor, penalty.toward_zero, extra["masks"])
                loss = loss + batch_penalty.value(((name, params[name]) for name in names), extra["reference"])
            if first.hook:
                view = RegularizerBatch(xb, yb, step_now[0], structure, output, features, extra.get("donor_features"), _plan_view(first.plan, extra["plan"]))
                term = _scalar_term(strategy.batch_regularizer(view), strategy, "batch_regularizer")
                if term is not None:
                    loss = loss + term
            return loss

        # The vmapped forward gives every job's loss; one backward pass through their sum
        # gives every job's gradient (d sum / d loss_j = 1: exactly its own gradient, as
        # torch.func.grad would give it, bit for bit, without that transform's per-step
        # bookkeeping and its one-off import of torch._dynamo, 1.6 s per process).
        if stacked is not None:
            # the model runs its J copies itself (`stacked_forward_features`: one forward for
            # the stack, laid out for the device), and vmap takes the per-run terms from there
            terms_of = vmap(job_terms)
            plain = penalty is None and not first.hook

            def losses_of(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
                output, features = stacked(params, xb, start=ahead_layers) if ahead_layers else stacked(params, xb)
                if plain:  # the loss alone: no vmap needed (nor its per-call overhead, ~1 ms)
                    return _stacked_loss(kind, output, yb)
                # (the parameters only where the penalty reads them: each input costs vmap a wrap)
                return terms_of(params if penalty is not None else {}, xb, yb, extra, output, features if first.hook else {})
        else:
            losses_of = vmap(job_loss)
        # a parameter frozen throughout in every job is a constant of the program: no gradient
        # (which spares its layer's weight gradient, and below the lowest trained layer every
        # input gradient too); its value stays the start value, as the per-run loop restores it
        constant = first.constant
        trained = [name for name in names if name not in constant]
        # The trained stacks as views of one flat tensor (when they share a dtype and device):
        # then a step's optimiser update, masks and restores are a handful of operations on
        # the flat tensor instead of as many per parameter (each is elementwise, so entry by
        # entry the same arithmetic); a step where some parameter got no gradient takes the
        # per-parameter loop, which the views serve as well.
        flat = None
        if self.flat and trained and len({(P[name].dtype, P[name].device) for name in trained}) == 1:
            sizes = [P[name].numel() for name in trained]
            flat = torch.cat([P[name].reshape(-1) for name in trained])
            P.update({name: view.view(P[name].shape) for name, view in zip(trained, flat.split(sizes))})

        def views(t: torch.Tensor) -> dict[str, torch.Tensor]:
            return {name: view.view(P[name].shape) for name, view in zip(trained, t.split(sizes))}

        def flat_of(tensors: dict[str, torch.Tensor], fill: Any, dtype: torch.dtype) -> torch.Tensor:
            return torch.cat([(tensors[name].expand(P[name].shape) if name in tensors else torch.full(P[name].shape, fill, dtype=dtype, device=device)).reshape(-1) for name in trained])

        leaves = [P[name].requires_grad_() for name in trained]
        # the constant layers' output for every job's training examples, once (see prefix_cache)
        ahead = self._prefix_features(template, P, X, ds, ahead_layers) if ahead_layers else None
        ahead_layers = ahead_layers if ahead is not None else 0
        jobs = torch.arange(J, device=X.device)[:, None]

        # optimiser state; a parameter without a gradient (not in the graph) is skipped, as
        # torch.optim skips it, with its own step count
        lr, wd, momentum = budget.lr, budget.weight_decay, budget.momentum
        adam = budget.optimizer == "adam"
        bufs: dict[str, torch.Tensor | None] = {name: None for name in names}
        buf_flat: torch.Tensor | None = None
        adam_steps = {name: 0 for name in names}
        flat_steps = flat is not None  # every step so far took the flat update
        if adam:
            if flat is not None:
                exp_avg_flat, exp_avg_sq_flat = torch.zeros_like(flat), torch.zeros_like(flat)
                exp_avg, exp_avg_sq = views(exp_avg_flat), views(exp_avg_sq_flat)
            else:
                exp_avg = {name: torch.zeros_like(P[name]) for name in names}
                exp_avg_sq = {name: torch.zeros_like(P[name]) for name in names}

        # learning-rate scales (the same for every phase) and per-phase frozen masks
        scaled: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in trained:
            if any(name in p.scaled for p in chunk):
                shape = P[name].shape[1:]
                scale = torch.stack([p.scaled[name][0] if name in p.scaled else torch.ones(shape, device=device, dtype=P[name].dtype) for p in chunk])
                where = torch.stack([p.scaled[name][1] if name in p.scaled else torch.zeros(shape, dtype=torch.bool, device=device) for p in chunk])
                scaled[name] = (scale.to(P[name].dtype), where)
        if scaled and flat is not None:
            scale_flat = flat_of({name: pair[0] for name, pair in scaled.items()}, 1.0, flat.dtype)
            where_flat = flat_of({name: pair[1] for name, pair in scaled.items()}, False, torch.bool)
        boundaries = sorted({0, steps} | {sum(s for s, _ in p.phases[: k + 1]) for p in chunk for k in range(len(p.phases))})

        def frozen_at(step: int) -> dict[str, torch.Tensor]:
            masks_per_job = []
            for p in chunk:
                done = 0
                freeze: dict[str, torch.Tensor] = {}
                for phase_steps, phase_freeze in p.phases:
                    if done <= step < done + phase_steps:
                        freeze = dict(phase_freeze)
                        break
                    done += phase_steps
                for name, mask in p.held.items():
                    freeze[name] = mask | freeze[name].to(mask.device) if name in freeze else mask
                masks_per_job.append({name: mask for name, mask in freeze.items() if bool(mask.any())})
            out = {}
            for name in trained:
                if any(name in m for m in masks_per_job):
                    shape = P[name].shape[1:]
                    out[name] = torch.stack([m[name].to(device) if name in m else torch.zeros(shape, dtype=torch.bool, device=device) for m in masks_per_job])
            return out

        history = torch.empty(steps, J, dtype=P[names[0]].dtype, device=device)
        frozen: dict[str, torch.Tensor] = {}
        held: dict[str, torch.Tensor] = {}
        frozen_flat = held_flat = None
        for step in range(steps):
            if step in boundaries:
                frozen = frozen_at(step)
                # a frozen entry keeps its value at the phase's start (what restoring it after
                # every step to its value before that step amounts to, bit for bit)
                if flat is not None:
                    frozen_flat = flat_of(frozen, False, torch.bool) if frozen else None
                    held_flat = flat.detach().clone() if frozen else None
                    held = views(held_flat) if frozen else {}
                else:
                    held = {name: P[name].detach().clone() for name in frozen}
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(f"batched program exceeded its time limit at step {step} of {steps}")
            if minibatch:
                idx = order[:, step]
                xb, yb = (X[rows, idx] if ahead is None else ahead[jobs, idx]), Y[rows, idx]
            else:
                xb, yb = (xs_full if ahead is None else ahead), ys_full
            step_now[0] = step
            extra = dict(aux)
            try:
                if donor_call is not None:
                    with torch.no_grad():
                        extra["donor_features"] = donor_call(donor_P, xb)
                loss = losses_of(P, xb, yb, extra)
                grads = dict.fromkeys(names)
                if leaves:
                    grads.update(zip(trained, torch.autograd.grad(loss.sum(), leaves, allow_unused=True)))
            except RunTimeout:
                raise
            except Exception as err:
                if step == 0:
                    raise _FirstStepError() from err
                raise
            history[step] = loss.detach()
            flat_steps = flat_steps and all(grads[name] is not None for name in trained)
            with torch.no_grad():
                if flat_steps:
                    grad = torch.cat([grads[name].reshape(-1) for name in trained])
                    if frozen_flat is not None:
                        grad.masked_fill_(frozen_flat, 0.0)
                    before = flat.clone() if scaled else None
                    for name in trained:
                        adam_steps[name] += 1
                    if adam:
                        _adam_update(flat, grad, exp_avg_flat, exp_avg_sq_flat, adam_steps[trained[0]], lr, wd)
                    else:
                        created = buf_flat is None
                        buf_flat = _sgd_update(flat, grad, buf_flat, lr, momentum, wd)
                        if created and buf_flat is not None:  # the per-parameter path reads the same buffer
                            bufs.update(views(buf_flat))
                    if before is not None:
                        torch.where(where_flat, before + scale_flat * (flat - before), flat, out=flat)
                    if frozen_flat is not None:
                        torch.where(frozen_flat, held_flat, flat, out=flat)
                    continue
                for name, mask in frozen.items():
                    grad = grads[name]
                    if grad is not None:
                        # autograd's fresh gradient is zeroed in place unless it may be a view
                        # that overlaps itself (an expanded gradient)
                        grads[name] = grad.masked_fill_(mask, 0.0) if grad.is_contiguous() else grad.masked_fill(mask, 0.0)
                before = {name: P[name].clone() for name in scaled}
                for name in names:
                    param, grad = P[name], grads[name]
                    if grad is None:
                        continue
                    adam_steps[name] += 1
                    if adam:
                        _adam_update(param, grad, exp_avg[name], exp_avg_sq[name], adam_steps[name], lr, wd)
                    else:
                        bufs[name] = _sgd_update(param, grad, bufs[name], lr, momentum, wd)
                for name, (scale, where) in scaled.items():
                    start = before[name]
                    P[name].copy_(torch.where(where, start + scale * (P[name] - start), P[name]))
                for name, mask in frozen.items():
                    torch.where(mask, held[name], P[name], out=P[name])

        for leaf in leaves:
            leaf.requires_grad_(False)
        bad = ~torch.isfinite(history)
        first_bad = torch.where(bad.any(dim=0), bad.to(torch.float32).argmax(dim=0), torch.full((J,), -1, device=device)).cpu() if steps else torch.full((J,), -1)
        history = history.cpu()
        finite = {name: torch.isfinite(P[name].reshape(J, -1)).all(dim=1).cpu() for name in names}
        with torch.no_grad():
            for j, (p, outcome) in enumerate(zip(chunk, outcomes)):
                for name, param in p.job.model.named_parameters():
                    param.copy_(P[name][j])
                bad_step = int(first_bad[j])
                if bad_step >= 0:
                    outcome.status, outcome.error = "diverged", f"loss became {float(history[bad_step, j])} at step {bad_step}"
                    continue
                for name in names:
                    if not bool(finite[name][j]):
                        outcome.status, outcome.error = "diverged", f"parameter {name} is not finite after training"
                        break

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, models: Sequence[TransferModel], splits: Sequence[Split], loss: str, batch_size: int = 4096) -> list[float]:
        out = [0.0] * len(models)
        groups: "OrderedDict[tuple, list[int]]" = OrderedDict()
        for i, (model, split) in enumerate(zip(models, splits)):
            groups.setdefault((_structure(model), id(split)), []).append(i)
        with torch_threads(self.threads):
            for members in groups.values():
                split = splits[members[0]]
                model0 = models[members[0]]
                per_example = self._activation_entries(model0, split)
                size = max(1, min(self.max_jobs, self.max_elements // max(per_example * min(batch_size, max(len(split), 1)), 1)))
                for chunk in balanced_chunks(members, size):
                    for i, acc in zip(chunk, self._accuracy([models[i] for i in chunk], split, loss, batch_size)):
                        out[i] = acc
        return out

    def _accuracy(self, models: list[TransferModel], split: Split, loss: str, batch_size: int) -> list[float]:
        template = copy.deepcopy(models[0]).eval()
        names = [name for name, _ in template.named_parameters()]
        P = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]) for name in names}
        stacked = _stacked(template)
        if stacked is not None:
            J = len(models)
            labels = vmap(lambda out: predictions(loss, out))
            predict = lambda params, x: labels(stacked(params, x.expand(J, *x.shape))[0])  # noqa: E731
        else:
            predict = vmap(lambda params, x: predictions(loss, functional_call(template, params, (x,))), in_dims=(0, None))
        correct = torch.zeros(len(models), dtype=torch.long)
        for start in range(0, len(split), batch_size):
            x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
            correct += (predict(P, x) == y[None]).sum(dim=1).cpu()
        return [int(c) / max(len(split), 1) for c in correct]


class _FirstStepError(RuntimeError):
    """A program's first step failed: vmap cannot run this model or hook."""
