"""`ptbench export`: one row per run, as csv, json or parquet."""

from __future__ import annotations

import argparse
import sys

from ptbench.errors import PtbenchError
from ptbench.results.store import export_frame, open_existing
from ptbench.cli._common import add_store, check_out_file, write_out

NAME = "export"
HELP = "export every stored run as csv, json or parquet"
DESCRIPTION = """\
One row per stored run (diagnostics as one JSON column), from --store (default
results/quick.db, the store the Quick start leaves). --flat gives one numeric column per
diagnostic instead, named diag.SIDE.NAME (diag.target.u_max_all, diag.strategy.fraction),
so that pandas.read_csv reads them as floats; trajectories are left out (`show --json` has
them).

examples:
  python -m ptbench export --format csv --out results/runs.csv
  python -m ptbench export --format json --store results/quick.db --out results/runs.json
  python -m ptbench export --flat --out results/flat.csv
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store(p)
    p.add_argument("--format", default="csv", choices=["csv", "json", "parquet"], help="output format (default: csv)")
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default: standard output; parquet needs a file)")
    p.add_argument("--flat", action="store_true", help="one numeric column per diagnostic (diag.SIDE.NAME) instead of one JSON column")


def main(args: argparse.Namespace) -> int:
    if args.out:
        check_out_file(args.out)  # before reading anything
    elif args.format == "parquet":
        raise PtbenchError("--format parquet needs --out FILE")
    with open_existing(args.store) as store:
        runs = store.frame()
    text = _flat(runs, args.format, args.out) if args.flat else _plain(runs, args.format, args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0


def _plain(runs, fmt: str, out: str | None) -> str | None:
    text = export_frame(runs, fmt, None) if fmt != "parquet" else None
    if fmt == "parquet":
        try:
            export_frame(runs, fmt, out)
        except OSError as err:
            raise PtbenchError(f"cannot write {out!r}: {err.strerror or err}; pass another --out") from None
        return None
    if out:
        write_out(out, text)
        return None
    return text


def _flat(runs, fmt: str, out: str | None) -> str | None:
    import json

    from ptbench.results.flatten import flat_frame

    frame = flat_frame(runs)
    if fmt == "parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError:
            raise PtbenchError("--format parquet needs pyarrow: pip install pyarrow") from None
        except OSError as err:
            raise PtbenchError(f"cannot write {out!r}: {err.strerror or err}; pass another --out") from None
        return None
    if fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        records = json.loads(frame.to_json(orient="records"))
        for record in records:
            for name in ("task_params", "strategy_params"):
                if isinstance(record.get(name), str):
                    record[name] = json.loads(record[name])
        text = json.dumps(records, indent=1)
    if out:
        write_out(out, text)
        return None
    return text
