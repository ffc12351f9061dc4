"""``equiprop predict``: structure files in, a CSV/JSON table of predictions (and of refused inputs) out.

    equiprop predict --checkpoint CKPT [CKPT ...] | --model NAME --input INPUTS --output out.{csv,json}
                     [--tasks ...] [--mc-samples N] [--allow-unseen-elements] [--allow-failures] [--batch-size N]

What the model refuses, and why: ``equiprop.inference.predictor`` (the one predictor, also the screen's). Here:

- **Inputs** (``equiprop.data.inputs``, the grammar of every command): files, folders (one level deep), globs,
  extxyz frames, ASE ``.db`` rows, a recipe's ``data.sources`` and ``bundled:NAME``; files of unknown type and
  sub-folders are failed rows too (counted and named); hidden files (dotfiles) in folders are skipped silently.
- **Output**: CSV columns ``id, file, formula, <task> [units] ..., status, error`` (and ``<task>_std [units]`` with
  several members or MC samples); every input gets a row, in input order: ``status`` "ok", or "failed" with empty
  property cells and the reason in ``error``. JSON: ``{"checkpoint", "units", "predictions": [rows with status
  "ok"], "errors": [{"id", "file", "formula", "status": "failed", "reason", "error"}]}``. A binary task's output is
  the predicted probability of class 1, units "probability". The output's folder must exist and be writable:
  checked before anything is computed.
- **Exit status**: 0 when every input was predicted; 1 when any input failed (``--allow-failures``: 0 as long as
  something was predicted); 1 whenever nothing was predicted; 2 for a bad checkpoint, output path or argument.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from equiprop.data.errors import ConfigError, DataError, SkipLog
from equiprop.data.inputs import INPUT_HELP, InputFailure, read_structures
from equiprop.data.record import CrystalRecord
from equiprop.shipped import refuse_shipped
from equiprop.inference import STD_SUFFIX, Predictor, load_predictor
from equiprop.workflows.options import COMPILE_HELP, ArgumentParser, non_negative_int, positive_int


def check_output(path: Path, option: str = "--output") -> None:
    """ConfigError unless ``path`` can be written: outside every shipped model's folder, its folder exists and is
    writable (before any computing)."""
    path = Path(path)
    refuse_shipped(path, option)
    folder = path.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"{option} {path}: folder {folder} {problem}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: folder {folder} is not writable")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: file is not writable")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="equiprop predict", description="Predict properties of crystals.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a shipped pretrained model by name (`equiprop models`), e.g. equiprop-mp-v1")
    source.add_argument("--checkpoint", nargs="+",
                        help="a checkpoint written by `equiprop fit`; several (a deep ensemble) or one ensemble "
                             "manifest .json (`equiprop calibrate`) add <task>_std columns")
    parser.add_argument("--mc-samples", type=non_negative_int, default=None,
                        help="Monte-Carlo dropout draws per checkpoint (models trained with model.dropout)")
    parser.add_argument("--input", nargs="+", required=True, help=INPUT_HELP)
    parser.add_argument("--output", required=True, help="out.csv or out.json (its folder must exist)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--tasks", nargs="+",
                        help="predict only these tasks (default: every task the model offers by default; a shipped "
                             "model names the tasks it predicts only on request, and why, in its card)")
    parser.add_argument("--allow-unseen-elements", action="store_true",
                        help="predict structures with elements the model never saw in training (refused by default)")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 when some inputs fail (they are still rows with status 'failed')")
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    args = parser.parse_args(argv)
    if args.model is not None:
        from equiprop.shipped import resolve

        if not Path(resolve(args.model)).name == "model.json":
            parser.error("--model takes a shipped model's name (`equiprop models`); for a file use --checkpoint")
        args.checkpoint = [args.model]
    if Path(args.output).suffix not in (".csv", ".json"):
        parser.error("--output must end in .csv or .json")
    return args


def predict_command(argv: list[str]) -> int:
    args = parse_arguments(argv)
    output = Path(args.output)
    check_output(output)
    predictor = load_predictor(args.checkpoint, args.mc_samples, args.batch_size, args.allow_unseen_elements,
                               warn=False, tasks=args.tasks)
    for notice in predictor.notices:
        print(f"equiprop predict: warning: {notice}", file=sys.stderr)
    if args.compile and not predictor.compile_backbones():
        print("equiprop predict: warning: --compile: no member runs a backbone it applies to", file=sys.stderr)
    plan = read_structures(args.input)
    for notice in plan.notices:
        print(f"equiprop predict: skipped {notice}", file=sys.stderr)
    items = list(plan)
    records = [item for item in items if isinstance(item, CrystalRecord)]
    outcomes = iter(predictor.predict_records(records, progress=True))
    rows = [item.row() if isinstance(item, InputFailure) else row(item, next(outcomes)) for item in items]
    write_predictions(output, rows, output_units(predictor), " ".join(args.checkpoint), per_atom_outputs(predictor))
    report(rows, output, predictor, records)
    return exit_status(rows, args.allow_failures)


def row(record: CrystalRecord, outcome: dict | DataError) -> dict:
    if isinstance(outcome, DataError):
        return InputFailure.of(outcome, record.source, record=record).row()
    return {"id": record.id, "file": record.source, "formula": record.formula, "status": "ok", **outcome}


def output_units(predictor: Predictor) -> dict[str, str]:
    """Units of every output column, each std (same units) right after its value."""
    units = {}
    for name, unit in predictor.units().items():
        units[name] = unit
        if predictor.has_uncertainty:
            units[name + STD_SUFFIX] = unit
    return units


def per_atom_outputs(predictor: Predictor) -> list[str]:
    """Outputs that hold one value per atom (per-atom tasks and their std), in the input's atom order."""
    return [name for name in output_units(predictor)
            if predictor.tasks.get(name.removesuffix(STD_SUFFIX)) is not None
            and predictor.tasks[name.removesuffix(STD_SUFFIX)].level == "atom"]


def report(rows: list[dict], output: Path, predictor: Predictor, records: list[CrystalRecord]) -> None:
    failed = SkipLog(max_examples=5)
    for r in rows:
        if r["status"] == "failed":
            print(f"equiprop predict: failed {r['error']}", file=sys.stderr)
            failed.add(r["reason"], Path(r["file"]).name)
    ok = sum(r["status"] == "ok" for r in rows)
    summary = f"wrote {ok} predictions to {output}; {failed.total} inputs failed"
    print(summary + (": " + "; ".join(failed.lines()) if failed.total else ""))
    extrapolated = [f"{Path(r.source).name} ({', '.join(predictor.unseen_elements(r))})" for r in records
                    if predictor.allow_unseen_elements and predictor.unseen_elements(r)]
    if extrapolated:
        print(f"equiprop predict: warning: {len(extrapolated)} structures hold elements unseen in training, "
              f"predicted anyway (--allow-unseen-elements): {', '.join(extrapolated[:5])}", file=sys.stderr)


def exit_status(rows: list[dict], allow_failures: bool) -> int:
    ok = sum(r["status"] == "ok" for r in rows)
    if ok == 0:
        print("equiprop predict: error: nothing was predicted" + ("" if rows else " (no input files found)"),
              file=sys.stderr)
        return 1
    if ok < len(rows) and not allow_failures:
        print(f"equiprop predict: error: {len(rows) - ok} of {len(rows)} inputs failed (rows with status 'failed'); "
              "--allow-failures exits 0 when some inputs fail", file=sys.stderr)
        return 1
    return 0


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def write_predictions(path: Path, rows: list[dict], units: dict, checkpoint: str, per_atom: list[str] = ()) -> None:
    """CSV: one row per input (failed ones with empty property cells); JSON: predictions and errors apart.
    ``per_atom``: outputs with one value per atom (a list in the input's atom order; CSV header "(per atom)")."""
    if path.suffix == ".json":
        predictions = [{k: _plain(v) for k, v in r.items()} for r in rows if r["status"] == "ok"]
        errors = [r for r in rows if r["status"] == "failed"]
        extra = {"per_atom": list(per_atom)} if per_atom else {}
        path.write_text(json.dumps({"checkpoint": str(checkpoint), "units": units, **extra, "errors": errors,
                                    "predictions": predictions}, indent=1))
        return
    names = list(units)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "file", "formula"] + [f"{n} [{units[n]}]" + (" (per atom)" if n in per_atom else "")
                                                     for n in names] + ["status", "error"])
        for r in rows:
            values = [_csv_value(r[n]) if r["status"] == "ok" else "" for n in names]
            writer.writerow([r["id"], r["file"], r["formula"]] + values + [r["status"], r.get("error", "")])


def _csv_value(value):
    return json.dumps(_plain(value)) if isinstance(value, np.ndarray) else value
