"""A suite's `report = "module:function"` key, checked before a sweep without importing it.

`run` checks the key (and the libraries the report declares it needs) before anything
trains, so that a typo fails in a second, not after the sweep. Importing the report module
for that check put pandas and the report's own imports (0.3-0.4 s on the 2-core machine)
before the sweep's workers could start; so the check reads the module's source instead:
the module is found without running it (`importlib.util.find_spec`), its source parsed,
and the function and `REQUIRES` looked up among its top-level statements. Where the source
does not settle it (no source file, a name bound in a way the parse cannot see, a `REQUIRES`
that is not a literal), the module is imported after all, as before. The sweep imports the
module for real while its workers compute (`cli.run._outputs_libraries`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

from ptbench.errors import PtbenchError

#: What a report needs when its module does not say (`REQUIRES`): the plots' library.
DEFAULT_REQUIRES = (("matplotlib",), "pip install 'ptbench[plot]'")


def split_ref(ref: str) -> tuple[str, str]:
    """(module, function) of a `module:function` key."""
    module_name, _, function_name = ref.partition(":")
    return module_name, function_name


def cannot_import(ref: str, module_name: str, err: BaseException) -> PtbenchError:
    return PtbenchError(f"report {ref!r}: cannot import {module_name!r} ({err}); fix the suite's report key")


def no_function(ref: str, module_name: str, function_name: str) -> PtbenchError:
    return PtbenchError(f"report {ref!r}: {module_name} has no function {function_name!r}; fix the suite's report key")


def load_report(ref: str):
    """The function a `module:function` reference names, imported (the report runs it as
    `function(runs, out_dir, baseline) -> list[Path]`)."""
    module_name, function_name = split_ref(ref)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise cannot_import(ref, module_name, err) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise no_function(ref, module_name, function_name)
    return function


def declared_requires(module_name: str) -> tuple[tuple[str, ...], str]:
    """An imported report module's `REQUIRES`, else DEFAULT_REQUIRES."""
    declared = getattr(importlib.import_module(module_name), "REQUIRES", None)
    if isinstance(declared, tuple) and len(declared) == 2 and isinstance(declared[1], str):
        return tuple(declared[0]), declared[1]
    return DEFAULT_REQUIRES


def _top_level(tree: ast.Module):
    """The module's top-level statements, those inside top-level if/try blocks included."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            pending.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(alias.asname or alias.name).split(".")[0] for alias in node.names]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _static_requires(tree: ast.Module) -> tuple[tuple[str, ...], str] | None | bool:
    """REQUIRES as a literal: the value, None when the module binds no REQUIRES, False when
    it binds one the parse cannot evaluate."""
    for node in _top_level(tree):
        if "REQUIRES" in _bound_names(node):
            try:
                value = ast.literal_eval(node.value) if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value else None
            except ValueError:
                return False
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and isinstance(value[0], (tuple, list)):
                return tuple(value[0]), value[1]
            return False
    return None


def check_report(ref: str) -> tuple[tuple[str, ...], str]:
    """Check that `ref` names a function of a findable module, and return (modules, pip
    command) the report declares it needs; a wrong key is a one-line PtbenchError."""
    module_name, function_name = split_ref(ref)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as err:
        raise cannot_import(ref, module_name, err) from None
    if spec is None:
        raise cannot_import(ref, module_name, ModuleNotFoundError(f"No module named {module_name!r}"))
    origin = Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    tree = None
    if origin is not None:
        try:
            tree = ast.parse(origin.read_bytes(), filename=str(origin))
        except (OSError, ValueError):
            tree = None
        except SyntaxError as err:
            raise cannot_import(ref, module_name, err) from None
    if tree is not None:
        defined = any(function_name in _bound_names(node) for node in _top_level(tree))
        requires = _static_requires(tree)
        if defined and requires is not False:
            return requires or DEFAULT_REQUIRES
    load_report(ref)  # the source did not settle it: import it, as the report's run would
    return declared_requires(module_name)
