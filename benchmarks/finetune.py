"""Transfer modes of a pretrained backbone on MatBench folds, paired: the same official folds, seed and epochs for
every mode, test MAE per fold, mean ± standard error, the paired difference against frozen features, and the cost.

    python benchmarks/finetune.py --task matbench_phonons --folds 0 1 2 3 4 --epochs 40 --modes frozen last1
    python benchmarks/finetune.py --task matbench_log_kvrh --subset --modes frozen last1 last2_decay two_stage

Each mode is ``equiprop matbench -c recipes/matbench_foundation.yaml`` plus its overrides (``MODES``), run as the
user runs it, into ``runs/finetune_<mode>_e<epochs>/``. Seconds per epoch: a fold's wall time (training and
testing; features already cached by the first mode) divided by its epochs. Prints one table.
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
}


def run_fold(task: str, mode: str, fold: int, epochs: int, args) -> tuple[float, float]:
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
    return float(json.loads((folder / "predictions.json").read_text())["mae"]), seconds / epochs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="matbench_phonons")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["frozen", "last1"], choices=sorted(MODES))
    parser.add_argument("--subset", action="store_true", help="the MatBench-subset protocol (local structures)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    results = {}
    for mode in args.modes:
        results[mode] = [run_fold(args.task, mode, fold, args.epochs, args) for fold in args.folds]
        maes = [m for m, _ in results[mode]]
        print(f"{mode}: {' '.join(f'{m:.4g}' for m in maes)}", flush=True)
    print(f"\n{args.task}{' (subset)' if args.subset else ''}, folds {args.folds}, {args.epochs} epochs, "
          f"seed {args.seed}")
    print(f"{'mode':<12} " + " ".join(f"{'fold ' + str(f):>9}" for f in args.folds)
          + f" {'mean':>9} {'s.e.':>7} {'vs frozen':>16} {'s/epoch':>8}")
    frozen = np.array([m for m, _ in results.get("frozen", [])])
    for mode, rows in results.items():
        maes, per_epoch = np.array([m for m, _ in rows]), np.array([s for _, s in rows])
        se = maes.std(ddof=1) / np.sqrt(len(maes)) if len(maes) > 1 else float("nan")
        paired = ""
        if len(frozen) == len(maes) and mode != "frozen":
            diff = maes - frozen
            paired = f"{diff.mean():+.3g} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.2g}" if len(diff) > 1 else \
                f"{diff.mean():+.3g}"
        print(f"{mode:<12} " + " ".join(f"{m:>9.4g}" for m in maes)
              + f" {maes.mean():>9.4g} {se:>7.2g} {paired:>16} {np.median(per_epoch):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
