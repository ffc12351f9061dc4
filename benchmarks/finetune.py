"""Transfer modes of a pretrained backbone on MatBench folds, paired: the same official folds, seed and epochs for
every mode, test MAE per fold, mean ± standard error, the paired difference against frozen features, and the cost.

    python benchmarks/finetune.py --task matbench_phonons --folds 0 1 2 3 4 --epochs 40 --modes frozen last1
    python benchmarks/finetune.py --task matbench_log_kvrh --subset --modes frozen last1 last2_decay two_stage
    python benchmarks/finetune.py --modes last1_x3 last1_x3_replay --baseline last1_x3

Each mode is ``equiprop matbench -c recipes/matbench_foundation.yaml`` plus its overrides (``MODES``), run as the
user runs it, into ``runs/finetune_<mode>_e<epochs>/``. Seconds per epoch: a fold's wall time (training and
testing; features already cached by the first mode) divided by its epochs. Prints one table; for a full MatBench
task also the MAE over the test structures whose chemical system no training structure of the fold has.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from equiprop.train.run_dir import run_path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "frozen": [],
    "last1": ["--model.encoder.init_args.transfer=finetune", "--model.encoder.init_args.trainable_layers=1",
              "--model.encoder_lr_factor=1.0"],
    "last2_decay": ["--model.encoder.init_args.transfer=finetune", "--model.encoder.init_args.trainable_layers=2",
                    "--model.encoder_lr_factor=1.0", "--model.layer_lr_decay=0.5", "--model.warmup_epochs=2"],
    "last1_x3": ["--model.encoder.init_args.transfer=finetune", "--model.encoder.init_args.trainable_layers=1",
                 "--model.encoder_lr_factor=3.0", "--model.warmup_epochs=2"],
    # heads first on the frozen backbone, then its last two layers join (Lightning's BackboneFinetuning) at 0.1x
    "two_stage": ["--model.encoder.init_args.transfer=finetune", "--model.encoder.init_args.trainable_layers=2",
                  '--trainer.callbacks=[{"class_path": "lightning.pytorch.callbacks.BackboneFinetuning", '
                  '"init_args": {"unfreeze_backbone_at_epoch": 10, "backbone_initial_ratio_lr": 0.1}}]'],
    "full_decay": ["--model.encoder.init_args.transfer=finetune", "--model.encoder_lr_factor=0.3",
                   "--model.layer_lr_decay=0.7", "--model.warmup_epochs=2"],
    # last1_x3 with SevenNet-0's own energies and forces kept close to the pretrained potential's (train.potential_replay)
    # on 2 structures per step: the forces' double backward through every layer costs ~0.7 s per structure on 2 cores
    "last1_x3_replay": ["--model.encoder.init_args.transfer=finetune", "--model.encoder.init_args.trainable_layers=1",
                        "--model.encoder_lr_factor=3.0", "--model.warmup_epochs=2", "--model.potential_replay=1.0",
                        "--model.replay_structures=2"],
}


def unseen_systems_mae(task: str, fold: int, predictions: dict[str, float], args) -> tuple[float, int]:
    """(MAE, count) over the fold's test structures whose chemical system no training structure of the fold has:
    how a mode does on unseen chemistry (MatBench folds are random, not grouped by chemical system)."""
    from equiprop.data.sources.matbench import MatbenchTask, matbench_folds
    from equiprop.data.tasks import MATBENCH_TASKS, resolve_tasks

    label = MATBENCH_TASKS[task][0]
    records = MatbenchTask(task, path=str(Path(args.shared) / "matbench" / f"{task}.json.gz")).load(
        resolve_tasks([label])).records
    system = {r.id: "-".join(sorted({str(z) for z in r.numbers})) for r in records}
    truth = {r.id: float(r.labels[label]) for r in records}
    train, _ = matbench_folds(task)[fold]
    seen = {system[i] for i in train}
    errors = [abs(value - truth[i]) for i, value in predictions.items() if system[i] not in seen]
    return (float(np.mean(errors)) if errors else float("nan")), len(errors)


def run_fold(task: str, mode: str, fold: int, epochs: int, args) -> tuple[float, float, float]:
    run = f"finetune_{mode}_e{epochs}"
    command = [sys.executable, "-m", "equiprop.cli", "matbench", "--task", task, "-c",
               str(REPO / "recipes" / "matbench_foundation.yaml"), "--folds", str(fold), f"--run_name={run}",
               f"--trainer.max_epochs={epochs}", f"--seed_everything={args.seed}", *MODES[mode]]
    command += ["--subset", "--shared", args.shared] if args.subset else [
        "--data-path", str(Path(args.shared) / "matbench" / f"{task}.json.gz")]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{mode} fold {fold} failed:\n{done.stderr[-3000:]}")
    folder = REPO / run_path(run) / (task + ("_subset" if args.subset else "")) / f"fold_{fold}"
    written = json.loads((folder / "predictions.json").read_text())
    unseen = float("nan") if args.subset else unseen_systems_mae(task, fold, written["predictions"], args)[0]
    return float(written["mae"]), seconds / epochs, unseen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="matbench_phonons")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["frozen", "last1"], choices=sorted(MODES))
    parser.add_argument("--subset", action="store_true", help="the MatBench-subset protocol (local structures)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--baseline", default="frozen", help="the mode the others are paired against")
    args = parser.parse_args()
    results = {}
    for mode in args.modes:
        results[mode] = [run_fold(args.task, mode, fold, args.epochs, args) for fold in args.folds]
        maes = [row[0] for row in results[mode]]
        print(f"{mode}: {' '.join(f'{m:.4g}' for m in maes)}", flush=True)
    print(f"\n{args.task}{' (subset)' if args.subset else ''}, folds {args.folds}, {args.epochs} epochs, "
          f"seed {args.seed}")
    print(f"{'mode':<12} " + " ".join(f"{'fold ' + str(f):>9}" for f in args.folds)
          + f" {'mean':>9} {'s.e.':>7} {'vs ' + args.baseline:>16} {'s/epoch':>8} {'unseen systems':>16}")
    baseline = {name: np.array([row[column] for row in results.get(args.baseline, [])]) for name, column in
                (("mae", 0), ("unseen", 2))}
    for mode, rows in results.items():
        maes, per_epoch = np.array([row[0] for row in rows]), np.array([row[1] for row in rows])
        unseen = np.array([row[2] for row in rows])
        se = maes.std(ddof=1) / np.sqrt(len(maes)) if len(maes) > 1 else float("nan")
        paired = ""
        frozen = baseline["mae"]
        if len(frozen) == len(maes) and mode != args.baseline:
            diff = maes - frozen
            paired = f"{diff.mean():+.3g} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.2g}" if len(diff) > 1 else \
                f"{diff.mean():+.3g}"
        print(f"{mode:<12} " + " ".join(f"{m:>9.4g}" for m in maes)
              + f" {maes.mean():>9.4g} {se:>7.2g} {paired:>16} {np.median(per_epoch):>8.1f}"
              + (f" {np.nanmean(unseen):>16.4g}" if not args.subset else ""))
        if not args.subset and len(baseline["unseen"]) == len(unseen) and mode != args.baseline:
            diff = unseen - baseline["unseen"]
            print(f"{'':<12} unseen chemical systems, paired vs {args.baseline}: {np.nanmean(diff):+.3g} ± "
                  f"{np.nanstd(diff, ddof=1) / np.sqrt(np.isfinite(diff).sum()):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
