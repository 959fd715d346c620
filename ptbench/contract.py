"""The contract every strategy and task keeps, as named checks.

Modelled on scikit-learn's `estimator_checks`: each check is a function `check_<what>(cls,
env)` that returns one sentence saying what it verified, raises `CheckFailed` saying what is
wrong, or raises `NotApplicable` when the plugin has nothing it could be checked on. The same
functions serve `python -m ptbench submit FILE` (one contributor's file, in a separate
process) and `tests/plugins/test_contract.py` (every registered plugin, built-in or installed), so a
file that passes `submit` passes the test suite and the other way round.

Checks build fresh models from the task itself, draw from (seed, role) streams and, where a
strategy must look at target data first, train with a short step budget: they check the
contract (shapes, determinism, purity), not whether a strategy is any good.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import re
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .api import Diverged, RunSpec, Strategy, Task, TrainBudget, TransferModel, TransferPlan
from .errors import PtbenchError
from .spec import parse_spec
from .registry import Registry
from .rng import RandomStreams
from .run import exits, protocol
from .run.group import DONORS
from .run.training import _optimizer, loss_fn, train


class CheckFailed(AssertionError):
    """The plugin breaks the contract; the message says how."""


class NotApplicable(Exception):
    """Nothing to check this on (a task whose data is not on disk, say)."""


@dataclass
class CheckResult:
    check: str
    passed: bool | None  # None: not applicable
    detail: str
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class CheckEnv:
    """What checks compare against and how hard they try."""

    registry: Registry  # names must be unique in it; its tasks' models are what plans must fit
    origin: Path | None = None  # the file being submitted: a name registered from it is no clash
    seed: int = 0
    timeout: float = 60.0  # the finished-run check's time limit for the target run
    plan_steps: int = 20  # step budget of trainings inside plan_with_data during checks
    max_instances: int = 8  # grid instances whose plans are checked
    smoke_suite: str = "smoke"  # the suite whose first task the finished-run check runs
    device: str = "cpu"
    _data: dict = field(default_factory=dict, repr=False)  # (task key, seed) -> target data


Check = Callable[[type, CheckEnv], str]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SCALARS = (bool, int, float, str, type(None))


# --------------------------------------------------------------------------- both kinds


def check_name(cls: type, env: CheckEnv) -> str:
    """A name usable in a SPEC, and not taken by another registered plugin of the same kind."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CheckFailed(
            f"name {name!r} is not usable in a SPEC: use letters, numerals and - _ . + (e.g. 'my-strategy')"
        )
    kind = "tasks" if issubclass(cls, Task) else "strategies"
    other = getattr(env.registry, kind).get(name)
    if other is None:
        return f"{name!r} is not taken by any registered {kind[:-1] if kind == 'tasks' else 'strategy'}"
    if other is cls or (env.origin is not None and _source_file(other) == env.origin.resolve()):
        return f"{name!r} is registered once, from this file"
    raise CheckFailed(
        f"{name!r} is already taken by {env.registry.origins.get((kind, name), other.__module__)}; choose another name"
    )


def check_param_grid(cls: type, env: CheckEnv) -> str:
    """`params` maps identifiers to non-empty lists of plain values; every grid instance
    validates; instance names are distinct and paste back into a SPEC as the same instance."""
    params = getattr(cls, "params", None)
    if not isinstance(params, dict):
        raise CheckFailed(f"params must be a dict of name -> list of values, got {type(params).__name__}")
    base = Task if issubclass(cls, Task) else Strategy
    for key, grid in params.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise CheckFailed(f"parameter name {key!r} must be a public Python identifier")
        if hasattr(base, key):
            raise CheckFailed(f"parameter {key!r} would hide {base.__name__}.{key}; rename it")
        if not isinstance(grid, (list, tuple)) or not grid:
            raise CheckFailed(f"parameter {key!r}: its grid must be a non-empty list, got {grid!r}")
        for value in grid:
            if not isinstance(value, SCALARS):
                raise CheckFailed(f"parameter {key!r}: {value!r} is not a bool, int, float, str or None")
            if isinstance(value, float) and not math.isfinite(value):
                raise CheckFailed(f"parameter {key!r}: {value!r} is not finite")
    try:
        instances = cls.grid()
    except PtbenchError as err:
        raise CheckFailed(f"the grid has an instance its own validate() rejects: {err}") from None
    names = [i.instance_name for i in instances]
    if len(set(names)) != len(names):
        raise CheckFailed(f"two grid instances share a name: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    for instance in instances[:64]:
        try:
            name, fixed = parse_spec(instance.instance_name)
            again = cls.expand(fixed)
        except PtbenchError as err:
            raise CheckFailed(f"instance name {instance.instance_name!r} does not parse back: {err}") from None
        if len(again) != 1 or again[0].key != instance.key:
            raise CheckFailed(f"instance name {instance.instance_name!r} does not paste back as the same instance")
    return f"{len(instances)} grid instance(s), each validates and round-trips through its SPEC"


# --------------------------------------------------------------------------- strategies


def check_plan_shapes(cls: type, env: CheckEnv) -> str:
    """For every registered task's models, every plan (a) is a TransferPlan with boolean masks
    of its parameters' shapes, and value rules and learning-rate scales whose tensors fit
    their parameters (one number, one per filter or one per entry), (b) copies (or reads
    through a rule) only parameters the donor has with the same shape, (c) applies, and (d)
    keeps notes that can be stored (JSON)."""
    checked, skipped = [], []
    instances = _instances(cls, env)
    for task in _tasks(env):
        for strategy in instances:
            try:
                plan, donor, target = _plan_for(strategy, task, env, env.seed)
            except NotApplicable:
                skipped.append(task.instance_name)
                break
            where = f"{strategy.instance_name} on {task.instance_name}"
            if not isinstance(plan, TransferPlan):
                raise CheckFailed(f"{where}: plan returned {type(plan).__name__}, not a TransferPlan")
            try:
                plan.check_shapes(target)
            except ValueError as err:
                raise CheckFailed(f"{where}: {err}") from None
            donor_shapes = {n: p.shape for n, p in donor.named_parameters()}
            for name, mask in plan.copy.items():
                if bool(mask.any()) and donor_shapes.get(name) != target.get_parameter(name).shape:
                    raise CheckFailed(f"{where}: copies {name!r}, which the donor model lacks or has in another shape")
            for name, rule in plan.init.items():
                if bool((rule.donor != 0).any()) and donor_shapes.get(name) != target.get_parameter(name).shape:
                    raise CheckFailed(f"{where}: the value rule of {name!r} reads the donor's {name!r}, which the donor model lacks or has in another shape")
            plan.apply(donor, copy.deepcopy(target))
            try:
                json.dumps(plan.notes)
            except (TypeError, ValueError) as err:
                raise CheckFailed(f"{where}: plan.notes cannot be stored as JSON ({err})") from None
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable(f"no task to check plans on (without their data on disk: {', '.join(skipped) or 'none'})")
    out = f"plans of {len(instances)} instance(s) fit the models of {len(checked)} task(s): {', '.join(checked)}"
    return out + (f"; not checked, data not on disk: {', '.join(skipped)}" if skipped else "")


def check_source_unmodified(cls: type, env: CheckEnv) -> str:
    """Planning only reads the donor (the source model) and the fresh target model: the
    harness reuses one source model for every strategy of a seed, and the fresh target is
    the initialisation every strategy shares."""
    checked = []
    for task in _tasks(env):
        for strategy in _instances(cls, env):
            try:
                plan, donor, target, before = _plan_for(strategy, task, env, env.seed, snapshot=True)
            except NotApplicable:
                break
            for key, role, model in (("donor", f"{strategy.donor} (donor)", donor), ("fresh", "fresh target", target)):
                changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[key][n])]
                if changed:
                    raise CheckFailed(
                        f"{strategy.instance_name} on {task.instance_name} changed the {role} model's {changed[0]!r} while planning; "
                        "plan() must only read the models (copy the donor first if you need to train something)"
                    )
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable("no task to plan on")
    return f"source and fresh target models unchanged by planning on {len(checked)} task(s)"


def check_plan_deterministic(cls: type, env: CheckEnv) -> str:
    """The same seed gives the same plan: pairing and reproducibility rest on it, so every
    random draw must come from the generator (or the context's streams) it is given."""
    checked = []
    for task in _tasks(env):
        for strategy in _instances(cls, env):
            try:
                first = _plan_for(strategy, task, env, env.seed)[0]
                second = _plan_for(strategy, task, env, env.seed)[0]
            except NotApplicable:
                break
            difference = _plan_difference(first, second)
            if difference:
                raise CheckFailed(
                    f"{strategy.instance_name} on {task.instance_name}: two plans for seed {env.seed} differ ({difference}); "
                    "draw randomness only from the `rng` argument or context.streams"
                )
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable("no task to plan on")
    return f"equal plans for equal seeds on {len(checked)} task(s)"


def check_finished_run(cls: type, env: CheckEnv) -> str:
    """The default instance runs to the end through the real harness (grouping, source model,
    training, store) on the smoke suite's first task, within the time limit."""
    from .results.store import Store
    from .sweep.plan import expand_task_specs, load_suite
    from .sweep.sweep import run_sweep
    from ptbench.run.options import RunOptions

    suite = load_suite(env.smoke_suite)
    task = expand_task_specs(env.registry, suite.sweeps[0].tasks[:1])[0]
    strategy = cls()
    with tempfile.TemporaryDirectory() as tmp:
        with Store(Path(tmp) / "check.db") as store:
            run_sweep([RunSpec(task, strategy, env.seed)], store, RunOptions(device=env.device, timeout=env.timeout), progress=False)
            row = store.frame().iloc[0]
    if row["status"] != "ok":
        raise CheckFailed(f"{strategy.instance_name} on {task.instance_name}: run ended {row['status']}: {row['error']}")
    return (
        f"{strategy.instance_name} on {task.instance_name} finished ok in {row['target_seconds']:.2f}s "
        f"(limit {env.timeout:g}s), target accuracy {row['target_acc']:.3f}"
    )


def check_value_rule(cls: type, env: CheckEnv) -> str:
    """Value rules (`plan.init`) (a) are finite, with orthonormal `remove` rows, and read the
    donor only in entries the parameter's `copy` mask declares (`TransferPlan.check_value_rules`);
    (b) do so when applied: the target a plan starts is the same when the donor's undeclared
    entries hold other values; and (c) smuggle no donor values past the rule: the part of a
    start that does not go through the rule's `donor` coefficient (fresh * F + offset) does not
    reproduce a donor filter (equal up to scale). Chosen for strategies whose plans have
    value rules."""
    checked, rules = [], 0
    for task in _tasks(env):
        for strategy in _instances(cls, env):
            try:
                plan, donor, target = _plan_for(strategy, task, env, env.seed)
            except NotApplicable:
                break
            if not isinstance(plan, TransferPlan) or not plan.init:
                continue
            where = f"{strategy.instance_name} on {task.instance_name}"
            rules += len(plan.init)
            try:
                plan.check_shapes(target)
                plan.check_value_rules(target)
            except ValueError as err:
                raise CheckFailed(f"{where}: {err}") from None
            name = _reads_undeclared(plan, donor, target)
            if name:
                raise CheckFailed(
                    f"{where}: the start of {name!r} changes when the donor's undeclared entries change: the plan reads the donor "
                    "outside the entries plan.copy declares; declare them in plan.copy"
                )
            smuggled = _smuggled(plan, donor, target)
            if smuggled:
                raise CheckFailed(
                    f"{where}: the value rule of {smuggled} reproduces the donor's values outside its donor coefficient "
                    "(its fresh or offset term equals a donor filter up to scale); let donor values in only through the rule's "
                    "`donor` coefficient, on entries declared in plan.copy"
                )
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable("no task to plan on")
    return f"{rules} value rule(s) finite, reading only declared donor entries and carrying no donor values, on {len(checked)} task(s)"


def check_lr_scale(cls: type, env: CheckEnv) -> str:
    """Learning-rate scales (`plan.lr_scale`) are finite and non-negative (0 freezes an
    entry; a negative scale would climb the loss, a non-finite one destroy the weights).
    Chosen for strategies whose plans scale learning rates."""
    checked, scales = [], 0
    for task in _tasks(env):
        for strategy in _instances(cls, env):
            try:
                plan = _plan_for(strategy, task, env, env.seed)[0]
            except NotApplicable:
                break
            if not isinstance(plan, TransferPlan):
                continue
            scales += len(plan.lr_scale)
            try:
                plan.check_lr_scales()
            except ValueError as err:
                raise CheckFailed(f"{strategy.instance_name} on {task.instance_name}: {err}") from None
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable("no task to plan on")
    return f"{scales} learning-rate scale(s) finite and non-negative on {len(checked)} task(s)"


REGULARIZER_STEPS = 3


def check_regularizer(cls: type, env: CheckEnv) -> str:
    """The strategy's regularisers (`regularizer`, `batch_regularizer`) return None or a
    finite scalar tensor, and leave the donor model (parameters and buffers) and the reference
    parameters they are handed as they were: a few training steps through the harness's own
    loop, with the hooks, on every task the strategy plans on. Chosen for strategies that
    override a regulariser hook."""
    checked = []
    for task in _tasks(env):
        for strategy in _instances(cls, env):
            try:
                plan, donor, target = _plan_for(strategy, task, env, env.seed)
                data = _target_data(task, env, env.seed)
            except NotApplicable:
                break
            where = f"{strategy.instance_name} on {task.instance_name}"
            model = copy.deepcopy(target)
            plan.apply(donor, model)
            reference = protocol.snapshot(donor)
            before = {**protocol.snapshot(donor), **{f"buffer {n}": b.clone() for n, b in donor.named_buffers()}}
            kept = {n: t.clone() for n, t in reference.items()}
            budget = dataclasses.replace(task.budget("target"), steps=REGULARIZER_STEPS)
            try:
                train(model, data.train, budget, RandomStreams(env.seed).torch("target-batches"), plan, strategy, reference, donor=donor)
            except ValueError as err:
                raise CheckFailed(f"{where}: {err}") from None
            except Diverged as err:
                raise CheckFailed(f"{where}: training with its regulariser diverged within {REGULARIZER_STEPS} steps ({err}); a regulariser must return a finite scalar") from None
            after = {**protocol.snapshot(donor), **{f"buffer {n}": b for n, b in donor.named_buffers()}}
            changed = [n for n in before if not torch.equal(before[n], after[n])]
            if changed:
                raise CheckFailed(f"{where}: its regulariser modified the donor model's {changed[0]!r} while training; regularisers must only read the donor")
            changed = [n for n in kept if not torch.equal(kept[n], reference[n])]
            if changed:
                raise CheckFailed(f"{where}: its regulariser modified the donor's reference parameter {changed[0]!r} in place; regularisers must only read it")
        else:
            checked.append(task.instance_name)
    if not checked:
        raise NotApplicable("no task to train on")
    return f"regulariser(s) return scalars and leave the donor as it was, {REGULARIZER_STEPS} steps on {len(checked)} task(s)"


# --------------------------------------------------------------------------- tasks


def check_task_models(cls: type, env: CheckEnv) -> str:
    """Both roles' models are TransferModels whose layers name real parameters, whose filter
    shapes lead those parameters' shapes, and of which at least one transfers."""
    task = cls()
    models = {}
    for role in ("source", "target"):
        model = _model(task, role, RandomStreams(env.seed).torch(f"{role}-init"))
        if not isinstance(model, TransferModel):
            raise CheckFailed(f"model({role!r}) returned {type(model).__name__}, not a ptbench.api.TransferModel")
        layers = model.transfer_layers()
        if not layers:
            raise CheckFailed(f"model({role!r}).transfer_layers() is empty: nothing could ever be transferred")
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            raise CheckFailed(f"model({role!r}) has two transfer layers named {sorted(n for n in names if names.count(n) > 1)[0]!r}")
        params = dict(model.named_parameters())
        for layer in layers:
            for pname in layer.params:
                if pname not in params:
                    raise CheckFailed(f"layer {layer.name!r} names parameter {pname!r}, which model({role!r}) lacks")
                lead = tuple(params[pname].shape[: len(layer.filter_shape)])
                if lead != tuple(layer.filter_shape):
                    raise CheckFailed(f"layer {layer.name!r}: {pname!r} has shape {tuple(params[pname].shape)}, which does not start with filter_shape {tuple(layer.filter_shape)}")
            n_filters = math.prod(layer.filter_shape)
            for pname, dim in layer.follow:
                if pname not in params or dim >= params[pname].dim() or params[pname].shape[dim] != n_filters:
                    raise CheckFailed(f"layer {layer.name!r} follows {pname!r} along dim {dim}, which is not of size {n_filters}")
        models[role] = model
    copied = TransferPlan.full(models["source"], models["target"]).fraction_copied()
    if copied == 0:
        raise CheckFailed("no layer transfers between the source and target models (no parameter of equal name and shape)")
    return f"{len(models['target'].transfer_layers())} transfer layer(s); full transfer copies {copied:.0%} of the target's parameters"


def check_task_deterministic(cls: type, env: CheckEnv) -> str:
    """Equal generators give equal models; equal seeds give equal data, and the target data do
    not depend on whether the source data were drawn first (strategies are paired on them)."""
    task = cls()
    a = _model(task, "target", RandomStreams(env.seed).torch("target-init"))
    b = _model(task, "target", RandomStreams(env.seed).torch("target-init"))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        if not torch.equal(p, q):
            raise CheckFailed(f"two models from equal generators differ in {name!r}: draw initial values from the generator given")
    try:
        alone = task.data("target", RandomStreams(env.seed))
    except PtbenchError as err:
        return f"models deterministic; data not checked ({err})"
    streams = RandomStreams(env.seed)
    task.data("source", streams)
    after_source = task.data("target", streams)
    for part in ("train", "test"):
        x, y = getattr(alone, part), getattr(after_source, part)
        if not (torch.equal(x.x, y.x) and torch.equal(x.y, y.y)):
            raise CheckFailed(
                f"target {part} data differ between two draws with seed {env.seed} (one after the source data): "
                "draw every sample from streams.torch(role) with a role of its own"
            )
    return "models and data deterministic; target data independent of the source draw"


def check_task_budget(cls: type, env: CheckEnv) -> str:
    """Each role's budget is a TrainBudget the training loop accepts."""
    task = cls()
    out = []
    for role in ("source", "target"):
        budget = task.budget(role)
        if not isinstance(budget, TrainBudget):
            raise CheckFailed(f"budget({role!r}) returned {type(budget).__name__}, not a TrainBudget")
        if not isinstance(budget.steps, int) or budget.steps < 1:
            raise CheckFailed(f"budget({role!r}).steps must be a positive int, got {budget.steps!r}")
        if not (budget.lr > 0 and math.isfinite(budget.lr)):
            raise CheckFailed(f"budget({role!r}).lr must be positive, got {budget.lr!r}")
        if budget.batch_size is not None and budget.batch_size < 1:
            raise CheckFailed(f"budget({role!r}).batch_size must be None or positive, got {budget.batch_size!r}")
        try:
            _optimizer(budget, [torch.nn.Parameter(torch.zeros(1))])
            if budget.loss == "cross_entropy":
                loss_fn(budget.loss, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
            else:
                loss_fn(budget.loss, torch.zeros(2), torch.ones(2))
        except ValueError as err:
            raise CheckFailed(f"budget({role!r}): {err}") from None
        out.append(f"{role}: {budget.steps} steps {budget.optimizer} lr {budget.lr:g}")
    return "; ".join(out)


STRATEGY_CHECKS: list[Check] = [
    check_name,
    check_param_grid,
    check_plan_shapes,
    check_value_rule,
    check_lr_scale,
    check_source_unmodified,
    check_plan_deterministic,
    check_regularizer,
    check_finished_run,
]
TASK_CHECKS: list[Check] = [check_name, check_param_grid, check_task_models, check_task_deterministic, check_task_budget]


def _overrides_a_regularizer(cls: type) -> bool:
    return cls.regularizer is not Strategy.regularizer or cls.batch_regularizer is not Strategy.batch_regularizer


#: Checks chosen by capability (as scikit-learn's estimator checks are): run only on the
#: strategies that use the surface they check. The others run on every strategy.
CAPABILITY: dict[Check, Callable[[type], bool]] = {
    check_value_rule: lambda cls: "init" in plan_surfaces(cls),
    check_lr_scale: lambda cls: "lr_scale" in plan_surfaces(cls),
    check_regularizer: _overrides_a_regularizer,
}


def checks_for(cls: type) -> list[Check]:
    """The checks that apply to a plugin class: every task check; every strategy check but
    those chosen by capability (`CAPABILITY`) that the strategy does not use."""
    if issubclass(cls, Strategy):
        return [check for check in STRATEGY_CHECKS if check not in CAPABILITY or CAPABILITY[check](cls)]
    if issubclass(cls, Task):
        return TASK_CHECKS
    raise TypeError(f"{cls!r} is neither a Task nor a Strategy")


_SURFACES: dict[type, frozenset[str]] = {}
_PROBE_ENV: list[CheckEnv] = []


def plan_surfaces(cls: type) -> frozenset[str]:
    """Which optional plan fields ("init", "lr_scale") the strategy's plans use: its grid
    instances (up to CheckEnv.max_instances) planned on the first registered task they plan
    on. A strategy whose planning fails here is assumed to use both (the checks then say
    what fails)."""
    if cls not in _SURFACES:
        if not _PROBE_ENV:
            from .registry import default_registry

            _PROBE_ENV.append(CheckEnv(default_registry()))
        env = _PROBE_ENV[0]
        found: set[str] = set()
        try:
            instances = _instances(cls, env)
            for task in _tasks(env):
                try:
                    plans = [_plan_for(strategy, task, env, env.seed)[0] for strategy in instances]
                except NotApplicable:
                    continue
                for plan in plans:
                    found |= {kind for kind in ("init", "lr_scale") if getattr(plan, kind, None)}
                break
        except Exception:
            found = {"init", "lr_scale"}
        _SURFACES[cls] = frozenset(found)
    return _SURFACES[cls]


def check_name_of(check: Check) -> str:
    return check.__name__.removeprefix("check_")


def run_check(check: Check, cls: type, env: CheckEnv) -> CheckResult:
    """One check as a result; anything raised other than NotApplicable is a failure, reported
    in one line with where it was raised (a crash in the plugin is a broken contract too, and
    so is plugin code's SystemExit or KeyboardInterrupt). The user's own Ctrl-C, received by
    this process while the check runs, is re-raised (`ptbench.run.exits`)."""
    start = time.perf_counter()
    with exits.watch(signals=(signal.SIGINT,), interruptible=True):
        try:
            detail, passed = check(cls, env), True
        except CheckFailed as err:
            detail, passed = str(err), False
        except NotApplicable as err:
            detail, passed = str(err), None
        except BaseException as err:
            exits.reraise_users(err)
            detail, passed = _one_line(err), False
    return CheckResult(check_name_of(check), passed, detail, time.perf_counter() - start)


def run_checks(cls: type, env: CheckEnv, on_start: Callable[[str], None] | None = None) -> Iterator[CheckResult]:
    """The checks `checks_for(cls)` lists, in that order, each as a result. `on_start(name)`
    is called as each begins (what `submit`'s checking process records, so that a check that
    ends the process is named). Whether a capability check applies is decided just before it
    would run, under the same guard as a check: a strategy whose planning exits there gets the
    check, which then fails saying so."""
    for check in _all_checks(cls):
        if check in CAPABILITY and not _applies(check, cls):
            continue
        if on_start is not None:
            on_start(check_name_of(check))
        yield run_check(check, cls, env)


def listed_checks(cls: type) -> list[Check]:
    """`checks_for(cls)`, with each capability decided under a check's guard (planning that
    raises SystemExit there makes the check apply instead of ending the caller)."""
    return [check for check in _all_checks(cls) if check not in CAPABILITY or _applies(check, cls)]


def required_checks(kind: str) -> list[str]:
    """The names of the checks every plugin of `kind` ("strategy", "task") gets, whatever it
    does: a verdict without a result for each of them is no pass (`submit` asks for them
    from outside the checking process, which plugin code may have tampered with)."""
    checks = STRATEGY_CHECKS if kind == "strategy" else TASK_CHECKS
    return [check_name_of(check) for check in checks if check not in CAPABILITY]


def _all_checks(cls: type) -> list[Check]:
    if issubclass(cls, Strategy):
        return STRATEGY_CHECKS
    if issubclass(cls, Task):
        return TASK_CHECKS
    raise TypeError(f"{cls!r} is neither a Task nor a Strategy")


def _applies(check: Check, cls: type) -> bool:
    try:
        return bool(CAPABILITY[check](cls))
    except BaseException as err:  # planning that exits or crashes: the check applies, and says so
        exits.reraise_users(err)
        return True


# --------------------------------------------------------------------------- helpers


def _one_line(err: BaseException) -> str:
    if not isinstance(err, Exception):  # SystemExit, KeyboardInterrupt from plugin code
        return exits.exit_text(err)
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}".replace("\n", " ")


def _source_file(cls: type) -> Path | None:
    try:
        return Path(inspect.getsourcefile(cls) or "").resolve()
    except TypeError:
        return None


def _instances(cls: type, env: CheckEnv) -> list[Strategy]:
    try:
        return cls.grid()[: env.max_instances]
    except PtbenchError as err:
        raise CheckFailed(f"cannot build instances: {err}") from None


def _tasks(env: CheckEnv) -> list[Task]:
    """The default instance of every registered task."""
    return [env.registry.tasks[name]() for name in sorted(env.registry.tasks)]


def _model(task: Task, role: str, generator: torch.Generator) -> TransferModel:
    """task.model, with "this task needs its files on disk" turned into NotApplicable: some
    tasks learn their input shape and classes from the data files."""
    try:
        return task.model(role, generator)
    except PtbenchError as err:
        raise NotApplicable(f"needs its data on disk: {err}") from None


def _uses_data(strategy: Strategy) -> bool:
    return type(strategy).plan_with_data is not Strategy.plan_with_data or bool(strategy.needs_extras)


def _target_data(task: Task, env: CheckEnv, seed: int):
    key = (task.key, seed)
    if key not in env._data:
        try:
            env._data[key] = task.data("target", RandomStreams(seed)).to(env.device)
        except PtbenchError as err:
            raise NotApplicable(f"needs its data on disk: {err}") from None
    return env._data[key]


def _plan_for(strategy: Strategy, task: Task, env: CheckEnv, seed: int, snapshot: bool = False):
    """(plan, donor, fresh target[, snapshots]) planned by the harness's own protocol
    (`ptbench.run.protocol.make_plan`) for this seed, with an untrained donor and, for
    data-hungry strategies, a short training budget. A broken protocol is a failed check."""
    streams = RandomStreams(seed)
    if strategy.donor is not None and strategy.donor not in DONORS:
        raise CheckFailed(f"donor is {strategy.donor!r}; use one of: {', '.join(DONORS)} (or None: inherit nothing)")
    role, init = DONORS[strategy.donor or "source"]
    donor = _model(task, role, streams.torch(init)).to(env.device)
    target = _model(task, "target", streams.torch("target-init")).to(env.device)
    before = {"donor": protocol.snapshot(donor), "fresh": protocol.snapshot(target)}
    budget = task.budget("target")
    short = dataclasses.replace(budget, steps=min(budget.steps, env.plan_steps))
    data = _target_data(task, env, seed) if _uses_data(strategy) else None
    context = protocol.plan_context(task, data.train if data else None, short, streams, env.device, extras=data.extras if data else None)
    try:
        plan = protocol.make_plan(strategy, donor, target, streams, context)
    except protocol.PlanError as err:
        if err.kind == "extras":  # the task lacks what the strategy needs: not checkable there
            raise NotApplicable(str(err)) from None
        # A model changed while planning is source_unmodified's finding (the caller that
        # asks for snapshots); the other checks go on with the plan, each naming its step.
        if err.plan is None or (snapshot and err.kind in ("donor", "target")):
            raise CheckFailed(f"{strategy.instance_name} on {task.instance_name}: {err}") from None
        plan = err.plan
    return (plan, donor, target, before) if snapshot else (plan, donor, target)


def _plan_difference(a: TransferPlan, b: TransferPlan) -> str:
    for kind in ("copy", "freeze", "lr_scale"):
        ma, mb = getattr(a, kind), getattr(b, kind)
        if set(ma) != set(mb):
            return f"{kind} masks name different parameters: {sorted(set(ma) ^ set(mb))}"
        for name in ma:
            if not torch.equal(ma[name].cpu(), mb[name].cpu()):
                return f"{kind} of {name!r}" if kind == "lr_scale" else f"{kind} mask of {name!r}"
    if set(a.init) != set(b.init):
        return f"value rules name different parameters: {sorted(set(a.init) ^ set(b.init))}"
    for name, rule in a.init.items():
        ta, tb = rule.tensors(), b.init[name].tensors()
        if set(ta) != set(tb) or any(not torch.equal(ta[k].cpu(), tb[k].cpu()) for k in ta):
            return f"value rule of {name!r}"
    if a.notes != b.notes:
        return "notes"
    return ""


def _reads_undeclared(plan: TransferPlan, donor: torch.nn.Module, target: torch.nn.Module) -> str:
    """The first parameter whose planned start changes when the donor's entries that the plan
    does not declare (`copy`) are given other values ("" when none does)."""
    other = copy.deepcopy(donor)
    generator = torch.Generator().manual_seed(20190101)
    with torch.no_grad():
        for name, param in other.named_parameters():
            noise = 1.0 + torch.randn(param.shape, generator=generator, dtype=param.dtype).to(param.device)
            declared = plan.copy.get(name)
            if declared is None or declared.shape != param.shape:  # no entry of it declared
                changed = param + noise
            else:
                changed = torch.where(declared.to(param.device), param, param + noise)
            param.copy_(changed)
    first, second = copy.deepcopy(target), copy.deepcopy(target)
    plan.apply(donor, first)
    plan.apply(other, second)
    for (name, p), q in zip(first.named_parameters(), second.parameters()):
        if not torch.equal(p, q):
            return name
    return ""


def _filter_dims(target: torch.nn.Module, name: str) -> int:
    for layer in target.transfer_layers():
        if name in layer.params:
            return len(layer.filter_shape)
    return 0


def _smuggled(plan: TransferPlan, donor: torch.nn.Module, target: torch.nn.Module) -> str:
    """'W' (filter 3) when a rule's non-donor part (fresh * F + offset) equals a donor filter
    up to scale ("" when none does). Rows shorter than 4 entries are compared as one vector
    over the whole parameter (a bias alone is one number per filter)."""
    donor_params = dict(donor.named_parameters())
    for name, rule in plan.init.items():
        if name not in donor_params:
            continue
        fresh = target.get_parameter(name).detach()
        D = donor_params[name].detach()
        if D.shape != fresh.shape:
            continue
        part = dataclasses.replace(rule, donor=torch.tensor(0.0), remove=None, matrix=None).value(None, fresh)
        dims = _filter_dims(target, name)
        rows = math.prod(D.shape[:dims]) if dims else 1
        if D.numel() // max(rows, 1) < 4:
            rows = 1
        if D.numel() < 4:
            continue
        a, b = part.reshape(rows, -1).to(torch.float64), D.reshape(rows, -1).to(torch.float64)
        na, nb = a.norm(dim=1), b.norm(dim=1)
        cosine = (a * b).sum(dim=1).abs() / (na * nb).clamp_min(1e-300)
        hit = (na > 0) & (nb > 0) & (cosine > 1 - 1e-6)
        if bool(hit.any()):
            return f"{name!r} (filter {int(torch.nonzero(hit)[0])})" if rows > 1 else repr(name)
    return ""
