"""``equiprop matbench``: one training per official MatBench fold, predictions in the official record format.

    equiprop matbench --task matbench_phonons -c recipes/matbench.yaml [--folds 0 1 2 3 4] [--trainer.* ...]
    equiprop matbench --task matbench_log_kvrh -c recipes/matbench.yaml --subset    (MatBench-subset protocol)
    equiprop matbench ... --run_name=my_variant --model.lr=0.001    (a variant of a recipe, in its own folder)
    equiprop matbench ... --seeds 0 1 2 3 4      (a deep ensemble per fold: one fit per seed, the mean predicts)

Each fold trains on that fold's training ids only (validation carved out of them, seeded) and predicts its test ids.
Finished folds (``fold_<k>/predictions.json``) are kept and skipped on re-run. With ``--seeds`` each fold trains
one member per seed (``fold_<k>/seed_<s>/``; same split and validation ids, different initialisation and batch
order), and the fold's prediction is the members' mean; the report gives the members' own MAEs beside it.
For complete tasks, once all five folds are finished, ``results.json.gz`` is written with matbench's own
``MatbenchBenchmark`` (which validates only complete tasks) and scored with ``MatbenchBenchmark.from_file``; subset
runs write ``subset_results.json`` instead (not a leaderboard result).

Data: ``--data-path`` names the task's file; else ``<shared>/matbench/<task>.json.gz`` when present; else matminer's
copy or download ($MATMINER_DATA). ``--shared`` (default: $EQUIPROP_SHARED_DATA) is the folder that holds
``matbench/`` (subset maps, leaderboard CSV), ``matminer-0.4.0/`` and ``perov5/``; the subset protocol needs it.
A fold outside 0-4 or a seed outside [0, 2**32) is refused before anything runs (``equiprop.workflows.options``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from equiprop.inference import Predictor, evaluate_split
from equiprop.data.errors import ConfigError
from equiprop.data.tasks import MATBENCH_TASKS
from equiprop.train.run import build_run, load_recipe, set_dotted
from equiprop.train.run_dir import check_run_name, run_path, runs_root
from equiprop.workflows.options import ArgumentParser, number, random_seed

SHARED_ENV = "EQUIPROP_SHARED_DATA"  # default of --shared: the folder holding matbench/, matminer-0.4.0/, perov5/
# task -> (matminer CSV, a task that CSV provides) holding the local structures of the subset protocol
SUBSET_STRUCTURES = {
    "matbench_dielectric": ("dielectric_constant", "Eg"), "matbench_mp_gap": ("dielectric_constant", "Eg"),
    "matbench_log_kvrh": ("elastic_tensor", "K_VRH"), "matbench_log_gvrh": ("elastic_tensor", "K_VRH"),
    "matbench_mp_e_form": ("flla_2015", "Ef"), "matbench_perovskites": ("perov5", "e_form_perovskite"),
}


def shared_folder(value: str | None, needed_for: str) -> Path:
    """The shared data folder given by --shared or $EQUIPROP_SHARED_DATA, checked before any fold trains."""
    if not value:
        raise ConfigError(f"{needed_for} needs the shared data folder (with matbench/, matminer-0.4.0/, perov5/): "
                          f"pass --shared DIR or set ${SHARED_ENV}")
    path = Path(value)
    if not (path / "matbench").is_dir():
        raise ConfigError(f"--shared (or ${SHARED_ENV}): {path} has no matbench/ folder; expected the folder "
                          f"with matbench/, matminer-0.4.0/ and perov5/")
    return path


def task_data_path(task: str, data_path: str | None, shared: str | None) -> str | None:
    """--data-path, else the shared folder's copy of the task if there is one, else None (matminer's copy)."""
    if data_path or not shared:
        return data_path
    placed = shared_folder(shared, "--shared") / "matbench" / f"{task}.json.gz"
    return str(placed) if placed.exists() else None


def source_config(task: str, subset: bool, data_path: str | None, shared: Path | None) -> dict:
    if not subset:
        return {"class_path": "equiprop.data.sources.MatbenchTask", "init_args": {"task": task, "path": data_path}}
    if task not in SUBSET_STRUCTURES:
        raise ConfigError(f"no subset protocol for {task}; available: {', '.join(SUBSET_STRUCTURES)}")
    csv, structure_task = SUBSET_STRUCTURES[task]
    if csv == "perov5":
        structures = {"class_path": "equiprop.data.sources.Perov5CSV", "init_args": {
            "paths": [str(shared / "perov5" / f"{part}.csv.gz") for part in ("test", "val")]}}
    else:
        structures = {"class_path": "equiprop.data.sources.MatminerCSV",
                      "init_args": {"path": str(shared / "matminer-0.4.0" / f"{csv}.csv.gz")}}
    return {"class_path": "equiprop.data.sources.matbench_subset.MatbenchSubset",
            "init_args": {"task": task, "map_path": str(shared / "matbench" / "subset_maps" / f"{task}.csv"),
                          "structures": structures, "structure_task": structure_task}}


def run_fold(recipe: dict, task: str, fold: int, subset: bool, source: dict, overrides: list[str],
             fold_dir: Path, seed: int | None = None) -> dict:
    """Train on the fold's training ids, predict its test ids: {"predictions": {id: value}, "mae": float}.
    ``seed`` replaces the recipe's training seed; the validation ids stay those of the recipe's seed."""
    label_task = MATBENCH_TASKS[task][0]
    split = {"class_path": "equiprop.data.splits.MatbenchFoldSplit",
             "init_args": {"task": task, "fold": fold, "val_fraction": recipe.get("matbench", {}).get(
                 "val_fraction", 0.1), "seed": recipe.get("seed_everything", 0), "restrict_to_present": subset}}
    fold_recipe = {k: v for k, v in recipe.items() if k != "matbench"}
    if seed is not None:
        fold_recipe["seed_everything"] = seed
    for key, value in {"data.sources": [source], "data.tasks": [label_task], "data.split": split,
                       "run_name": str(fold_dir.relative_to(runs_root()))}.items():
        fold_recipe = set_dotted(fold_recipe, key, value)
    trainer, model, datamodule = build_run(fold_recipe, overrides, fold_dir)
    trainer.fit(model, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path
    if best:
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    tested = evaluate_split(Predictor(model), datamodule, "test")[label_task]
    predictions = {i: float(v) for i, v in zip(tested.ids, tested.mean)}
    truth = {i: float(v) for i, v in zip(tested.ids, tested.true)}
    task_spec = model.tasks[label_task]
    errors = [abs(predictions[i] - truth[i]) for i in predictions]
    return {"predictions": predictions, "targets": truth, "mae": float(np.mean(errors)), "units": task_spec.units,
            "n_train": len(datamodule.subsets["train"]), "n_val": len(datamodule.subsets["val"]),
            "n_test": len(predictions), "best_checkpoint": best}


def finished_run(path: Path, train, label: str) -> dict:
    """The result stored at ``path`` (a predictions.json), else ``train()``'s, written last and atomically: the
    file's presence means the run is complete."""
    if path.exists():
        print(f"{label}: finished earlier, kept ({path})")
        return json.loads(path.read_text())
    return write_atomically(path, train())


def write_atomically(path: Path, result: dict) -> dict:
    """``result`` as JSON at ``path`` (a temporary file renamed over it: never half written); returns it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return json.loads(json.dumps(result))  # as read back: JSON types (int keys of dicts become str)


def ensemble_result(members: dict[int, dict]) -> dict:
    """A fold's deep-ensemble result from its members' (one per seed, same test ids): the mean prediction per test
    id, its MAE, and the members' own MAEs."""
    first = next(iter(members.values()))
    targets = first["targets"]
    ids = list(first["predictions"])
    mean = {i: float(np.mean([m["predictions"][i] for m in members.values()])) for i in ids}
    return {**{k: first[k] for k in ("units", "n_train", "n_val", "n_test")}, "predictions": mean, "targets": targets,
            "mae": float(np.mean([abs(mean[i] - targets[i]) for i in ids])),
            "seeds": sorted(members), "member_mae": [members[s]["mae"] for s in sorted(members)],
            "best_checkpoint": [members[s]["best_checkpoint"] for s in sorted(members)]}


def official_record(task: str, folds: dict[int, dict], data_path: str | None, out: Path) -> dict:
    """Record finished folds with matbench's MatbenchBenchmark and write results.json.gz; returns its scores."""
    from matbench.bench import MatbenchBenchmark

    from equiprop.data.sources.matbench import MatbenchTask

    benchmark = MatbenchBenchmark(autoload=False, subset=[task])
    mb_task = benchmark.tasks_map[task]
    try:
        mb_task.load()  # online: matminer's download (or its $MATMINER_DATA copy)
    except Exception:  # offline: the same official data, read by our MatbenchTask reader (ids + targets)
        import pandas as pd

        ids, _, targets, _ = MatbenchTask(task, path=data_path)._read(MATBENCH_TASKS[task][1])
        mb_task.df = pd.DataFrame({"structure": None, MATBENCH_TASKS[task][1]: targets}, index=ids)
    for fold, result in sorted(folds.items()):
        test_ids = mb_task.get_test_data(fold, include_target=False).index
        mb_task.record(fold, [result["predictions"][i] for i in test_ids],
                       params={"model": "equiprop", "best_checkpoint": result["best_checkpoint"]})
    tmp = out.with_name(out.name + ".tmp.json.gz")
    benchmark.to_file(str(tmp))
    os.replace(tmp, out)
    scored = MatbenchBenchmark.from_file(str(out))
    return {fold: scored.tasks_map[task].results[f"fold_{fold}"]["scores"]["mae"] for fold in folds}


def matbench_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="equiprop matbench", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(MATBENCH_TASKS))
    parser.add_argument("-c", "--config", required=True, help="a fit recipe (model, trainer, batch size, cutoff)")
    parser.add_argument("--folds", type=number(int, 0, 4), nargs="+", default=[0, 1, 2, 3, 4],
                        help="MatBench's five folds are 0 to 4")
    parser.add_argument("--subset", action="store_true", help="MatBench-subset protocol on local structures")
    parser.add_argument("--seeds", type=random_seed, nargs="+",
                        help="one member per seed and fold; the fold predicts the members' mean (deep ensemble)")
    parser.add_argument("--data-path", help="the task's orient='split' JSON(.gz) (default: <shared>/matbench/"
                        "<task>.json.gz if present, else $MATMINER_DATA or matminer's download)")
    parser.add_argument("--shared", default=os.environ.get(SHARED_ENV),
                        help=f"folder with matbench/, matminer-0.4.0/ and perov5/ (default: ${SHARED_ENV})")
    args, overrides = parser.parse_known_args(argv)
    recipe = load_recipe(args.config)
    # --run_name=X names the study's folder (each fold's own run name is set below, so it is not passed on)
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("--run_name=")]
    overrides = [o for o in overrides if not o.startswith("--run_name=")]
    run_name = check_run_name(names[-1] if names else recipe.get("run_name", "matbench"))
    run_dir = run_path(run_name, args.task + ("_subset" if args.subset else ""))
    shared = shared_folder(args.shared, "--subset") if args.subset else None
    data_path = task_data_path(args.task, args.data_path, args.shared)
    source = source_config(args.task, args.subset, data_path, shared)
    finished = {}
    for fold in args.folds:
        fold_dir = run_dir / f"fold_{fold}"
        if not args.seeds:
            finished[fold] = finished_run(fold_dir / "predictions.json", lambda: run_fold(
                recipe, args.task, fold, args.subset, source, overrides, fold_dir), f"fold {fold}")
            continue
        members = {seed: finished_run(fold_dir / f"seed_{seed}" / "predictions.json", lambda seed=seed: run_fold(
            recipe, args.task, fold, args.subset, source, overrides, fold_dir / f"seed_{seed}", seed),
            f"fold {fold} seed {seed}") for seed in args.seeds}
        finished[fold] = write_atomically(fold_dir / "predictions.json", ensemble_result(members))  # these seeds
    on_disk = {int(p.parent.name.removeprefix("fold_")): json.loads(p.read_text())
               for p in run_dir.glob("fold_*/predictions.json")}
    if not args.subset and sorted(on_disk) == [0, 1, 2, 3, 4]:  # matbench validates complete tasks only
        scores = official_record(args.task, on_disk, data_path, run_dir / "results.json.gz")
        print(f"official record scored by MatbenchBenchmark.from_file: MAE per fold {scores}")
    print(results_table(args.task, finished, args.subset, shared, run_dir, sorted(on_disk)))
    return 0


def results_table(task: str, folds: dict, subset: bool, shared: Path | None, run_dir: Path,
                  on_disk: list[int]) -> str:
    units = next(iter(folds.values()))["units"]
    seeds = next(iter(folds.values())).get("seeds")
    members = f"  members' MAE (seeds {' '.join(map(str, seeds))})" if seeds else ""
    lines = [f"{task}{' (MatBench-subset protocol: NOT a leaderboard result)' if subset else ''}",
             f"{'fold':>4} {'train':>6} {'val':>5} {'test':>5} {'MAE':>10}  units{members}"]
    lines += [f"{k:>4} {r['n_train']:>6} {r['n_val']:>5} {r['n_test']:>5} {r['mae']:>10.4g}  {units}"
              + ("  " + " ".join(f"{m:.4g}" for m in r["member_mae"]) if seeds else "")
              for k, r in sorted(folds.items())]
    maes = [r["mae"] for r in folds.values()]
    stderr = float(np.std(maes, ddof=1) / np.sqrt(len(maes))) if len(maes) > 1 else float("nan")
    mean = float(np.mean(maes))
    lines.append(f"mean MAE over {len(folds)} folds: {mean:.4g} ± {stderr:.2g} (standard error) {units}"
                 + (f"; members alone {np.mean([r['member_mae'] for r in folds.values()]):.4g}" if seeds else ""))
    if subset:
        import pandas as pd

        board = pd.read_csv(shared / "matbench" / "leaderboard_full_and_subset_mae.csv")
        short = task.removeprefix("matbench_")
        rows = board[board.task == short].sort_values("mae_shared_subset").head(5)
        lines += [f"  reference {r.algo}: {r.mae_shared_subset:.4g} on the same subset ({r.n_shared_subset} entries; "
                  f"trained on the full folds)" for r in rows.itertuples()]
        (run_dir / "subset_results.json").write_text(json.dumps({"task": task, "protocol": "matbench-subset",
                                                                 "folds": folds, "mean_mae": mean}, indent=1))
    elif len(on_disk) == 5:
        lines.append(f"official record: {run_dir / 'results.json.gz'} (MatbenchBenchmark.from_file)")
    else:
        lines.append(f"folds finished so far: {on_disk}; the official record is written when all 5 are")
    return "\n".join(lines)
