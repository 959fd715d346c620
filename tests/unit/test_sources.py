"""What a stored run's plugin hash and a cached donor's key cover (ptbench.sources): a
task family's own helper modules, a third-party task's helpers, and nothing installed."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time

import pytest

from ptbench import sources
from ptbench.registry import default_registry
from ptbench.run import cache as cache_module
from ptbench.run.cache import DONOR_HARNESS, code_hash, training_modules


def _touch_later(path):
    later = time.time() + 5
    os.utime(path, (later, later))


@pytest.fixture
def thirdparty(tmp_path, monkeypatch):
    """A third-party package: a task whose data comes from a helper module of its own."""
    pkg = tmp_path / "acme_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "noise.py").write_text("SCALE = 1.0\n\ndef scale():\n    return SCALE\n")
    (pkg / "task.py").write_text(textwrap.dedent("""
        from ptbench.tasks.signal_noise import SignalNoise
        from acme_tasks.noise import scale

        class AcmeTask(SignalNoise):
            name = "acme-task"

            def side(self, role):
                out = super().side(role)
                return {**out, "noise": out["noise"] * scale()}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [n for n in sys.modules if n.startswith("acme_tasks")]:
        del sys.modules[name]


def test_a_third_party_tasks_helper_module_is_covered(thirdparty):
    module = importlib.import_module("acme_tasks.task")
    task = module.AcmeTask(d=50)
    modules = training_modules(task)
    assert {"acme_tasks.task", "acme_tasks.noise", "ptbench.tasks.signal_noise.task"} <= modules
    assert not any(m.startswith(("numpy", "torch")) for m in modules)
    before = code_hash(task)
    helper = thirdparty / "noise.py"
    helper.write_text(helper.read_text().replace("SCALE = 1.0", "SCALE = 2.0"))
    _touch_later(helper)
    assert code_hash(task) != before  # the cached donors of this task are never looked up again


def test_editing_each_module_that_shapes_a_donor_invalidates_its_entry(monkeypatch):
    """Every module in the key (the family's task, data, model, engine and diagnostics, and
    the harness modules that train donors), edited one at a time, changes the key."""
    task = default_registry().task("signal-noise")(d=50)
    modules = training_modules(task)
    family = {f"ptbench.tasks.signal_noise.{m}" for m in ("task", "data", "model", "engine", "diagnostics")}
    assert family | set(DONOR_HARNESS) <= modules
    base = code_hash(task)
    real = sources.file_digest
    for name in sorted(modules):
        path = sources.module_file(name)
        assert path is not None, name
        monkeypatch.setattr(sources, "file_digest", lambda p, edited=path: "edited" if p == edited else real(p))
        assert code_hash(task) != base, f"editing {name} left the donor cache key unchanged"
        monkeypatch.setattr(sources, "file_digest", real)
    assert code_hash(task) == base
    assert cache_module.digest is sources.digest


def test_a_strategys_plugin_hash_covers_its_file_and_not_other_strategies():
    registry = default_registry()
    task = registry.tasks["signal-noise"]
    full, scratch = registry.strategies["full"], registry.strategies["scratch"]
    assert sources.plugin_modules(full) == {"ptbench.strategies.full"}
    assert sources.plugin_hash(task, full) != sources.plugin_hash(task, scratch)
    assert sources.plugin_hash(task, full) == sources.plugin_hash(task, full)
