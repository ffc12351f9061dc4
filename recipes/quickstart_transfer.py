"""The README's main job: transfer learning on few labels, beside the from-scratch control and the shipped model.

    python recipes/quickstart_transfer.py [--n-train 200] [--seed 0] [--trainer.KEY=VALUE ...]

Three models of the bulk and shear moduli on the same N training labels and the same test crystals (those
equiprop-mp-v1 held out, grouped by chemical system):

1. transfer: ``recipes/quickstart_transfer.yaml``, readouts on frozen SevenNet-0 features;
2. from scratch: the same recipe with ``recipes/quickstart.yaml``'s equivariant encoder (random weights, 4.5 Å);
3. the training median of the N labels (the honest floor);

and, for reference, ``equiprop-mp-v1`` as shipped (trained on all the training labels, nothing trained here).
Prints the test table (MAE in GPa); the runs go to ``runs/quickstart_transfer{,_scratch}/``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from equiprop.train.run import build_run, load_recipe, set_dotted
from equiprop.train.run_dir import run_path

HERE = Path(__file__).resolve().parent
TASKS = ("K_VRH", "G_VRH")


def fit_and_test(recipe: dict, run_name: str, overrides: list[str]):
    workdir = run_path(run_name)
    shutil.rmtree(workdir, ignore_errors=True)  # a rerun starts clean (its own best.ckpt, never an old one)
    trainer, model, datamodule = build_run(dict(recipe, run_name=run_name), [
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *overrides], workdir)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
    return {task: float(metrics[f"test/{task}/mae"]) for task in TASKS}, datamodule


def shipped_and_median(datamodule) -> tuple[dict, dict, dict]:
    """Test MAE of equiprop-mp-v1 as shipped and of the training median, and the number of test labels."""
    from equiprop import load_predictor
    from equiprop.data import keys
    from equiprop.workflows.scoreboard_inputs import physical_labels, training_labels

    predictor = load_predictor("equiprop-mp-v1", batch_size=64, warn=False)
    errors = {task: [] for task in TASKS}
    truth = {task: [] for task in TASKS}
    for batch in datamodule.test_dataloader():
        predicted = predictor.predict_batch(batch)
        for task in TASKS:
            mask = batch[keys.mask_key(task)]
            true = physical_labels(datamodule.tasks[task], batch[keys.label_key(task)][mask])
            errors[task].append(np.abs(predicted[task][0][mask.numpy()] - true))
            truth[task].append(true)
    shipped = {task: float(np.concatenate(errors[task]).mean()) for task in TASKS}
    median = {task: float(np.abs(np.median(training_labels(datamodule, task)) - np.concatenate(truth[task])).mean())
              for task in TASKS}
    return shipped, median, {task: len(np.concatenate(truth[task])) for task in TASKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=200, help="training labels (structures) per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training subset and of both trainings")
    args, overrides = parser.parse_known_args()
    start = time.time()
    transfer = load_recipe(HERE / "quickstart_transfer.yaml")
    transfer = set_dotted(transfer, "data.split.init_args.n_train", args.n_train)
    transfer = set_dotted(set_dotted(transfer, "data.split.init_args.seed", args.seed), "seed_everything", args.seed)
    scratch_model = load_recipe(HERE / "quickstart.yaml")["model"]["encoder"]  # the from-scratch control's encoder
    scratch = set_dotted(set_dotted(transfer, "model.encoder", scratch_model), "data.cutoff", 4.5)

    print(f"[1/3] transfer: readouts on frozen SevenNet-0 features, {args.n_train} labels", flush=True)
    transferred, datamodule = fit_and_test(transfer, "quickstart_transfer", overrides)
    print(f"[2/3] control: the same recipe from scratch (equivariant encoder, random weights)", flush=True)
    from_scratch, _ = fit_and_test(scratch, "quickstart_transfer_scratch", overrides)
    print("[3/3] equiprop-mp-v1 as shipped, and the training median, on the same test crystals", flush=True)
    shipped, median, counts = shipped_and_median(datamodule)
    n_train = len(datamodule.subsets["train"])
    print(f"\nTest MAE (GPa) on the crystals equiprop-mp-v1 held out (grouped by chemical system); "
          f"{n_train} training labels; seed {args.seed}; {time.time() - start:.0f} s in all")
    header = (f"{'task':<7} {'n_test':>6} {'from scratch':>13} {'transfer (SevenNet-0)':>22} "
              f"{'training median':>16} {'| equiprop-mp-v1 (shipped)':>27}")
    print(header + "\n" + "-" * len(header))
    for task in TASKS:
        print(f"{task:<7} {counts[task]:>6} {from_scratch[task]:>13.1f} {transferred[task]:>22.1f} "
              f"{median[task]:>16.1f} {'| ':>6}{shipped[task]:>21.1f}")
    print("\nequiprop-mp-v1 learned from all the training labels (checkpoints/equiprop-mp-v1/README.md); the other "
          "columns from the same few. Fine-tune the shipped model itself: model.init_from: equiprop-mp-v1.")


if __name__ == "__main__":
    main()
