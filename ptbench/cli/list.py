"""`ptbench list`: what can be run."""

from __future__ import annotations

import argparse

from ptbench.spec import format_value
from ptbench.registry import default_registry
from ptbench.sweep.plan import builtin_suites, load_suite
from ptbench.cli._common import add_plugins

NAME = "list"
HELP = "list tasks, strategies and suites with their parameters"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["tasks", "strategies", "suites"], help="only this kind (default: all)")
    add_plugins(p)


def _describe(cls) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    grid = ", ".join(f"{k}={'|'.join(format_value(v) for v in vals)}" for k, vals in cls.params.items())
    return f"  {cls.name:<18} {doc[0] if doc else ''}\n" + (f"  {'':<18} params: {grid}\n" if grid else "")


def main(args: argparse.Namespace) -> int:
    registry = default_registry(args.plugin)
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
