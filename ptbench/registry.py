"""Finding tasks, strategies and suites: built-in folders, `--plugin FILE`, entry points.

A plugin is any subclass of Task or Strategy with a `name`, defined in a module the registry
loads. Built-ins come from the `ptbench.tasks` / `ptbench.strategies` packages (the
repository's `tasks/` and `strategies/` folders); installed packages add theirs through the
entry point groups `ptbench.tasks` and `ptbench.strategies` (each entry point names a module
or a class). A package whose entry point cannot be loaded is skipped with one PluginWarning,
so that one broken install never stops `list`, `run` or `leaderboard`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
import warnings
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
            # walk_packages, not iter_modules: a task family is a package of modules,
            # and its classes live in those modules.
            infos = pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
            for info in sorted(infos, key=lambda i: i.name):
                module = importlib.import_module(info.name)
                self.add_module(module, f"built-in {info.name}")

    def load_entry_points(self) -> None:
        """Every installed package's plugins. A broken package (its entry point fails to
        import, raises while importing, or clashes with a plugin already registered) is
        reported once, as a PluginWarning naming it, and skipped: the others still load."""
        for group in ("ptbench.tasks", "ptbench.strategies"):
            try:
                entries = list(metadata.entry_points(group=group))
            except Exception as err:  # a malformed entry_points.txt somewhere on sys.path
                _report(f"the installed packages' {group} entry points cannot be read ({type(err).__name__}: {err}); "
                        "no installed plugin of that group is loaded: reinstall the package whose metadata is damaged")
                continue
            for entry in entries:
                where = f"entry point {entry.name!r} ({entry.value}) of {_distribution(entry)}"
                try:
                    loaded = entry.load()
                except (Exception, SystemExit) as err:  # a broken third-party package must not hide the rest
                    _report(f"{where} failed to import ({type(err).__name__}: {err}); skipped it: fix or uninstall that package")
                    continue
                origin = f"entry point {entry.value}"
                before = (dict(self.tasks), dict(self.strategies), dict(self.origins))
                try:
                    if inspect.ismodule(loaded):
                        self.add_module(loaded, origin)
                    else:
                        self.add_class(loaded, origin)
                except PtbenchError as err:  # a name clash: keep what was registered first
                    self.tasks, self.strategies, self.origins = before
                    _report(f"{where} skipped: {err}")

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


class PluginWarning(UserWarning):
    """An installed plugin package could not be loaded; every other plugin still is."""


#: Messages already reported in this process: one broken package, one warning.
_REPORTED: set[str] = set()


def _report(message: str) -> None:
    """Warn once per process, as one line: warn_explicit with no source line to print, so
    the default warning display is `ptbench:0: PluginWarning: MESSAGE` and nothing more."""
    if message in _REPORTED:
        return
    _REPORTED.add(message)
    warnings.warn_explicit(message, PluginWarning, filename="ptbench", lineno=0, module="ptbench.registry")


def _distribution(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    if not name:
        return "an installed package"
    version = getattr(dist, "version", None)
    return f"package {name} {version}" if version else f"package {name}"


def default_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    """Built-ins, entry points, then the given plugin files (a plugin may not shadow a name)."""
    registry = Registry()
    registry.load_builtins()
    registry.load_entry_points()
    for path in plugins:
        registry.load_plugin(path)
    return registry
