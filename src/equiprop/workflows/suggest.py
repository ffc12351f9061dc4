"""``equiprop suggest``: rank unlabelled candidate structures for the next DFT calculations.

    equiprop suggest --input INPUTS [...] --checkpoint CKPT [CKPT ...] (or one manifest .json)
                     --task NAME --budget N [--strategy uncertainty|window|ei] [--window LO HI] [--direction max|min]
                     [--best VALUE] [--diversity LAMBDA] [--labelled IDS.txt] [--mc-samples N]
                     [--reduce isotropic] --output out.csv

Scores come from the uncertain predictor's mean and (calibrated, with a manifest) sigma of one scalar output, or
of a tensor's isotropic scalar (``--reduce isotropic``: trace/3, Voigt bulk modulus; per draw) (``equiprop.uncertainty.acquisition``); the batch is picked greedily with a latent-space diversity term (the first
member's rotation-invariant per-structure features, as ``equiprop embed``), measured from the structures already
labelled and those picked before. Never proposed, each counted and reported: pool entries that carry a label of the
task (``bundled:`` data), ids listed in ``--labelled``, repeated ids (the first is kept), and inputs that cannot be
read or predicted (with the reason). Pool entries excluded as labelled still anchor the diversity term.

Numbers are refused at the command line when they cannot mean anything (``equiprop.workflows.options``): NaN or
infinite ``--best``, ``--window`` or ``--diversity``, a negative diversity, a budget below 1, LO >= HI.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from equiprop.data.tensor_ops import isotropic_scalar
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.inputs import INPUT_HELP, InputFailure, read_structures
from equiprop.data.record import CrystalRecord
from equiprop.uncertainty.acquisition import DIRECTIONS, STRATEGIES, acquisition_scores, greedy_diverse_selection
from equiprop.workflows.options import (ArgumentParser, finite_float, non_negative_float, non_negative_int,
                                       positive_int)
from equiprop.workflows.predict import check_output


def isotropic(values: np.ndarray) -> np.ndarray:
    """The isotropic scalar of user-form tensors (trace/3; Voigt bulk modulus of a 6x6), as ``--reduce isotropic``."""
    try:
        return isotropic_scalar(values)
    except ValueError as err:
        raise ConfigError(f"--reduce isotropic: {err}") from None


@torch.no_grad()
def predict_with_latents(predictor, batches, output: str, reduce: str | None = None
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(mean, std or None, latent vectors) of one scalar output over an iterable of batches; the encoder runs once
    per batch. ``reduce``: a tensor's isotropic scalar taken per draw (member and dropout mask), so its std is the
    spread of the reduced draws, times the tensor's std scale where calibrated."""
    means, stds, latents = [], [], []
    for batch in batches:
        draws = predictor.samples(batch, latents=latents)[output]
        mean, std = predictor.mean_std(output, draws if reduce is None else isotropic(draws))
        means.append(mean)
        stds.append(std)
    if not means:
        return np.zeros(0), None, np.zeros((0, 0))
    std = None if stds[0] is None else np.concatenate(stds)
    return np.concatenate(means), std, np.concatenate(latents)


def read_pool(inputs: list[str], tasks: dict) -> tuple[list[CrystalRecord | InputFailure], list[str]]:
    """Records (with the labels the inputs carry: ``bundled:`` data, recipes, extxyz ``info``) and failures, in input
    order, and what the sources behind the inputs skipped (entries, single labels)."""
    plan = read_structures(inputs, tasks=tasks)
    return list(plan), plan.notices


def read_labelled(path: str | None) -> set[str]:
    if path is None:
        return set()
    try:
        return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--labelled {path}: not a readable text file of ids ({type(err).__name__})") from None


def partition(items: list, task: str, labelled_ids: set[str]) -> tuple[list, list, Counter, list[str]]:
    """(candidates, labelled records, exclusion counts, failure messages): nothing is dropped uncounted."""
    candidates, labelled, excluded, failures, seen = [], [], Counter(), [], set()
    for item in items:
        if isinstance(item, InputFailure):
            excluded[f"unreadable ({item.reason})"] += 1
            failures.append(item.error)
        elif item.id in seen:
            excluded["duplicate id"] += 1
        elif task in item.labels or item.id in labelled_ids:
            excluded[f"labelled ({'label of ' + task + ' in the pool' if task in item.labels else '--labelled'})"] += 1
            labelled.append(item)
        else:
            candidates.append(item)
        if not isinstance(item, InputFailure):
            seen.add(item.id)
    return candidates, labelled, excluded, failures


def usable_graphs(predictor, records: list, checked: bool) -> tuple[list, list, list[DataError]]:
    """Graphs and records of those that can be predicted, and the errors of the others (the predictor's checks)."""
    graphs, kept, failures = predictor.checked_graphs(records, checked)
    return graphs, list(kept.values()), list(failures.values())


def batches(graphs: list, size: int):
    from torch_geometric.data import Batch

    for start in range(0, len(graphs), size):
        yield Batch.from_data_list(graphs[start:start + size])


def default_best(labelled: list, task: str, direction: str, reduce: str | None = None) -> float:
    values = [float(isotropic(np.asarray(r.labels[task], dtype=float)) if reduce else r.labels[task])
              for r in labelled if task in r.labels and (reduce or np.ndim(r.labels[task]) == 0)]
    if not values:
        raise ConfigError(f"--strategy ei needs --best VALUE: no pool entry carries a label of {task}")
    return max(values) if direction == "max" else min(values)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="equiprop suggest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="the pool: " + INPUT_HELP)
    parser.add_argument("--checkpoint", nargs="+", required=True, help="members (.ckpt) or one manifest .json")
    parser.add_argument("--task", required=True, help="the scalar output to acquire labels of")
    parser.add_argument("--budget", type=positive_int, required=True, help="structures to suggest (>= 1)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="uncertainty")
    parser.add_argument("--window", nargs=2, type=finite_float, metavar=("LO", "HI"),
                        help="target window (window): finite, LO < HI")
    parser.add_argument("--direction", choices=DIRECTIONS, default="max", help="improvement direction (ei)")
    parser.add_argument("--best", type=finite_float,
                        help="value to improve on (ei; default: best label in the pool)")
    parser.add_argument("--reduce", choices=["isotropic"], help="a tensor task's scalar: trace/3, Voigt bulk modulus")
    parser.add_argument("--diversity", type=non_negative_float, default=0.5,
                        help="LAMBDA >= 0 of the latent distance term, in median pairwise distances (0: off)")
    parser.add_argument("--labelled", help="text file of ids already labelled (one per line): never suggested")
    parser.add_argument("--mc-samples", type=non_negative_int,
                        help="dropout draws per member (default: the manifest's, or 0)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--allow-unseen-elements", action="store_true")
    parser.add_argument("--output", required=True, help="suggestions.csv (its folder must exist)")
    args = parser.parse_args(argv)  # every number finite and in range (equiprop.workflows.options)
    if Path(args.output).suffix != ".csv":
        parser.error("--output must end in .csv")
    if args.strategy == "window" and args.window is None:
        parser.error("--strategy window needs --window LO HI")
    if args.window is not None and not args.window[0] < args.window[1]:
        parser.error(f"argument --window: needs LO < HI; got {args.window[0]:g} {args.window[1]:g}")
    return args


def suggest_command(argv: list[str]) -> int:
    from equiprop.inference import load_predictor

    args = parse_arguments(argv)
    output = Path(args.output)
    check_output(output)
    predictor = load_predictor(args.checkpoint, mc_samples=args.mc_samples, batch_size=args.batch_size,
                               allow_unseen_elements=args.allow_unseen_elements, warn=False)
    for notice in predictor.notices:
        print(f"equiprop suggest: warning: {notice}", file=sys.stderr)
    units = predictor.units()
    if args.task not in units:
        raise ConfigError(f"--task {args.task}: not an output of these checkpoints (outputs: {', '.join(units)})")
    task = predictor.tasks.get(args.task)
    tensor = task is not None and task.rank > 0
    if tensor != (args.reduce is not None):
        raise ConfigError(f"--task {args.task} is a tensor: give --reduce isotropic (or a scalar output such as "
                          "K_Voigt)" if tensor else f"--reduce is for tensor tasks; {args.task} is a scalar")
    if not predictor.has_uncertainty:
        raise ConfigError(f"--strategy {args.strategy} needs a predicted sigma, and these checkpoints give none: give "
                          "several checkpoints (an ensemble), a manifest, or a model trained with model.dropout > 0 "
                          "and --mc-samples N")
    labelled_ids = read_labelled(args.labelled)
    items, loader_skips = read_pool(args.input, predictor.tasks)
    candidates, labelled, excluded, failures = partition(items, args.task, labelled_ids)
    graphs, candidates, errors = usable_graphs(predictor, candidates, checked=True)
    for err in errors:
        excluded[f"not predictable ({err.kind})"] += 1
        failures.append(str(err))
    if not candidates:
        raise ConfigError("no candidate left to suggest: excluded " + describe_counts(excluded))
    mu, sigma, latents = predict_with_latents(predictor, batches(graphs, args.batch_size), args.task,
                                             args.reduce)
    finite = np.isfinite(mu) & np.isfinite(sigma) & np.isfinite(latents).all(axis=1)
    for record in (r for r, ok in zip(candidates, finite) if not ok):
        excluded["not predictable (non-finite prediction)"] += 1
        failures.append(f"{record.source or record.id}: non-finite prediction of {args.task}")
    candidates = [r for r, ok in zip(candidates, finite) if ok]
    mu, sigma, latents = mu[finite], sigma[finite], latents[finite]
    if not candidates:
        raise ConfigError("no candidate left to suggest: " + describe_counts(excluded))
    reference_graphs, _, _ = usable_graphs(predictor, labelled, checked=False)
    reference = predict_with_latents(predictor, batches(reference_graphs, args.batch_size), args.task)[2]
    best = args.best if args.best is not None or args.strategy != "ei" else \
        default_best(labelled, args.task, args.direction, args.reduce)
    scores = acquisition_scores(args.strategy, mu, sigma, tuple(args.window) if args.window else None, best,
                                args.direction)
    picks, terms = greedy_diverse_selection(scores, latents, args.budget, args.diversity,
                                            labelled=reference if len(reference) else None)
    write_suggestions(output, [candidates[i] for i in picks], mu[picks], sigma[picks], scores[picks], terms,
                      args.strategy, units[args.task])
    for message in loader_skips:
        print(f"equiprop suggest: not in the pool (bundled loader): {message}", file=sys.stderr)
    for message in failures:
        print(f"equiprop suggest: skipped {message}", file=sys.stderr)
    unmatched = len(labelled_ids - {r.id for r in labelled})
    print(f"equiprop suggest: {len(picks)} of {len(candidates)} candidates suggested to {output} (strategy "
          f"{args.strategy}, diversity {args.diversity}" + (f", best {best:.4g} {units[args.task]}" if
                                                            args.strategy == "ei" else "") + "); "
          f"excluded: {describe_counts(excluded)}; diversity measured from {len(reference)} labelled structures"
          + (f"; {unmatched} --labelled ids are not in the pool" if unmatched else ""))
    if len(picks) < args.budget:
        print(f"equiprop suggest: warning: --budget {args.budget} but only {len(picks)} candidates", file=sys.stderr)
    return 0


def describe_counts(counts: Counter) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items())) if counts else "none"


def write_suggestions(path: Path, records: list, mu, sigma, scores, terms, strategy: str, units: str) -> None:
    score_units = {"uncertainty": units, "window": "probability", "ei": units}[strategy]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "id", "file", "formula", f"mu [{units}]", f"sigma [{units}]",
                         f"score [{score_units}]", "strategy", "distance term [median pairwise distances]"])
        for rank, (record, *values) in enumerate(zip(records, mu, sigma, scores, terms), start=1):
            writer.writerow([rank, record.id, record.source, record.formula, *(f"{v:.6g}" for v in values[:3]),
                             strategy, f"{values[3]:.4g}"])
