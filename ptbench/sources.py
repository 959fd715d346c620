"""Which source files decide what a plugin does, and one digest of them.

Two things rest on this: a stored run records the digest of its task's and strategy's code
(so a run made by other code is re-run, not reported as current), and the donor cache keys
each trained donor by the code that shaped it (so an edited helper never serves a stale
model). Both follow the same rule, stated once here:

* A plugin's modules are the modules of its class and its base classes, and, transitively,
  every module those reference (an imported module, or the module of an imported class or
  function) whose file lies in the plugin's own folder: for a built-in, its plugin package
  (`tasks/signal_noise/`, `strategies/`); for an installed package, that package; for a
  `--plugin FILE`, the file's folder. So a family's or a third-party task's own helper
  modules are covered, and numpy, torch and the standard library are not (their versions
  are recorded with every run instead).
* The digest is a SHA-256 over the SHA-256 digests of those source files, sorted: what the
  code says, not where it sits (`submit --add` moving a file into strategies/ keeps the
  digest of the runs it stored).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Iterable

#: Folders that hold ptbench's built-in plugins, as package names: a built-in plugin's own
#: folder is the first-level package under one of these.
PLUGIN_PACKAGES = ("ptbench.tasks", "ptbench.strategies", "ptbench.reports")


def module_file(name: str) -> Path | None:
    """The source file of a module, imported or not (None for built-in or compiled ones)."""
    module = sys.modules.get(name)
    try:
        if module is not None:
            path = inspect.getsourcefile(module)
        else:
            spec = importlib.util.find_spec(name)
            path = spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None
    except (TypeError, ImportError, ValueError):  # built-in, compiled, or not importable
        return None
    return Path(path).resolve() if path else None


def plugin_root(module_name: str) -> Path | None:
    """The folder whose modules count as the plugin's own (see the module docstring)."""
    parts = module_name.split(".")
    for package in PLUGIN_PACKAGES:
        depth = package.count(".") + 1
        if module_name.startswith(package + "."):
            own = ".".join(parts[: depth + 1])  # ptbench.tasks.signal_noise / ptbench.strategies.full
            path = module_file(own)
            if path is None:
                return None
            return path.parent if path.name == "__init__.py" else path.parent
    path = module_file(parts[0])
    if path is None:
        return None
    return path.parent  # a package's folder, or the folder of a single-file plugin


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _references(module: ModuleType) -> set[str]:
    names = set()
    for value in vars(module).values():
        if inspect.ismodule(value):
            names.add(value.__name__)
        else:
            origin = getattr(value, "__module__", None)
            if isinstance(origin, str):
                names.add(origin)
    return names


def plugin_modules(cls: type, extra: Iterable[str] = ()) -> set[str]:
    """The modules of `cls` (and its bases) and their plugin-local helpers, transitively;
    `extra` names more starting modules (a task's model or engine module, say)."""
    from .api import Strategy, Task

    harness = {Task, Strategy, object}
    start = {c.__module__ for c in cls.__mro__ if c not in harness and c.__module__ not in ("ptbench.api", "ptbench.spec", "builtins")}
    start |= set(extra)
    roots = {name: plugin_root(name) for name in start}
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in sys.modules:
            continue
        seen.add(name)
        root = roots.get(name)
        for ref in _references(sys.modules[name]):
            path = module_file(ref)
            if ref in seen or path is None:
                continue
            if any(r is not None and _inside(path, r) for r in set(roots.values())):
                todo.append(ref)
    return seen


@lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    stat = os.stat(path)
    return _file_digest(str(path), stat.st_mtime_ns, stat.st_size)


def digest(modules: Iterable[str]) -> str:
    """SHA-256 over the sorted source digests of the modules (no-source modules by name)."""
    parts = []
    for name in set(modules):
        path = module_file(name)
        parts.append(file_digest(path) if path else f"no-source:{name}")
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


@lru_cache(maxsize=None)
def _class_digest(cls: type) -> str:
    return digest(plugin_modules(cls))


def plugin_hash(task_cls: type, strategy_cls: type) -> str:
    """The code digest a stored run records: its task's and its strategy's modules."""
    h = hashlib.sha256(f"task:{_class_digest(task_cls)}\nstrategy:{_class_digest(strategy_cls)}\n".encode())
    return h.hexdigest()[:16]
