"""`ptbench run`: expand a suite into runs, run what is not stored yet, write the leaderboard."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

# Only what sizing and checking a sweep needs is imported here; training, the store and the
# leaderboard (torch, pandas) are imported in main once the sweep is known to be sane.
from ptbench.errors import PtbenchError
from ptbench.sweep.outputs import outputs_for
from ptbench.sweep.plan import MAX_RUNS, builtin_suites, check_size, expand, load_suite, seeds_overridden, task_labels
from ptbench.cli._common import HTML_LIBS, add_plugins, add_seeds, add_store, missing, require

#: ptbench.run.cache.DEFAULT_DIR (that module imports torch; a test keeps the two equal).
DEFAULT_CACHE = ".ptbench-cache"

NAME = "run"
HELP = "run a suite (default: quick): store its runs, write its leaderboard"
DESCRIPTION = """\
Run every (task variant, strategy variant, seed) of a suite that its store does not hold
yet (or holds from other plugin code), store one row per run, then write the leaderboard
of that suite's runs.

SPEC is `name` or `name[key=value,...]`; a value in brackets sweeps several values, and a
parameter a SPEC leaves out takes its default (the first value `list` shows), e.g.
  --strategy 'partial-filters[fraction=[0.25,0.5],freeze=false]'
  --task 'signal-noise[shared=2.0,n_target=20]'
--task / --strategy replace the suite's tasks / strategies (an ad-hoc run); the baseline
strategy (scratch) is what the leaderboard's paired differences are taken against, so
keep it in.

Where results go (--store and --leaderboard override):
  --suite NAME             results/NAME.db and the committed leaderboard/NAME/
  --suite NAME --seeds N   results/NAME.db and results/NAME/ (not the suite as defined)
  --suite FILE.toml        results/STEM.db and results/STEM/
  --task / --strategy      results/adhoc.db and results/adhoc/
A committed leaderboard is rewritten only when its results change, not when only timings
or provenance do. Next to README.md goes the HTML site (index.html, runs/, plotly.min.js)
when Jinja2 and plotly are installed (--html: insist on it; --no-html: never), on the same rule.

--jobs auto (the default) runs the sweep in one worker process per usable core, each unit
of work on one torch thread, largest units first; on one core, for a single unit or for a
sweep estimated at a few seconds it runs in this process, as --jobs 1 does. --jobs N starts N
workers. Every unit runs on one torch thread wherever it runs, so --jobs never changes a
stored number. The progress bar counts estimated work (model size x steps x examples per
step), so its time estimate holds for sweeps that mix cheap and dear runs.

--seeds takes N (seeds 0..N-1), A-B (A to B inclusive) or A,B,C. --dry-run prints how many
runs each task and strategy has, how many are stored already and an estimate of the time
from the store's timings, and runs nothing. A sweep of more than 1,000,000 runs is refused
unless --allow-huge. Before anything runs, a suite's report is checked for the libraries it
needs (matplotlib for the paper suite's plots).

examples:
  python -m ptbench run                                  # the quick suite
  python -m ptbench run --suite smoke                    # one tiny task, two strategies
  python -m ptbench run --task 'signal-noise[d=500]' --strategy scratch --strategy full
  python -m ptbench run --dry-run --suite paper          # what would run, and roughly how long
  python -m ptbench run --suite smoke --seeds 3-4 -v --log-file results/smoke.log
  python -m ptbench run --suite paper                    # 12160 runs: about 2 minutes on 2 cores
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="quick", metavar="NAME|FILE", help="built-in suite name or a suite .toml (default: quick)")
    p.add_argument("--task", action="append", default=[], metavar="SPEC", help="task SPEC to run instead of the suite's (repeatable; an ad-hoc run)")
    p.add_argument("--strategy", action="append", default=[], metavar="SPEC", help="strategy SPEC to run instead of the suite's (repeatable; an ad-hoc run)")
    add_seeds(p)
    p.add_argument("--device", default="auto", metavar="D", help="auto, cpu or cuda (default: auto)")
    add_store(p, default=None)
    p.add_argument(
        "--leaderboard", default=None, metavar="DIR",
        help="where README.md (and the suite's report pages, if it has any) go (default: see above)",
    )
    p.add_argument("--no-leaderboard", action="store_true", help="do not write the leaderboard")
    html = p.add_mutually_exclusive_group()
    html.add_argument("--html", action="store_true", help="write the HTML site next to README.md, and fail now if Jinja2/plotly are missing")
    html.add_argument("--no-html", action="store_true", help="do not write the HTML site (default: write it when Jinja2 and plotly are installed)")
    p.add_argument("--dry-run", action="store_true", help="print the runs per task and strategy, how many are stored, an estimated time; run nothing")
    p.add_argument("--allow-huge", action="store_true", help=f"allow a sweep of more than {MAX_RUNS:,} runs")
    add_plugins(p)
    p.add_argument("--force", action="store_true", help="re-run runs that are already stored")
    p.add_argument("--retry-failed", action="store_true", help="re-run only the stored runs that did not end ok")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-run time limit; a run past it is stored as timeout")
    p.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for a store another process holds locked before saying so; finished results "
                        "are kept meanwhile (default: $PTBENCH_LOCK_TIMEOUT, else 60)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where image datasets already on disk live (default: $PTBENCH_DATA)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="count", default=0, help="also print every finished run's status line")
    p.add_argument("--log-file", default=None, metavar="FILE", help="append a log of what the run does (every finished run, the summary) to FILE")
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="worker processes: auto (the default) starts one per usable core, each on one torch thread, and "
                        "runs in this process instead on one core, for a single unit of work or a sweep of a few seconds; "
                        "1 runs in this process; N starts N. The numbers stored do not depend on it")
    p.add_argument("--executor", default="local", choices=["local", "dask"], help="local (this machine) or dask (a dask.distributed cluster; needs --scheduler)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="the dask scheduler's address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, metavar="DIR", help=f"where trained source models are cached (default: {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the source-model cache")
    p.add_argument("--no-batch", action="store_true", help="train every run on the per-run path, even where a batched engine could (slow; for checking)")


log = logging.getLogger("ptbench.run")


def main(args: argparse.Namespace) -> int:
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise PtbenchError(f"--timeout must be a finite positive number of seconds, got {args.timeout}")
    if args.lock_timeout is not None:
        if not (math.isfinite(args.lock_timeout) and args.lock_timeout > 0):
            raise PtbenchError(f"--lock-timeout must be a finite positive number of seconds, got {args.lock_timeout}")
        os.environ["PTBENCH_LOCK_TIMEOUT"] = repr(args.lock_timeout)  # read by the store (and inherited by workers)
    suite = load_suite(args.suite)
    adhoc = bool(args.task or args.strategy)
    check_size(suite, args.task or None, args.strategy or None, args.seeds, args.allow_huge)  # nothing built yet
    report = bool(suite.report and not args.no_leaderboard and not adhoc)
    _check_libraries(args, suite, report)
    from ptbench.registry import default_registry
    from ptbench.run.options import RunOptions, resolve_device
    from ptbench.sweep.execute import make_executor

    if args.data_dir:
        os.environ["PTBENCH_DATA"] = args.data_dir  # read by tasks (and inherited by workers)
    options = RunOptions(
        device=resolve_device(args.device), timeout=args.timeout,
        cache_dir=None if args.no_cache else os.path.abspath(args.cache_dir), batched=not args.no_batch,
    )
    executor = make_executor(args.executor, args.jobs, args.scheduler, args.plugin)
    registry = default_registry(args.plugin)
    specs = expand(suite, registry, args.task or None, args.strategy or None, args.seeds)
    if not specs:
        raise PtbenchError("nothing to run: the suite and options select no runs")
    labels = task_labels(suite, registry)
    where = outputs_for(suite.name, suite.name in builtin_suites(), adhoc, seeds_overridden(args.seeds, suite),
                        args.store, args.leaderboard)
    if args.dry_run:
        print(dry_run(specs, where, suite, labels, adhoc, args.force, args.retry_failed, options), end="")
        return 0
    handlers = _logging(args)
    try:
        return _run(args, suite, registry, specs, labels, where, options, executor, adhoc, report)
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _outputs_libraries(html: bool) -> None:
    """Import what the leaderboard (and the site) will need: pandas, the statistics, Jinja2;
    and compile the site's templates."""
    import ptbench.results.leaderboard  # noqa: F401
    import ptbench.results.suite_report  # noqa: F401

    if html:
        import ptbench.results.html.site as site

        site.warm()


def _run(args, suite, registry, specs, labels, where, options, executor, adhoc: bool, report: bool) -> int:
    from ptbench.results.store import Store, provenance
    from ptbench.sweep.execute import while_waiting
    from ptbench.sweep.sweep import SweepInterrupted, run_sweep

    html = bool(args.html or (not args.no_html and not missing(HTML_LIBS[0])))
    store = Store(where.store)
    try:
        try:
            with while_waiting(provenance), nullcontext() if args.no_leaderboard else while_waiting(lambda: _outputs_libraries(html)):
                done = run_sweep(specs, store, options, args.force, args.retry_failed, progress=not args.quiet,
                                 executor=_LoggingExecutor(executor), preflight=args.executor == "local")
        except SweepInterrupted as stop:  # every run that finished is already committed
            _say(
                f"ptbench: interrupted; {stop.summary.ran} run(s) finished and stored "
                f"({_stored(specs, store)} of this sweep's {len(specs)} are in {where.store}); "
                "run the same command again to resume"
            )
            return stop.exit_status  # signal handling: 130 after Ctrl-C (SIGINT), 143 after SIGTERM
        if not args.no_leaderboard:
            from ptbench.results.leaderboard import write as write_leaderboard, write_html
            from ptbench.results.suite_report import suite_runs, write_report

            runs = suite_runs(store.frame(), specs)
            title = "ptbench leaderboard: ad-hoc runs" if adhoc else f"ptbench leaderboard: the {suite.name} suite"
            path, written = write_leaderboard(runs, where.leaderboard, suite.baseline, registry, title, labels)
            state = "written" if written else "unchanged, same results"
            _say(f"leaderboard: {path}: {state} ({where.why})")
            pages = []
            if report:  # the suite's own pages (the paper suite's phase diagrams, say)
                pages = write_report(suite.report, runs, specs, where.leaderboard, suite.baseline)
                for page in pages:
                    _say(f"report: {page}")
            if html:
                plots = [Path(p) for p in pages if Path(p).suffix.lower() == ".png"]
                index, written = write_html(runs, where.leaderboard, suite.baseline, registry, title, labels, plots)
                _say(f"html: {index}: {'written' if written else 'unchanged, same results'}")
    finally:
        store.close()
    _say(f"ptbench: {done.summary()}; store: {where.store}")
    return 1 if done.failed else 0


def _check_libraries(args: argparse.Namespace, suite, report: bool) -> None:
    """What the outputs will need, checked before anything runs: one line and exit 2."""
    if report:
        from ptbench.results.suite_report import load_report, report_requires

        load_report(suite.report)  # a wrong report key fails now, not after the whole sweep
        require(report_requires(suite.report), f"the {suite.name} suite's report (or pass --no-leaderboard)")
    if args.html:
        if args.no_leaderboard:
            raise PtbenchError("--html writes the site next to the leaderboard: drop --no-leaderboard")
        require(HTML_LIBS, "--html")


# --------------------------------------------------------------------------- logging


class _Say(logging.Filter):
    """Keep off the console what is printed there anyway (messages passed through `_say`,
    and runs that did not end ok, which the sweep prints itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "printed", False) and getattr(record, "status", "ok") == "ok"


class _TqdmHandler(logging.Handler):
    """Console lines that leave the progress bar intact."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never break a sweep
            self.handleError(record)


def _logging(args: argparse.Namespace) -> list[logging.Handler]:
    """-v: every finished run's status line on stderr; --log-file: everything, with times."""
    handlers: list[logging.Handler] = []
    if args.verbose:
        console = _TqdmHandler(level=logging.INFO)
        console.addFilter(_Say())
        handlers.append(console)
    if args.log_file:
        path = Path(args.log_file)
        try:
            if path.is_dir():
                raise IsADirectoryError(21, "is a folder")
            file = logging.FileHandler(path, encoding="utf-8")
        except OSError as err:
            raise PtbenchError(f"cannot write the log file {str(path)!r}: {err.strerror or err}; pass another --log-file") from None
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        file.setLevel(logging.INFO)
        handlers.append(file)
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in handlers:
        log.addHandler(handler)
    if args.log_file:
        log.info("ptbench run %s", " ".join(sys.argv[1:]) or f"--suite {args.suite}", extra={"printed": True})
    return handlers


def _say(message: str) -> None:
    """A line the command prints (stderr) and logs (--log-file)."""
    print(message, file=sys.stderr)
    log.info(message, extra={"printed": True})


def status_line(result) -> str:
    """One finished run, as the log shows it."""
    line = f"{result.status}: {result.task} / {result.strategy} / seed {result.seed}"
    if result.status == "ok" and result.target_acc is not None:
        seconds = f" in {result.target_seconds:.2f} s" if result.target_seconds is not None else ""
        return f"{line}: target {result.target_acc * 100:.1f}%{seconds}"
    return f"{line}: {result.error}" if result.error else line


class _LoggingExecutor:
    """The executor, logging each finished run once the sweep has taken it (and stored it)."""

    def __init__(self, inner):
        self.inner = inner

    def run(self, groups, options):
        for result in self.inner.run(groups, options):
            yield result
            level = logging.INFO if result.status == "ok" else logging.WARNING
            log.log(level, status_line(result), extra={"status": result.status})


def _stored(specs: list, store) -> int:
    """How many of the sweep's runs the store holds (any status)."""
    keys = store.statuses()
    return sum(spec.key in keys for spec in specs)


# --------------------------------------------------------------------------- --dry-run


class _NoStore:
    """An empty store that is never created (a dry run leaves no file behind)."""

    def stored(self) -> dict:
        return {}


def dry_run(specs: list, where, suite, labels: dict[str, str], adhoc: bool = False, force: bool = False,
            retry_failed: bool = False, options=None) -> str:
    """What `run` would do, from the plan and the store alone: runs per task and per strategy,
    how many are stored (and current), how many would run, and a time estimate."""
    from tabulate import tabulate

    from ptbench.results.store import Store
    from ptbench.sweep.sweep import pending

    started = time.perf_counter()
    exists = Path(where.store).is_file()
    frame = None
    if exists:
        store = Store(where.store, create=False)
        try:
            plan = pending(specs, store, force, retry_failed)
            frame = store.frame()
        finally:
            store.close()
    else:
        plan = pending(specs, _NoStore(), force, retry_failed)
    todo = {id(spec) for spec in plan.todo}  # (a key is JSON, rebuilt at each use: slow for 10^4 runs)
    names: dict[int, str] = {}  # specs share their task and strategy instances: name each once

    def _name(plugin) -> str:
        if id(plugin) not in names:
            names[id(plugin)] = plugin.instance_name
        return names[id(plugin)]

    def table(name_of, header: str) -> str:
        counts: dict[str, list[int]] = {}
        for spec in specs:
            row = counts.setdefault(name_of(spec), [0, 0, 0])
            row[0] += 1
            row[1 if id(spec) not in todo else 2] += 1
        labelled = header == "task" and bool(labels)
        body = [[name, *([labels.get(name, "")] if labelled else []), n, kept, run] for name, (n, kept, run) in counts.items()]
        head = [header, *(["label"] if labelled else []), "runs", "stored", "to run"]
        return tabulate(body, headers=head, tablefmt="simple", disable_numparse=True)

    what = "ad-hoc runs" if adhoc else f"the {suite.name} suite"
    lines = [
        f"dry run of {what}: {len(specs)} runs, {plan.skipped} already stored, {len(plan.todo)} to run"
        + (f" ({plan.changed} of them stored by other plugin code)" if plan.changed else ""),
        f"store: {where.store}" + ("" if exists else " (does not exist yet)") + f"; leaderboard: {where.leaderboard}",
        "",
        table(lambda spec: _name(spec.task), "task"),
        "",
        table(lambda spec: _name(spec.strategy), "strategy"),
        "",
        "estimated time: " + estimate(plan.todo, frame, _name, options),
        "nothing was run or stored (--dry-run).",
    ]
    log.debug("dry run planned in %.2f s", time.perf_counter() - started)
    return "\n".join(lines) + "\n"


def estimate(todo: list, frame, _name=lambda plugin: plugin.instance_name, options=None) -> str:
    """Seconds the runs to do should take on this machine, from the stored timings of the
    same task and strategy (else the same strategy, else any run), plus one source model per
    (task, seed) group; where the store holds no timed run, the sweep's cost model's
    (`_modelled`)."""
    if not todo:
        return "none: nothing to run"
    if frame is None or frame.empty:
        return _modelled(todo, "no stored run to time from yet", options)
    ok = frame[(frame["status"] == "ok") & frame["target_seconds"].notna()]
    if ok.empty:
        return _modelled(todo, "no stored run ended ok to time from", options)
    by_pair = ok.groupby(["task", "strategy"])["target_seconds"].median().to_dict()
    by_plugin = ok.assign(plugin=ok["strategy"].str.split("[", n=1).str[0]).groupby("plugin")["target_seconds"].median().to_dict()
    overall = float(ok["target_seconds"].median())
    sources = ok.groupby("task")["source_seconds"].median().to_dict()
    overall_source = float(ok["source_seconds"].median()) if ok["source_seconds"].notna().any() else 0.0
    seconds, timed = 0.0, 0
    for spec in todo:
        task, strategy = _name(spec.task), _name(spec.strategy)
        if (task, strategy) in by_pair:
            timed += 1
            seconds += by_pair[(task, strategy)]
        else:
            seconds += by_plugin.get(strategy.split("[", 1)[0], overall)
    groups = {(_name(spec.task), spec.seed) for spec in todo}
    seconds += sum(sources.get(task, overall_source) or 0.0 for task, _ in groups)
    return (f"about {_duration(seconds)} on one worker ({timed} of {len(todo)} runs timed by stored runs of the same "
            "task and strategy, the others by similar runs; cached source models cost less)")


def _modelled(todo: list, why: str, options=None) -> str:
    """The estimate without stored timings: the sweep's own cost model (`ptbench.sweep.cost`:
    steps, model sizes and each run's path, what the progress bar starts from), which builds
    one model and draws one seed's target data per task variant, and spread over this
    machine's cores as `--jobs auto` would."""
    from ptbench.run.group import group_specs
    from ptbench.run.options import RunOptions
    from ptbench.sweep.execute import AUTO_MIN_SECONDS, usable_cores
    from ptbench.sweep.units import cost_model

    seconds = sum(cost_model(options or RunOptions()).groups(group_specs(todo)))
    cores = usable_cores()
    spread = f", about {_duration(seconds / cores)} on this machine's {cores} cores (--jobs auto)" if cores > 1 and seconds >= AUTO_MIN_SECONDS else ""
    amount = "under 1 s" if seconds < 1 else f"about {_duration(seconds)}"
    return (f"{amount} of work on one core{spread}, from the runs' steps and model sizes ({why}; a "
            "busy machine takes longer, cached source models less)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
