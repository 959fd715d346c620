"""A plugin's SystemExit or KeyboardInterrupt is its run's failure; the user's Ctrl-C or SIGTERM
(a signal this process really received) is the sweep's end; a verdict needs evidence. In
process and fast: real sweeps into a real store on the tiny smoke task, real signals sent to
this process, the submit verdict on the records a checking process would write."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ptbench.api import RunSpec, Strategy, TransferPlan
from ptbench.cli.submit import verdict
from ptbench.contract import CheckEnv, check_name_of, check_plan_shapes, checks_for, listed_checks, required_checks, run_check, run_checks
from ptbench.results.store import Store
from ptbench.run import exits
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.sweep import SweepInterrupted, run_sweep
from ptbench.tasks.signal_noise import SignalNoise

#: The smoke suite's task (T): a run takes a few hundredths of a second.
T = dict(d=100, m=10, n_source=40, n_target=20, n_test=200, steps=50)


class SysExitInPlan(Strategy):
    name = "test-sys-exit-in-plan"

    def plan(self, source, target, rng):
        sys.exit(0)


class KeyboardInterruptInPlan(Strategy):
    name = "test-keyboard-interrupt-in-plan"

    def plan(self, source, target, rng):
        raise KeyboardInterrupt


class SysExitWhileTraining(Strategy):
    """Exits from its training hook (so it trains on the per-run path)."""

    name = "test-sys-exit-while-training"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def regularizer(self, model, reference, plan):
        sys.exit(2)


class SignalsItself(Strategy):
    """A real signal, received by this process while plugin code runs, which catches the
    KeyboardInterrupt and exits instead: still the user's stop."""

    name = "test-signals-itself"
    params = {"signum": [int(signal.SIGINT), int(signal.SIGTERM)]}

    def plan(self, source, target, rng):
        try:
            os.kill(os.getpid(), self.signum)
            time.sleep(5)
        except KeyboardInterrupt:
            sys.exit(0)
        return TransferPlan.full(source, target)


class ExitsInData(SignalNoise):
    name = "test-exits-in-data"

    def data(self, role, streams):
        if role == "target":
            sys.exit(0)
        return super().data(role, streams)


def sweep(tmp_path: Path, strategies, task=None, **options):
    """Run the strategies on one seed of `task` (T) into a fresh store; {strategy: row}."""
    task = task or SignalNoise(**T)
    specs = [RunSpec(task, strategy, 0) for strategy in strategies]
    with Store(tmp_path / "runs.db") as store:
        summary = run_sweep(specs, store, RunOptions(**options), progress=False)
        rows = store.frame().set_index("strategy")
    return summary, rows


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-run"])
def test_sys_exit_and_keyboard_interrupt_from_plugins_fail_only_their_runs_with_the_same_numbers(tmp_path, batched):
    good = [Scratch(), Full()]
    _, alone = sweep(tmp_path / "alone", good, batched=batched)
    summary, rows = sweep(tmp_path, good + [SysExitInPlan(), KeyboardInterruptInPlan(), SysExitWhileTraining()], batched=batched)

    assert summary.ran == 5 and summary.failed == 3
    assert rows.loc["test-sys-exit-in-plan", "status"] == "failed"
    assert rows.loc["test-sys-exit-in-plan", "error"].startswith(
        "the strategy test-sys-exit-in-plan exited the process with SystemExit(0) (at test_plugin_exits.py:")
    assert rows.loc["test-keyboard-interrupt-in-plan", "error"].startswith(
        "the strategy test-keyboard-interrupt-in-plan raised KeyboardInterrupt()")
    assert rows.loc["test-sys-exit-while-training", "status"] == "failed"
    assert "exited the process with SystemExit(2)" in rows.loc["test-sys-exit-while-training", "error"]
    for name in ("scratch", "full"):  # the well-behaved runs: ok, and the numbers they get alone
        assert rows.loc[name, "status"] == "ok"
        assert rows.loc[name, "target_acc"] == alone.loc[name, "target_acc"]
        assert rows.loc[name, "source_acc"] == alone.loc[name, "source_acc"]


def test_a_task_that_exits_while_drawing_data_fails_its_group_and_the_sweep_goes_on(tmp_path):
    task = ExitsInData(**T)
    specs = [RunSpec(task, Scratch(), 0), RunSpec(SignalNoise(**T), Scratch(), 0)]
    with Store(tmp_path / "runs.db") as store:
        summary = run_sweep(specs, store, RunOptions(), progress=False)
        rows = store.frame().set_index("task")
    assert summary.ran == 2 and summary.failed == 1
    exited = rows.loc[task.instance_name]
    assert exited["status"] == "failed" and "the task test-exits-in-data" in exited["error"] and "SystemExit(0)" in exited["error"]
    assert rows.loc[SignalNoise(**T).instance_name, "status"] == "ok"


def test_a_keyboard_interrupt_where_no_sweep_watches_may_be_a_ctrl_c_and_propagates():
    group = group_specs([RunSpec(SignalNoise(**T), KeyboardInterruptInPlan(), 0)])
    with pytest.raises(KeyboardInterrupt):
        run_groups(group, RunOptions())
    with exits.watch():  # where a sweep watches for the real signal, it is the plugin's
        [result] = run_groups(group, RunOptions())
    assert result.status == "failed"


def test_in_another_thread_a_keyboard_interrupt_is_always_the_plugins():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(exits.is_users(KeyboardInterrupt())))
    thread.start()
    thread.join()
    assert seen == [False]
    assert exits.is_users(exits.Interrupted()) and not exits.is_users(RuntimeError())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_this_process_receives_stops_the_sweep_even_if_plugin_code_turns_it_into_an_exit(tmp_path, signum):
    previous = signal.getsignal(signum)
    with pytest.raises(SweepInterrupted) as stop:
        sweep(tmp_path, [Scratch(), SignalsItself(signum=int(signum)), Full()], batched=False)
    assert stop.value.signum == signum and stop.value.exit_status == 128 + signum
    assert signal.getsignal(signum) is previous  # the sweep's handlers are gone again
    assert exits.received() is None


def test_the_contract_checks_fail_a_plugin_exit_and_re_raise_a_real_ctrl_c(registry):
    env = CheckEnv(registry)
    failed = run_check(check_plan_shapes, SysExitInPlan, env)
    assert failed.passed is False and "exited the process with SystemExit(0)" in failed.detail
    assert run_check(check_plan_shapes, KeyboardInterruptInPlan, env).passed is False
    with pytest.raises(KeyboardInterrupt):
        run_check(check_plan_shapes, SignalsItself, env)


def test_run_checks_names_each_check_as_it_begins_and_lists_what_checks_for_lists(registry):
    started: list[str] = []
    env = CheckEnv(registry)
    results = list(run_checks(SysExitInPlan, env, on_start=started.append))
    # (checks_for itself would end with the plugin's SystemExit while choosing capability checks)
    assert started == [r.check for r in results] == [check_name_of(c) for c in listed_checks(SysExitInPlan)]
    assert set(required_checks("strategy")) <= set(started)
    assert all(r.passed is False for r in results if r.check not in ("name", "param_grid"))
    assert [check_name_of(c) for c in listed_checks(Full)] == [check_name_of(c) for c in checks_for(Full)]


# --------------------------------------------------------------------------- submit's verdict


def records(*checks: tuple[str, bool | None], plugin: str = "mine", done: list[str] | None = None) -> list[dict]:
    out = []
    for check, passed in checks:
        out.append({"event": "start", "kind": "strategy", "plugin": plugin, "check": check})
        if passed != "hung":
            out.append({"event": "result", "kind": "strategy", "plugin": plugin, "check": check, "passed": passed,
                        "detail": "ok", "seconds": 0.1})
    if done is not None:
        out.append({"event": "done", "plugins": [{"kind": "strategy", "plugin": plugin, "checks": done}]})
    return out


ALL = required_checks("strategy")


def by_check(results: list[dict]) -> dict[str, tuple]:
    return {r["check"]: (r["passed"], r["detail"]) for r in results}


def test_a_verdict_passes_only_on_a_result_for_every_check_due():
    results, passed = verdict(Path("x.py"), records(*[(c, True) for c in ALL], done=ALL), None)
    assert passed and [r["check"] for r in results] == ALL


def test_no_records_and_a_clean_exit_is_a_failed_import_not_zero_checks_passed():
    results, passed = verdict(Path("x.py"), [], "exited with status 0")
    assert not passed
    assert by_check(results) == {"import": (False, "the checking process exited with status 0 while importing x.py, before any check ran")}


def test_a_check_that_never_reports_is_the_failure_and_the_rest_were_not_run():
    results, passed = verdict(Path("x.py"), records(("name", True), ("param_grid", True), ("plan_shapes", "hung")),
                              "was killed by signal 9 (SIGKILL)")
    found = by_check(results)
    assert not passed
    assert found["plan_shapes"] == (False, "the checking process was killed by signal 9 (SIGKILL) while this check ran")
    assert found["finished_run"][0] is False and found["finished_run"][1].startswith("not run:")


def test_a_done_record_that_leaves_out_a_required_check_is_no_pass():
    # a plugin that patched checks_for to list only the checks it passes
    short = ["name", "param_grid"]
    results, passed = verdict(Path("x.py"), records(*[(c, True) for c in short], done=short), None)
    assert not passed and by_check(results)["finished_run"][0] is False


def test_a_capability_check_listed_as_due_must_report_too():
    results, passed = verdict(Path("x.py"), records(*[(c, True) for c in ALL], done=ALL + ["value_rule"]), None)
    assert not passed and by_check(results)["value_rule"][1].startswith("not run:")


def test_an_exit_after_every_result_but_before_done_is_no_pass():
    _, passed = verdict(Path("x.py"), records(*[(c, True) for c in ALL]), "exited with status 0")
    assert not passed


# --------------------------------------------------------------------------- how a worker ended


def test_a_worker_killed_by_sigkill_is_called_out_of_memory_only_when_it_held_most_of_the_memory(monkeypatch):
    from types import SimpleNamespace

    from ptbench.sweep import execute

    monkeypatch.setattr(execute, "_memory_limit", lambda: 8 * 2**30)
    worker = object.__new__(execute._Worker)  # no process: only what it reports
    worker.proc, worker.rss = SimpleNamespace(exitcode=-9), 1 * 2**30
    assert worker.how_it_ended() == "was killed by signal 9 (SIGKILL)"
    worker.rss = 7 * 2**30
    assert worker.how_it_ended() == "was killed by signal 9 (SIGKILL) holding 7.0 GiB of this machine's 8.0 GiB: out of memory?"
    worker.proc = SimpleNamespace(exitcode=0)
    assert worker.how_it_ended() == "exited with status 0"
