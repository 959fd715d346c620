"""What a run costs, estimated before it runs: what units are sized by and the progress bar counts.

The unit is seconds on one core with one torch thread (every unit runs on one: see
`ptbench.sweep.units.UNIT_THREADS`), on this project's 2-core machine, idle. Packing units
and the bar need only ratios (the bar corrects the scale by what finished units took);
`--jobs auto` uses the seconds to decide whether starting worker processes pays.

A step of the harness's training loop costs

    STEP_SECONDS + TENSOR_SECONDS x (parameter tensors) + FLOP_SECONDS x (forward FLOPs of one
    example) x (examples per step: the budget's batch_size, or the whole training split)

and a run is its target's steps, one evaluation of its train and test splits and RUN_SECONDS
(building, planning, diagnostics). A group adds drawing its data and each donor it trains
(the source model; the selffer's target-trained one), once, on the donor's own budget; the
cache is ignored (a cached donor makes the estimate an upper bound).

Why not parameters x examples alone: the models ptbench trains on a CPU are small enough
that per-operation overhead dominates, and a convolution uses each weight at every pixel.
Measured (one thread, ms per step): signal-noise d=1000 m=20 (40k parameters, 1 tensor) 0.6
at 20 examples and 3.3 at 400; the 8x8 digits CNN, width 8 depth 4 (4.5k parameters, 10
tensors) 3.5-5 at 32 examples, width 32 (66k) 11. Parameters x examples puts a digits step at
1/6 of a 20-example signal-noise step; it is 6 times dearer. The formula is within 30% on
all of them, and within a third of the time of each of the quick suite's groups (both
measured side by side in one process).

Multipliers:

- A run the task's batched engine trains (decided by `ptbench.run.protocol.batched_refusal`,
  asked before planning: the runner's own rule) costs its per-run estimate / the engine's
  speedup (`engine_speedup`), and so does a donor the engine trains.
- A strategy that overrides `plan_with_data` trains models while planning (auto-fraction:
  its candidates, then its run): PLANS_WITH_DATA runs, its candidates at the square root of
  the engine's speedup.
- A `batch_regularizer` adds REGULARIZER_STEP_SECONDS per step on the per-run loop,
  ENGINE_REGULARIZER_STEP_SECONDS on an engine.

Measuring a variant (once per task key, cached in this module) builds one fresh model
(`task.model("target", torch.Generator().manual_seed(0))`) and draws the target data of seed
0 (the number of training examples; one example to count FLOPs on). It does not draw the
source data (see `_measure`). Past PROBE_ELEMENTS drawn, a variant shares the measurement of
an earlier one with the same signature (`_signature`). A task whose model or data cannot be
built here (data not on disk, a plugin's bug or exit) costs UNKNOWN_RUN_SECONDS per run and
per donor; the run itself then says what is wrong. Under `--timeout` each call into task
code here is stopped after the timeout (SIGALRM), as a hung run would be.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from ptbench.api import RunSpec, Strategy, Task, TrainBudget
from ptbench.run.group import DONORS

#: Seconds per training step, whatever the model (the loop, the loss, the optimiser's call).
STEP_SECONDS = 1.5e-4
#: Seconds per parameter tensor per step (its autograd nodes, its optimiser update, its masks).
TENSOR_SECONDS = 3.5e-4
#: Seconds per forward FLOP of one example, per example, per step (forward, backward, update).
FLOP_SECONDS = 5e-11
#: Seconds per forward FLOP of one example when it is only evaluated (no backward).
EVAL_FLOP_SECONDS = FLOP_SECONDS / 3
#: Seconds per run beyond its training steps: a fresh model, planning, diagnostics, the store.
RUN_SECONDS = 0.03
#: How many times cheaper (target run, donor) an engine is than the per-run loop, measured on
#: the quick suite, one thread, side by side with --no-batch, where the engine does not say
#: itself (an engine may declare `speedup`: a number, or a (runs, donors) pair):
#: - the signal-noise engine (the span trick, all runs of a variant in one program):
#:   13-46x for target runs (20-100 examples, where the per-run loop's per-step overhead
#:   dominates and a program shares it), 5-10x for source models (400 examples, one per group);
#: - `ptbench.run.vmapped.VmapEngine` (the image tasks' small CNN): 2.4x for target runs (50
#:   per program: the per-step overhead is shared, the vmapped convolutions are not faster
#:   than one run's), 1x for source models (one per group: nothing to share).
#: Any other engine is taken to be like the signal-noise one, until it is measured.
ENGINE_SPEEDUP = (20.0, 8.0)
VMAP_SPEEDUP = (2.4, 1.0)
#: A strategy that trains while it plans (`plan_with_data`): auto-fraction trains 5 candidate
#: models and then its run, PLANS_WITH_DATA runs in all. On an engine its candidates are a
#: program of their own, of a few runs, that shares less than the sweep's program of dozens:
#: they get the square root of the engine's speedup. Measured (one thread, per run): per-run
#: loop 5.5x (signal-noise) and 7.8x (digits) a plain run; on the engines 0.57 s (signal-noise,
#: this formula 0.76) and 1.2 s (digits, 0.98).
PLANS_WITH_DATA = 6.0
#: Seconds per step that a `batch_regularizer` adds (DELTA: a forward pass through the donor
#: and a feature distance; BSS: an SVD of the batch features), per run: no engine shares the
#: SVD. Measured per step on the per-run loop: 0.6-1.3 ms for signal-noise, 5 ms for digits.
REGULARIZER_STEP_SECONDS = 3e-3
#: The same on a batched engine: 0.15-0.8 ms CPU per run on the signal-noise span engine (the
#: features rebuilt from its pre-activations, the donor's once per run; 0.8 ms is BSS's SVD
#: of a 100 x 80 matrix), about nothing beyond the program's own step on the vmapped digits
#: engine.
ENGINE_REGULARIZER_STEP_SECONDS = 8e-4
#: A run (or a donor) of a task that could not be measured.
UNKNOWN_RUN_SECONDS = 1.0
#: Seconds per element of a drawn input tensor (a task's data, drawn once per group and role).
DATA_SECONDS = 5e-9
#: Drawn input elements up to which every task variant is probed; past them, a variant shares
#: the probe of an earlier one of the same signature (`_signature`). Bounds the probing of a
#: sweep of many variants (the paper suite's 116 variants: 2 s on 2 cores, not 30) to well
#: under a second of data.
PROBE_ELEMENTS = 2e7

@dataclass(frozen=True)
class Side:
    """One role's training, measured: seconds per step on the per-run loop, its budget's
    steps, one evaluation of its splits, and one draw of its data."""

    step_seconds: float
    steps: int
    eval_seconds: float
    data_seconds: float

    @property
    def seconds(self) -> float:
        """Training and evaluating one model of this role (its data not included)."""
        return self.steps * self.step_seconds + self.eval_seconds


@dataclass
class _Variant:
    """A task variant: its engine, its measured sides (shared by every variant of the same
    signature; a side is None where it could not be measured), whether the engine trains
    each role's donor, and which strategies (by key) the runner would train on the engine."""

    task: Task
    engine: object | None
    budget: TrainBudget | None
    signature: tuple | None
    sides: dict[str, Side] = field(default_factory=dict)  # empty: it could not be measured
    measured: bool = False
    donor_on_engine: dict[str, bool] = field(default_factory=dict)
    on_engine: dict[str, bool] = field(default_factory=dict)


#: task variant -> _Variant; signature -> {role: Side}. Signatures: see `_signature`.
_VARIANTS: dict[tuple, _Variant] = {}
_SIDES: dict[tuple, dict[str, Side]] = {}
#: Bounds the module caches (a long-lived process sweeping many variants).
_MAX_ENTRIES = 4096


def step_seconds(tensors: int, flops: float, examples: int) -> float:
    """The formula of the module docstring: one step of the per-run training loop."""
    return STEP_SECONDS + TENSOR_SECONDS * tensors + FLOP_SECONDS * flops * examples


def forward_flops(model, x) -> float:
    """Forward FLOPs of `model` on the batch `x`: its matrix products and convolutions, counted
    as torch functions are called (a TorchFunctionMode: torch's own FLOP counter is a dispatch
    mode, and the first one entered imports torch._dynamo, seconds of start-up); 2 x the
    parameters per example where nothing is counted."""
    import torch

    counter = _FlopCount()
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    except Exception:
        counter.flops = 0.0
    finally:
        model.train(was_training)
    if counter.flops > 0:
        return counter.flops
    return 2.0 * sum(p.numel() for p in model.parameters()) * len(x)


def _flop_counter_class():
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    products = {torch.matmul, torch.mm, torch.bmm, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.Tensor.matmul,
                torch.Tensor.mm, torch.Tensor.bmm}
    added = {torch.addmm, torch.baddbmm}
    convolutions = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d}

    class FlopCount(TorchFunctionMode):
        """2 x (output elements) x (the reduced dimension) per product or convolution."""

        def __init__(self):
            super().__init__()
            self.flops = 0.0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            try:
                if func in products:
                    left = args[1] if func is torch.Tensor.__rmatmul__ else args[0]
                    self.flops += 2.0 * out.numel() * left.shape[-1]
                elif func in added:
                    self.flops += 2.0 * out.numel() * args[1].shape[-1]
                elif func is F.linear:
                    self.flops += 2.0 * out.numel() * args[1].shape[-1]
                elif func in convolutions:
                    weight = args[1] if len(args) > 1 else kwargs["weight"]
                    self.flops += 2.0 * out.numel() * weight[0].numel()
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
            return out

    return FlopCount


_FLOP_COUNT: list = []


def _FlopCount():
    if not _FLOP_COUNT:
        _FLOP_COUNT.append(_flop_counter_class())
    return _FLOP_COUNT[0]()


class _Overran(Exception):
    """A measurement ran past its time limit."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _Overran in the block after `seconds` (SIGALRM; in the main thread on POSIX, and
    only where nobody else uses the alarm; elsewhere no limit)."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        yield
        return

    def overran(signum, frame):
        raise _Overran(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, overran)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded(call, default=None, limit: float | None = None):
    """`call()`, or `default` when plugin code fails, exits or (past `limit` seconds) hangs in
    it: the run itself will say what is wrong. The user's Ctrl-C still stops."""
    from ptbench.run import exits

    try:
        with _time_limit(limit):
            return call()
    except BaseException as err:
        exits.reraise_users(err)
        return default


def _fresh(task: Task, role: str):
    import torch

    return task.model(role, torch.Generator().manual_seed(0))


def _signature(task: Task, model, batched: bool) -> tuple:
    """What a variant's measurement is shared by: its class, its model's parameter shapes and
    its budgets. Drawing data is most of a probe's time (the paper suite: 116 variants, a
    quarter of a second each), and variants that differ only in what their data says (signal
    strengths, noise, label flips) cost the same. Variants that differ in how *much* data a
    full-batch step sees (n_target) and nothing else share a probe too: the price of a probe
    per signature, not per variant."""
    cls = type(task)
    shapes = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    return (cls.__module__, cls.__qualname__, shapes, task.budget("target"), task.budget("source"), batched)


def _measure(task: Task) -> tuple[dict[str, Side], float]:
    """Both roles' sides from one probe of the target (its model, one draw of its data), and
    how many input elements it drew. The source side takes the target's model size and, for
    a full-batch budget, its number of examples: drawing the source data as well would double
    the probe, and call the task's source draw where the runner alone should (a draw of source
    data is a source model being trained, and tests count them)."""
    from ptbench.rng import RandomStreams

    model = _fresh(task, "target")
    data = task.data("target", RandomStreams(0))
    flops = forward_flops(model, data.train.x[:1])
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    n = len(data.train)
    evaluation = EVAL_FLOP_SECONDS * flops * (n + len(data.test))
    elements = (n + len(data.test)) * data.train.x[0].numel()
    sides = {}
    for role in ("target", "source"):
        budget = task.budget(role)
        examples = max(1, budget.batch_size if budget.batch_size else n)
        if role == "target" and budget.batch_size:
            examples = max(1, min(budget.batch_size, n))
        sides[role] = Side(step_seconds(tensors, flops, examples), budget.steps, evaluation, DATA_SECONDS * elements)
    return sides, elements


def engine_speedup(engine) -> tuple[float, float]:
    """(target runs, donors): how many times cheaper the engine is than the per-run loop."""
    declared = getattr(engine, "speedup", None)
    if isinstance(declared, (int, float)) and declared > 0:
        return float(declared), float(declared)
    if isinstance(declared, tuple) and len(declared) == 2 and all(isinstance(x, (int, float)) and x > 0 for x in declared):
        return float(declared[0]), float(declared[1])
    if type(engine).__module__ == "ptbench.run.vmapped":  # the harness's own (not imported: it is optional here)
        return VMAP_SPEEDUP
    return ENGINE_SPEEDUP


def _on_engine(engine, task: Task, strategy: Strategy | None, model, budget: TrainBudget | None, limit: float | None = None) -> bool:
    """Whether the runner would train this run (a donor when `strategy` is None) on the
    engine, asked before planning (plan None): `batched_refusal`, the runner's own rule.
    Without a model to ask about (it could not be built here), the rule's part that needs
    none: no tracing, and no `regularizer` hook."""
    if engine is None or budget is None:
        return False
    if model is None:
        hooked = strategy is not None and type(strategy).regularizer is not Strategy.regularizer
        return not hooked and bool(guarded(lambda: task.trace_every() <= 0, False, limit))
    from ptbench.run.protocol import batched_refusal

    return bool(guarded(lambda: batched_refusal(engine, task, strategy, model, budget, None) is None, False, limit))


class CostModel:
    """Estimated seconds of runs and groups (see the module docstring). `batched` is
    `RunOptions.batched` (--no-batch: no engine); `limit` bounds each call into task code
    while measuring, in seconds (--timeout: a model or data draw that hangs)."""

    def __init__(self, batched: bool = True, limit: float | None = None):
        self.batched = batched
        self.limit = limit
        self._keys: dict[int, tuple[object, str]] = {}
        self._probed = 0.0  # input elements this model's probes drew (see PROBE_ELEMENTS)

    def _key(self, plugin) -> str:
        """`plugin.key`, once per object (a key is JSON, rebuilt at each use; the specs of a
        sweep share their task and strategy objects)."""
        known = self._keys.get(id(plugin))
        if known is None or known[0] is not plugin:
            known = self._keys[id(plugin)] = (plugin, plugin.key)
        return known[1]

    # -- measuring --------------------------------------------------------------------------
    def _variant(self, task: Task, strategies: Iterable[Strategy] = ()) -> _Variant:
        """The variant (measured once per task key), with the path of every strategy given
        decided; one fresh model serves all of them."""
        cls = type(task)
        key = (cls.__module__, cls.__qualname__, self._key(task), self.batched)
        variant = _VARIANTS.get(key)
        new = [s for s in strategies if variant is None or self._key(s) not in variant.on_engine]
        if variant is not None and not new:
            return variant
        limit = self.limit
        model = guarded(lambda: _fresh(task, "target"), None, limit)
        if variant is None:
            for cache in (_VARIANTS, _SIDES):
                if len(cache) >= _MAX_ENTRIES:
                    cache.clear()
            engine = guarded(task.batched_engine, None, limit) if self.batched else None
            budget = guarded(lambda: task.budget("target"), None, limit)
            signature = None if model is None else guarded(lambda: _signature(task, model, self.batched), None, limit)
            variant = _Variant(task, engine, budget, signature)
            _VARIANTS[key] = variant
        for strategy in new:
            variant.on_engine[self._key(strategy)] = _on_engine(variant.engine, task, strategy, model, variant.budget, limit)
        return variant

    def _donor_on_engine(self, variant: _Variant, donor: str) -> bool:
        if donor not in variant.donor_on_engine:
            task, role = variant.task, DONORS.get(donor, ("source",))[0]
            model = guarded(lambda: _fresh(task, role), None, self.limit) if variant.engine is not None else None
            budget = guarded(lambda: task.budget(role), None, self.limit)
            variant.donor_on_engine[donor] = _on_engine(variant.engine, task, None, model, budget, self.limit)
        return variant.donor_on_engine[donor]

    def _side(self, variant: _Variant, role: str) -> Side | None:
        """A role's side: measured for this variant, or (once this model's probes have
        drawn PROBE_ELEMENTS) the first measured variant's of the same signature."""
        if not variant.measured and variant.signature is not None:
            variant.measured = True
            shared = _SIDES.get(variant.signature)
            if shared is None or self._probed < PROBE_ELEMENTS:
                sides, elements = guarded(lambda: _measure(variant.task), ({}, 0.0), self.limit)
                self._probed += elements
                shared = _SIDES.setdefault(variant.signature, sides)
                variant.sides.update(sides)
            else:
                variant.sides.update(shared)
        return variant.sides.get(role)

    def prepare(self, specs: Iterable[RunSpec]) -> None:
        """Measure every task variant of `specs` and decide every run's path, one fresh model
        per variant for all its strategies."""
        by_task: dict[str, tuple[Task, dict[str, Strategy]]] = {}
        for spec in specs:
            entry = by_task.setdefault(self._key(spec.task), (spec.task, {}))
            entry[1].setdefault(self._key(spec.strategy), spec.strategy)
        for task, strategies in by_task.values():
            self._variant(task, strategies.values())

    # -- costs ------------------------------------------------------------------------------
    def run(self, spec: RunSpec) -> float:
        """One run: its target's training, evaluation and overhead, on its path."""
        variant = self._variant(spec.task, [spec.strategy])
        target = self._side(variant, "target")
        if target is None:
            return UNKNOWN_RUN_SECONDS
        alone = target.seconds + RUN_SECONDS  # on the per-run loop
        speedup = engine_speedup(variant.engine)[0] if variant.on_engine[self._key(spec.strategy)] else 1.0
        seconds = alone / speedup
        if plans_with_data(spec.strategy):
            seconds += (PLANS_WITH_DATA - 1) * alone / speedup**0.5
        if type(spec.strategy).batch_regularizer is not Strategy.batch_regularizer:
            seconds += target.steps * (ENGINE_REGULARIZER_STEP_SECONDS if speedup > 1.0 else REGULARIZER_STEP_SECONDS)
        return seconds

    def donor(self, task: Task, donor: str) -> float:
        """Training one donor of `task`, and drawing its data where that is not the
        target's (on the engine where the engine takes it)."""
        variant = self._variant(task)
        role = DONORS.get(donor, ("source",))[0]
        side = self._side(variant, role)
        if side is None:
            return UNKNOWN_RUN_SECONDS
        seconds = side.seconds / engine_speedup(variant.engine)[1] if self._donor_on_engine(variant, donor) else side.seconds
        return seconds + (side.data_seconds if role != "target" else 0.0)

    def group(self, group) -> float:
        """A group: its target data, its runs, and every donor it trains, once."""
        variant = self._variant(group.task)
        target = self._side(variant, "target")
        data = target.data_seconds if target is not None else 0.0
        return data + sum(self.run(spec) for spec in group.specs) + sum(self.donor(group.task, d) for d in group.donors_needed())

    def groups(self, groups: Sequence) -> list[float]:
        """Every group's cost, the variants measured first."""
        self.prepare(spec for group in groups for spec in group.specs)
        return [self.group(group) for group in groups]


def plans_with_data(strategy: Strategy) -> bool:
    """Whether the strategy overrides `plan_with_data` (it may train models while planning)."""
    return type(strategy).plan_with_data is not Strategy.plan_with_data


def clear() -> None:
    """Forget every measured task variant (tests; a plugin file reloaded under one key)."""
    _VARIANTS.clear()
    _SIDES.clear()
