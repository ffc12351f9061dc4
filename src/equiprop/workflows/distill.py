"""``equiprop distill``: teach a fast (Phase-1) model with a slow (Phase-2) model's predictions on unlabelled crystals.

    equiprop distill --checkpoint TEACHER [...] -c STUDENT_RECIPE.yaml --input bundled:default pool.extxyz ...
                     [--tasks Ef Eg K_VRH G_VRH] [--run_name NAME] [--trainer.KEY=VALUE ...]

1. The student recipe's data (its sources and split) is built as for ``fit``: its validation and test structures
   stay exactly as they are, real labels only.
2. Every pool structure (``bundled:NAME``, or structure files: CIF, POSCAR, extxyz with many frames, folders) gets
   the teacher's prediction of each distilled task it has no real label of, except structures of the validation or
   test split and every structure of a chemical system found there (counted: the held-out chemistry stays unseen).
3. The pseudo-labels go to ``<workdir>/pseudo_labels.json.gz`` (equiprop records, with the teacher and units in its
   ``meta``) and the student trains on its recipe's sources plus that file, merged by id and cell: real labels take
   precedence, the teacher fills only the gaps. The split is an ``IdListSplit``: the recipe's val/test ids, every
   other structure in training.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from equiprop.data.errors import ConfigError, DataError, SkipLog
from equiprop.data.inputs import INPUT_HELP, InputFailure, read_structures
from equiprop.data.record import CrystalRecord
from equiprop.shipped import refuse_shipped
from equiprop.train.run_dir import run_path
from equiprop.workflows.options import ArgumentParser

CHUNK = 512  # pool structures per teacher pass: bounded memory for the graphs


def pool_records(items: list[str], skips: SkipLog):
    """CrystalRecords of the pool, without labels (the pool is unlabelled by definition); what cannot be read, and
    what the sources behind the inputs skipped, counted."""
    plan = read_structures(items)
    for notice in plan.notices:
        skips.add("skipped by its source", notice)
    for item in plan:
        if isinstance(item, InputFailure):
            skips.add(item.reason, item.error)
        else:
            yield item


def held_out(datamodule) -> tuple[set[str], set[str], dict[str, list[str]]]:
    """Ids and chemical systems of the validation and test splits, and every split's ids."""
    split = {name: subset.structure_ids() for name, subset in datamodule.subsets.items()}
    out = {i for name in ("val", "test") for i in split[name]}
    systems = {s for name in ("val", "test") for s in datamodule.subsets[name].chemical_systems()}
    return out, systems, split


def real_label_sets(datamodule, tasks: list[str]) -> dict[str, set[str]]:
    """{structure id: tasks it has a real label of} over the student's data."""
    dataset = datamodule.dataset
    labelled = dataset.labels({name: datamodule.tasks[name] for name in tasks})
    real = {sid: set() for sid in dataset.structure_ids()}
    ids = dataset.structure_ids()
    for name in tasks:
        for position in labelled[name].structures:
            real[ids[position]].add(name)
    return real


@torch.no_grad()
def pseudo_label(teacher, records: list[CrystalRecord], tasks: list[str], real: dict[str, set[str]],
                 skips: SkipLog) -> list[dict]:
    """Records (``CrystalRecord.to_dict`` layout) with the teacher's value of every task they lack."""
    out = []
    for record, prediction in zip(records, teacher.predict_records(records)):
        if isinstance(prediction, DataError):
            skips.add(f"teacher refused: {prediction.kind}", str(prediction))
            continue
        missing = [t for t in tasks if t not in real.get(record.id, set())]
        if not missing:
            skips.add("every distilled task has a real label (nothing to add)", record.id)
            continue
        record.labels = {t: np.asarray(prediction[t], dtype=np.float64) for t in missing}
        out.append(record.to_dict())
    return out


def write_pseudo_labels(path: Path, records: list[dict], meta: dict) -> None:
    with gzip.open(path, "wt") as f:
        json.dump({"meta": meta, "records": records}, f)


def student_recipe(recipe: dict, pseudo: Path, split_files: dict[str, Path], run_name: str) -> dict:
    """The student's recipe: its own sources plus the pseudo-labels, an IdListSplit, its own run name."""
    data = dict(recipe.get("data") or {})
    data = dict(data.get("init_args", data)) if "class_path" in data else data
    sources = list(data.get("sources") or [{"class_path": "equiprop.data.sources.BundledDataset",
                                           "init_args": {"dataset": "default"}}])
    sources.append({"class_path": "equiprop.data.sources.RecordsJSON",
                    "init_args": {"path": str(pseudo), "name": "teacher"}})
    data.update(sources=sources, split={"class_path": "equiprop.data.splits.IdListSplit",
                                        "init_args": {**{k: str(v) for k, v in split_files.items()},
                                                      "allow_missing": True}})
    return {**recipe, "run_name": run_name, "data": data}


def parse_arguments(argv: list[str]):
    parser = ArgumentParser(prog="equiprop distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True,
                        help="the teacher: checkpoint(s), an ensemble manifest or a shipped model's name")
    parser.add_argument("-c", "--config", required=True, help="the student's recipe (e.g. an invariant model)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="the unlabelled pool: " + INPUT_HELP)
    parser.add_argument("--tasks", nargs="+", help="tasks to distil (default: the student's tasks the teacher has)")
    parser.add_argument("--run_name", help="the student's run (default: <recipe run_name>_distilled)")
    parser.add_argument("--workdir", help="where pseudo-labels and split files go (default runs/<run>_pseudo)")
    return parser.parse_known_args(argv)


def distill_command(argv: list[str]) -> int:
    from equiprop.train.run import build_datamodule, fit, load_recipe
    from equiprop.train.run_dir import check_run_name
    from equiprop.inference import load_predictor

    args, overrides = parse_arguments(argv)
    recipe = load_recipe(args.config)
    run_name = check_run_name(args.run_name or f"{recipe.get('run_name') or Path(args.config).stem}_distilled")
    workdir = Path(args.workdir or run_path(f"{run_name}_pseudo"))
    refuse_shipped(workdir, "--workdir")
    teacher = load_predictor(args.checkpoint, batch_size=64, warn=False)
    datamodule = build_datamodule(args.config, [])
    datamodule.setup("fit")
    tasks = args.tasks or [t for t in datamodule.tasks if t in teacher.output_tasks]
    unknown = [t for t in tasks if t not in datamodule.tasks or t not in teacher.output_tasks]
    if unknown:
        raise ConfigError(f"--tasks {unknown}: not tasks of both the student recipe ({list(datamodule.tasks)}) and "
                          f"the teacher ({teacher.output_tasks})")
    excluded_ids, excluded_systems, split = held_out(datamodule)
    real = real_label_sets(datamodule, tasks)
    skips, kept, chunk, seen = SkipLog(max_examples=3), [], [], set()
    counts = Counter()
    for record in pool_records(args.input, skips):
        counts["read"] += 1
        if record.id in seen:
            skips.add("duplicate id in the pool (first kept)", record.id)
        elif record.id in excluded_ids:
            skips.add("in the validation/test split", record.id)
        elif record.chemical_system in excluded_systems:
            skips.add("chemical system of the validation/test split", record.id)
        else:
            seen.add(record.id)
            chunk.append(record)
        if len(chunk) >= CHUNK:
            kept += pseudo_label(teacher, chunk, tasks, real, skips)
            chunk = []
    kept += pseudo_label(teacher, chunk, tasks, real, skips)
    if not kept:
        raise ConfigError(f"no pool structure received a pseudo-label; skipped: {skips.lines()}")
    workdir.mkdir(parents=True, exist_ok=True)
    pseudo = workdir / "pseudo_labels.json.gz"
    units = {t: datamodule.tasks[t].units for t in tasks}
    write_pseudo_labels(pseudo, kept, {"provenance": f"predictions of teacher {' '.join(args.checkpoint)} (equiprop "
                                                     f"distill); not DFT labels", "units": units,
                                       "teacher": args.checkpoint, "tasks": tasks, "pool": args.input})
    held = set(split["val"]) | set(split["test"])
    train_ids = [i for i in split["train"]] + [d["id"] for d in kept if d["id"] not in held
                                              and d["id"] not in set(split["train"])]
    split_files = {}
    for name, ids in (("train", train_ids), ("val", split["val"]), ("test", split["test"])):
        split_files[name] = workdir / f"{name}_ids.txt"
        split_files[name].write_text("\n".join(ids) + "\n")
    student = student_recipe(recipe, pseudo, split_files, run_name)
    config = workdir / "student.yaml"  # the student's recipe, kept: `equiprop fit -c` on it retrains the student
    config.write_text(yaml.safe_dump(student, sort_keys=False))
    labelled = Counter(t for d in kept for t in d["labels"])
    print(f"equiprop distill: pool {counts['read']} structures; pseudo-labelled {len(kept)} "
          f"({', '.join(f'{t}: {labelled[t]} [{units[t]}]' for t in tasks)}); skipped {skips.total}"
          + (": " + "; ".join(skips.lines()) if skips.total else ""))
    print(f"equiprop distill: wrote {pseudo}; training the student {run_name} on {config}")
    fit(student, overrides)
    return 0
