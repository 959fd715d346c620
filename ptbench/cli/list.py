"""`ptbench list`: what can be run."""

from __future__ import annotations

import argparse

from ptbench.errors import PtbenchError, closest
from ptbench.spec import format_value
from ptbench.registry import default_registry
from ptbench.sweep.plan import builtin_suites, expand, expand_strategy_specs, expand_task_specs, load_suite, task_labels
from ptbench.cli._common import add_plugins

NAME = "list"
HELP = "list tasks, strategies and suites with their parameters"
DESCRIPTION = """\
What can be run: every registered task and strategy with its parameters (the first value
of each is its default), and the built-in suites. `list suites NAME` (a built-in name or a
suite .toml) prints that suite's sweeps, with their task labels and run counts;
`list tasks NAME` / `list strategies NAME` one plugin.

examples:
  python -m ptbench list
  python -m ptbench list suites quick
  python -m ptbench list strategies partial-filters
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["tasks", "strategies", "suites"], help="only this kind (default: all)")
    p.add_argument("name", nargs="?", metavar="NAME", help="only this one (a suite: its sweeps and run count)")
    add_plugins(p)


def _describe(cls) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    grid = ", ".join(f"{k}={'|'.join(format_value(v) for v in vals)}" for k, vals in cls.params.items())
    # A plugin whose defaults depend on another parameter (an image task's `tier`) says what
    # they are in `param_notes()`: the grid alone would show them as None.
    notes = cls.param_notes() if callable(getattr(cls, "param_notes", None)) else []
    return (f"  {cls.name:<18} {doc[0] if doc else ''}\n" + (f"  {'':<18} params: {grid}\n" if grid else "")
            + "".join(f"  {'':<18} {line}\n" for line in notes))


def describe_suite(name: str, registry) -> str:
    """A suite's sweeps: tasks (with labels), strategies, seeds and run counts."""
    suite = load_suite(name)
    specs = expand(suite, registry)
    labels = task_labels(suite, registry)
    out = [f"suite {suite.name}: {suite.description}" if suite.description else f"suite {suite.name}",
           f"  {len(specs)} runs; seeds 0..{suite.seeds - 1} unless a sweep says otherwise; baseline {suite.baseline}"
           + (f"; report {suite.report}" if suite.report else "")]
    for i, sweep in enumerate(suite.sweeps, 1):
        tasks = expand_task_specs(registry, sweep.tasks)
        strategies = expand_strategy_specs(registry, sweep.strategies)
        seeds = sweep.seeds or suite.seeds
        out += ["", f"  sweep {i}: {len(tasks)} task variant(s) x {len(strategies)} strategy variant(s) x {seeds} seed(s) "
                f"= {len(tasks) * len(strategies) * seeds} runs"]
        out.append("    tasks:")
        for spec in sweep.tasks:
            out.append(f"      {spec}")
            for task in expand_task_specs(registry, [spec]):
                label = labels.get(task.instance_name)
                if label or task.instance_name != spec:
                    out.append(f"        {task.instance_name}" + (f"   label: {label}" if label else ""))
        out.append("    strategies:")
        out += [f"      {spec}" for spec in sweep.strategies]
    duplicates = sum((len(expand_task_specs(registry, sw.tasks)) * len(expand_strategy_specs(registry, sw.strategies))
                      * (sw.seeds or suite.seeds)) for sw in suite.sweeps) - len(specs)
    if duplicates:
        out += ["", f"  {duplicates} run(s) appear in more than one sweep and run once"]
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    registry = default_registry(args.plugin)
    if args.name:
        if not args.what:
            raise PtbenchError("give the kind before the name: `list suites NAME`, `list tasks NAME` or `list strategies NAME`")
        if args.what == "suites":
            print(describe_suite(args.name, registry))
            return 0
        plugins = getattr(registry, args.what)
        if args.name not in plugins:
            raise PtbenchError(f"unknown {args.what[:-1]} {args.name!r}{closest(args.name, plugins)}; `python -m ptbench list {args.what}` lists them")
        print(_describe(plugins[args.name]).rstrip("\n"))
        return 0
    kinds = [args.what] if args.what else ["tasks", "strategies", "suites"]
    out = []
    for kind in kinds:
        out.append(f"{kind}:")
        if kind == "suites":
            for name in builtin_suites():
                suite = load_suite(name)
                out.append(f"  {name:<18} {suite.description}")
        else:
            for name in sorted(getattr(registry, kind)):
                out.append(_describe(getattr(registry, kind)[name]).rstrip("\n"))
        out.append("")
    print("\n".join(out).rstrip())
    return 0
