"""Finding tasks, strategies and suites: built-in folders, `--plugin FILE`, entry points.

A plugin is any subclass of Task or Strategy with a `name`, defined in a module the registry
loads. Built-ins come from the `ptbench.tasks` / `ptbench.strategies` packages (the
repository's `tasks/` and `strategies/` folders); installed packages add theirs through the
entry point groups `ptbench.tasks` and `ptbench.strategies` (each entry point names a module
or a class).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from .api import Strategy, Task
from .errors import PtbenchError, closest

KINDS = {"tasks": Task, "strategies": Strategy}


def plugin_module_name(path: str | Path) -> str:
    """The module name a plugin file is imported under: the same in every process (worker
    processes and dask workers unpickle plugin classes by this name), unlike hash()."""
    import hashlib

    path = Path(path)
    return f"ptbench_plugin_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]}"


class Registry:
    """Name -> class for tasks and strategies, plus where each came from."""

    def __init__(self) -> None:
        self.tasks: dict[str, type[Task]] = {}
        self.strategies: dict[str, type[Strategy]] = {}
        self.origins: dict[tuple[str, str], str] = {}

    # -- filling ---------------------------------------------------------------------------
    def add_module(self, module: ModuleType, origin: str) -> int:
        """Register every plugin class defined in `module`; returns how many."""
        found = 0
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ != module.__name__:
                continue
            found += self.add_class(obj, origin)
        return found

    def add_class(self, cls: type, origin: str) -> int:
        for kind, base in KINDS.items():
            if issubclass(cls, base) and cls is not base and getattr(cls, "name", ""):
                table = getattr(self, kind)
                previous = table.get(cls.name)
                if previous is not None and previous is not cls:
                    raise PtbenchError(
                        f"two {kind} are named {cls.name!r}: {self.origins[(kind, cls.name)]} and {origin}; rename one"
                    )
                table[cls.name] = cls
                self.origins[(kind, cls.name)] = origin
                return 1
        return 0

    def load_builtins(self) -> None:
        for package_name in ("ptbench.tasks", "ptbench.strategies"):
            package = importlib.import_module(package_name)
            # walk_packages, not iter_modules: a task family is a package of modules
            # (tasks/signal_noise/task.py), and its classes live in those modules.
            infos = pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
            for info in sorted(infos, key=lambda i: i.name):
                module = importlib.import_module(info.name)
                self.add_module(module, f"built-in {info.name}")

    def load_entry_points(self) -> None:
        for group in ("ptbench.tasks", "ptbench.strategies"):
            for entry in metadata.entry_points(group=group):
                try:
                    loaded = entry.load()
                except Exception as err:  # a broken third-party package must not hide the rest
                    raise PtbenchError(f"entry point {entry.name!r} ({entry.value}) failed to import: {err}") from None
                origin = f"entry point {entry.value}"
                if inspect.ismodule(loaded):
                    self.add_module(loaded, origin)
                else:
                    self.add_class(loaded, origin)

    def load_plugin(self, path: str | Path) -> int:
        """Import a single plugin file by path; returns how many plugins it defined."""
        path = Path(path)
        if not path.is_file():
            raise PtbenchError(f"plugin file {str(path)!r} does not exist; pass the path of a .py file defining a Task or Strategy")
        module_name = plugin_module_name(path)
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PtbenchError(f"plugin file {str(path)!r} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise PtbenchError(f"plugin file {str(path)!r} failed to import: {type(err).__name__}: {err}") from None
        found = self.add_module(module, f"plugin {path}")
        if not found:
            raise PtbenchError(f"plugin file {str(path)!r} defines no Task or Strategy subclass with a name")
        return found

    # -- looking up ------------------------------------------------------------------------
    def task(self, name: str) -> type[Task]:
        return self._lookup("tasks", name)

    def strategy(self, name: str) -> type[Strategy]:
        return self._lookup("strategies", name)

    def _lookup(self, kind: str, name: str):
        table = getattr(self, kind)
        if name not in table:
            singular = kind[:-1] if kind == "tasks" else "strategy"
            raise PtbenchError(
                f"unknown {singular} {name!r}{closest(name, table)}; valid: {', '.join(sorted(table))}"
            )
        return table[name]


def default_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    """Built-ins, entry points, then the given plugin files (a plugin may not shadow a name)."""
    registry = Registry()
    registry.load_builtins()
    registry.load_entry_points()
    for path in plugins:
        registry.load_plugin(path)
    return registry
