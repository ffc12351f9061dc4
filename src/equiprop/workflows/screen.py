"""``equiprop screen``: a streaming, resumable two-stage screen.

    equiprop screen --input PATH [PATH ...] --phase1 CKPT [CKPT ...] [--phase2 CKPT ...] [-c SELECTION.yaml]
                    --output OUT.csv [--workdir DIR] [--workers 2] [--batch-size 64] [--chunk-size 512]
                    [--shard I/N]

Phase 1 predicts every input with the Phase-1 checkpoints (an ensemble: mean and std over members); the selection
recipe (``equiprop.screening.selection``) chooses candidates; Phase 2 predicts those with the Phase-2 checkpoints.
Inputs are streamed in chunks (``equiprop.data.inputs``); completed chunks live in the work folder
(``equiprop.screening.store``, default ``OUT.csv.work/``), so a killed screen, run again with the same command,
continues where it stopped and computes nothing twice.

Across processes and machines: ``--shard I/N`` computes only shard I's chunks (contiguous blocks in input order) into
the shared work folder and writes no table. Run all N shards (e.g. a SLURM array); Phase 2 needs every shard's
Phase 1 (the selection is global), so a shard that finishes first says so and stops: run the shards again for
Phase 2, then the same command without ``--shard`` merges: it finds every chunk done, computes nothing, and writes
the table, byte for byte the one an unsharded run writes (the same chunk files in the same order). Chunks no shard
finished (a shard that died) are computed by the merge, so it is always complete.

Output table, one row per input item in input order: ``index, id, file, formula, status, reason, error``, Phase-1
values ``<output> [units]`` (and ``<output>_std [units]`` with uncertainty; tensors as JSON lists, Voigt 6x6 / 3x6
for elastic / piezo, as ``equiprop predict`` writes them), the reduced quantities the selection uses
(``eps_electronic.isotropic [dimensionless]`` ...), ``passes_windows``, ``chosen`` and ``chosen_by`` (window /
top_k / straddle / ""), and Phase-2 values ``p2_<output> [units]`` with ``p2_status, p2_reason, p2_error``.
``OUT.summary.json`` beside it: counts per stage, time and structures/s, checkpoints, the selection recipe, units.
Exit status: 0 when something was predicted in Phase 1 (failed inputs are rows and counts, not errors); 1 when
nothing was; 2 for a bad argument (a number out of range included), checkpoint, recipe or work folder. Its
DataLoader workers end with it, even when it is killed with SIGKILL (``equiprop.data.processes``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from equiprop.data.errors import ConfigError
from equiprop.screening import store as work
from equiprop.data.inputs import InputPlan, expand
from equiprop.screening.pipeline import META, run_stage, value_columns
from equiprop.screening.selection import load_selection, reduce_values, select
from equiprop.shipped import refuse_shipped, resolve_all
from equiprop.workflows.options import COMPILE_HELP, ArgumentParser, non_negative_int, positive_int, shard_spec
from equiprop.workflows.predict import check_output


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="equiprop screen", description="Two-stage, resumable screening.")
    parser.add_argument("--input", nargs="+", required=True,
                        help="folders, globs, CIF/POSCAR/extxyz files, ASE databases (.db) or bundled:NAME")
    parser.add_argument("--phase1", nargs="+", required=True,
                        help="Phase-1 checkpoint(s) (an ensemble), a manifest .json or a shipped model's name")
    parser.add_argument("--phase2", nargs="+", default=[],
                        help="Phase-2 checkpoint(s), manifest or shipped model (e.g. equiprop-mp-v1), for the "
                             "chosen candidates")
    parser.add_argument("-c", "--config", help="YAML recipe with a selection: section (default: choose all)")
    parser.add_argument("--output", required=True, help="OUT.csv or OUT.parquet (needs pyarrow)")
    parser.add_argument("--workdir", help="work folder for chunks and resuming (default: OUT.work beside OUT)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="DataLoader workers, each reading, building graphs and predicting whole chunks with one "
                             "torch thread (0: all in this process)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="structures per forward pass: 64 keeps a batch's per-edge tensors in cache (two workers "
                             "share the memory bus): 1,050 structures/s from extxyz vs 870 at 256 (docs/benchmarks.md)")
    parser.add_argument("--chunk-size", type=positive_int, default=512,
                        help="items per chunk: the unit of resuming, and of work handed to a worker")
    parser.add_argument("--threads", type=positive_int, help="torch threads with --workers 0 (default: all cores)")
    parser.add_argument("--mc-samples", type=non_negative_int,
                        help="MC-dropout draws per member (default: a manifest's, else 0)")
    parser.add_argument("--allow-unseen-elements", action="store_true",
                        help="predict structures with elements the model never saw in training (refused by default)")
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP + "; each worker compiles its own")
    parser.add_argument("--shard", type=shard_spec,
                        help="I/N: compute shard I of N (0-based) into the shared work folder and write no table; "
                             "run the command without --shard to merge")
    args = parser.parse_args(argv)  # every number in range (equiprop.workflows.options)
    if Path(args.output).suffix not in (".csv", ".parquet"):
        parser.error("--output must end in .csv or .parquet")
    return args


def check_parquet(output: Path) -> None:
    if output.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"--output {output}: writing Parquet needs pyarrow, which is not installed "
                              "(pip install pyarrow), or give an output ending in .csv") from None


def chunk_ranges(count: int, size: int) -> list[tuple[int, np.ndarray]]:
    return [(k, np.arange(k * size, min((k + 1) * size, count))) for k in range(-(-count // size))]


def shard_chunks(chunks: list, shard: tuple[int, int] | None) -> list:
    """Shard I of N's chunks: the I-th of N contiguous blocks (in input order, sizes differing by at most one)."""
    if shard is None:
        return chunks
    index, count = shard
    return [chunk for j, chunk in enumerate(chunks) if j * count // len(chunks) == index]


def iter_rows(store, stage: str, chunks):
    """(header, row) of every row of a stage's chunk files, in order (one chunk in memory at a time)."""
    for k, _ in chunks:
        header, rows = store.read_chunk(stage, k)
        for row in rows:
            yield header, row


def read_columns(store, stage: str, chunks, names) -> tuple[list[str], dict[str, list[str]]]:
    """The stage's header and the named columns (only those: tensors of other outputs are not kept)."""
    names = list(dict.fromkeys(names))
    header, columns = [], {name: [] for name in names}
    for header, row in iter_rows(store, stage, chunks):
        for name in names:
            columns[name].append(row[header.index(name)])
    return header, columns


def parse_cells(cells: list[str], shape: tuple) -> np.ndarray:
    """Floats (NaN where empty) or tensors (JSON lists; NaN-filled where empty) from CSV cells."""
    out = np.full((len(cells), *shape), np.nan)
    for i, cell in enumerate(cells):
        if cell:
            out[i] = json.loads(cell) if shape else float(cell)
    return out


def quantity_columns(selection, units, with_std) -> list[str]:
    names = []
    for q in selection.quantities:
        names += [f"{q.property} [{units[q.property]}]"] + ([f"{q.property}_std [{units[q.property]}]"] if with_std
                                                            else [])
    return names


def quantities(selection, cells: dict, units, shapes, with_std) -> tuple[dict, dict, dict]:
    """Means, sigmas (None without uncertainty) and output columns of the selection's quantities."""
    means, sigmas, columns = {}, {}, {}
    for q in selection.quantities:
        unit, shape = units[q.property], shapes[q.property]
        mean = parse_cells(cells[f"{q.property} [{unit}]"], shape)
        std = parse_cells(cells[f"{q.property}_std [{unit}]"], shape) if with_std else None
        means[q.label], sigmas[q.label] = reduce_values(mean, std, q.reduce)
        if q.reduce is not None:
            columns[f"{q.label} [{unit}]"] = means[q.label]
            if with_std:
                columns[f"{q.label}_std [{unit}]"] = sigmas[q.label]
    return means, sigmas, columns


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else repr(float(value))


def write_table(output: Path, header: list[str], rows) -> None:
    """Stream rows to OUT (a temporary file renamed into place; Parquet converted from it)."""
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}.csv")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    if output.suffix == ".parquet":
        import pyarrow.csv
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.csv.read_csv(tmp), output)
        tmp.unlink()
    else:
        os.replace(tmp, output)


def screen(args: argparse.Namespace) -> dict:
    """Run (or resume) a screen; returns the summary (also written to OUT.summary.json)."""
    output = Path(args.output)
    check_output(output)
    refuse_shipped(args.workdir or output.with_name(output.name + ".work"), "--workdir")
    check_parquet(output)
    # a shipped model's name -> its manifest, so that resuming compares the files behind it
    args.phase1, args.phase2 = resolve_all(args.phase1), resolve_all(args.phase2)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)  # workers (if any) run one thread each
    p1 = stage_predictor(args.phase1, args, "phase 1")
    p2 = stage_predictor(args.phase2, args, "phase 2") if args.phase2 else None
    units1, shapes1 = p1.units(), p1.output_shapes()
    selection = load_selection(args.config, shapes1)
    plan = InputPlan(expand(args.input, fast_cif=True))  # gemmi for CIFs it reads as pymatgen does (parity-tested)
    for notice in plan.notices:
        print(f"equiprop screen: skipped {notice}", file=sys.stderr)
    store = work.WorkDir(args.workdir or output.with_name(output.name + ".work"))
    resumed = store.open({
        "inputs": plan.signature(), "phase1": work.checkpoint_identity(args.phase1),
        "phase2": work.checkpoint_identity(args.phase2), "selection_sha256": selection.sha256(),
        "chunk_size": args.chunk_size, "allow_unseen_elements": args.allow_unseen_elements,
        "mc_samples": args.mc_samples})
    common = dict(workers=args.workers)
    chunks1 = chunk_ranges(len(plan), args.chunk_size)
    mine1 = shard_chunks(chunks1, args.shard)
    stats1 = run_stage(p1, plan, mine1, store, "phase1", total=sum(len(i) for _, i in mine1),
                       desc="phase 1", **common)
    waiting = [k for k, _ in chunks1 if not store.done("phase1", k)]
    if waiting:  # only with --shard: Phase 2 and the table need every shard's Phase 1
        return shard_summary(args, store, stats1, None, waiting)
    header1, cells = read_columns(store, "phase1", chunks1, ["status", "reason"]
                                  + quantity_columns(selection, units1, p1.has_uncertainty))
    header1 = header1 or META + value_columns(units1, p1.has_uncertainty)  # no inputs: the header still
    ok = np.array([s == "ok" for s in cells["status"]], dtype=bool)
    means, sigmas, reduced = quantities(selection, cells, units1, shapes1, p1.has_uncertainty)
    passes, chosen_by = select(selection, ok, means, sigmas)
    chosen = np.flatnonzero(chosen_by != "")
    p2_header, p2_rows, p2_cells, stats2 = [], iter(()), None, None
    if p2 is not None:
        chunks2 = [(j, chosen[j * args.chunk_size:(j + 1) * args.chunk_size])
                   for j in range(-(-len(chosen) // args.chunk_size))]
        mine2 = shard_chunks(chunks2, args.shard)
        stats2 = run_stage(p2, plan, mine2, store, "phase2", total=sum(len(i) for _, i in mine2),
                           desc="phase 2", **common)
        if args.shard is not None:  # other shards' Phase-2 chunks may still be running
            return shard_summary(args, store, stats1, stats2, [])
        p2_header = ["p2_status", "p2_reason", "p2_error"] + value_columns(p2.units(), p2.has_uncertainty, "p2_")
        _, p2_cells = read_columns(store, "phase2", chunks2, ["status", "reason"])
        p2_rows = iter_rows(store, "phase2", chunks2)  # in input order, as the chosen indices
    if args.shard is not None:  # the table is the merge's: shards never write it (nor race on it)
        return shard_summary(args, store, stats1, None, [])
    header = header1 + list(reduced) + ["passes_windows", "chosen", "chosen_by"] + p2_header
    write_table(output, header, table_rows(iter_rows(store, "phase1", chunks1), reduced, passes, chosen_by, p2_rows,
                                           len(p2_header)))
    summary = summarise(args, plan, cells, passes, chosen_by, p1, p2, stats1, stats2, p2_cells, selection, units1,
                        resumed, str(store.path))
    summary_path = output.with_name(output.stem + ".summary.json")
    work.atomic_write(summary_path, json.dumps(summary, indent=1))
    return summary


def table_rows(phase1_rows, reduced: dict, passes, chosen_by, phase2_rows, num_p2: int):
    """Rows of the output table: Phase-1 rows joined with the selection and, for the chosen, their Phase-2 row
    (both streams are in input order: a merge, never a table in memory)."""
    status_at = META.index("status")
    pending = next(phase2_rows, None)
    for n, (_, row) in enumerate(phase1_rows):
        extra = [""] * num_p2
        if pending is not None and int(pending[1][0]) == n:
            extra = pending[1][status_at:status_at + 3] + pending[1][len(META):]
            pending = next(phase2_rows, None)
        yield (row + [_cell(values[n]) for values in reduced.values()]
               + [bool(passes[n]), bool(chosen_by[n]), chosen_by[n]] + extra)


def summarise(args, plan, cells, passes, chosen_by, p1, p2, stats1, stats2, p2_cells, selection, units1, resumed,
              workdir) -> dict:
    reasons = Counter(r for r, s in zip(cells["reason"], cells["status"]) if s == "failed")
    notes = []
    if selection.straddle_sigmas and not p1.has_uncertainty:
        notes.append("Phase 1 has no uncertainty (one checkpoint): straddle_sigmas selects nothing")
    phase1 = {"read": len(plan), "ok": len(cells["status"]) - sum(reasons.values()), "failed": sum(reasons.values()),
              "failed_by_reason": dict(reasons), "passed_windows": int(passes.sum()), **stats1}
    chosen = Counter(c for c in chosen_by if c)
    summary = {"output": str(args.output), "workdir": workdir, "resumed": resumed, "inputs": args.input,
               "phase1": phase1,
               "selection": {"chosen": int(sum(chosen.values())), "chosen_by": dict(chosen),
                             "recipe": selection.recipe, "recipe_file": args.config, "notes": notes},
               "checkpoints": {"phase1": list(args.phase1), "phase2": list(args.phase2)},
               "units": {"phase1": units1, "phase2": p2.units() if p2 else {}},
               "settings": {"workers": args.workers, "batch_size": args.batch_size, "chunk_size": args.chunk_size,
                            "torch_threads": torch.get_num_threads(), "mc_samples": args.mc_samples}}
    if p2 is not None:
        failed2 = Counter(r for r, s in zip(p2_cells["reason"], p2_cells["status"]) if s == "failed")
        summary["phase2"] = {"read": len(p2_cells["status"]), "ok": len(p2_cells["status"]) - sum(failed2.values()),
                             "failed": sum(failed2.values()), "failed_by_reason": dict(failed2), **stats2}
    return summary


def shard_summary(args, store, stats1: dict, stats2: dict | None, waiting: list[int]) -> dict:
    """What a shard did, and what the screen still waits for (Phase-1 chunks of other shards)."""
    return {"shard": list(args.shard), "workdir": str(store.path), "phase1": stats1, "phase2": stats2,
            "phase1_chunks_waiting": len(waiting)}


def print_summary(summary: dict) -> None:
    if "shard" in summary:
        index, count = summary["shard"]
        one, two, waiting = summary["phase1"], summary["phase2"], summary["phase1_chunks_waiting"]
        lines = [f"shard {index}/{count}: phase 1: {one['structures_computed']} computed, "
                 f"{one['structures_resumed']} already done"]
        if waiting:
            lines.append(f"shard {index}/{count}: phase 2 waits for {waiting} phase-1 chunks of other shards "
                         f"(in {summary['workdir']}): run the shards again once all have finished phase 1")
        else:
            if two is not None:
                lines.append(f"shard {index}/{count}: phase 2: {two['structures_computed']} computed, "
                             f"{two['structures_resumed']} already done")
            lines.append("merge: run the same command without --shard (it computes only what no shard finished)")
        print("\n".join(lines))
        return
    one, sel = summary["phase1"], summary["selection"]
    lines = [f"phase 1: {one['read']} read, {one['ok']} predicted, {one['failed']} failed"
             + (f" ({', '.join(f'{n} x {r}' for r, n in one['failed_by_reason'].items())})" if one["failed"] else "")
             + f"; {one['structures_computed']} computed in {one['seconds']:.1f} s"
             + (f" ({one['structures_per_second']:.0f} structures/s)" if one["structures_per_second"] else "")
             + (f", {one['structures_resumed']} resumed from {summary['workdir']}" if one["structures_resumed"] else ""),
             f"selection: {one['passed_windows']} pass the windows; {sel['chosen']} chosen "
             f"({', '.join(f'{n} by {r}' for r, n in sel['chosen_by'].items()) or 'none'})"]
    lines += [f"selection: note: {note}" for note in sel["notes"]]
    if "phase2" in summary:
        two = summary["phase2"]
        lines.append(f"phase 2: {two['read']} candidates, {two['ok']} predicted, {two['failed']} failed; "
                     f"{two['structures_computed']} computed in {two['seconds']:.1f} s")
    lines.append(f"wrote {summary['output']} and its .summary.json")
    print("\n".join(lines))


def stage_predictor(paths: list[str], args, stage: str):
    """The stage's predictor (checkpoints, an ensemble manifest or a shipped model); its notices printed once."""
    from equiprop.inference import Predictor

    predictor = Predictor.load(list(paths), mc_samples=args.mc_samples, batch_size=args.batch_size,
                               allow_unseen_elements=args.allow_unseen_elements, warn=False)
    for notice in predictor.notices:
        print(f"equiprop screen: warning: {stage}: {notice}", file=sys.stderr)
    if args.compile and not predictor.compile_backbones():
        print(f"equiprop screen: warning: {stage}: --compile: no member runs a backbone it applies to", file=sys.stderr)
    return predictor


def screen_command(argv: list[str]) -> int:
    args = parse_arguments(argv)
    start = time.perf_counter()
    summary = screen(args)
    print_summary(summary)
    print(f"total {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if "shard" not in summary and summary["phase1"]["ok"] == 0:
        print("equiprop screen: error: nothing was predicted in Phase 1", file=sys.stderr)
        return 1
    return 0
