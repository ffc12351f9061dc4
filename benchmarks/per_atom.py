"""A per-atom task's test error against honest baselines, per atom, on the recipe's test split.

    python benchmarks/per_atom.py --recipe recipes/ewald_site_potential.yaml \
        --checkpoint checkpoints/ewald_site_potential/best.ckpt [--task ewald_site_potential]

Baselines, fitted on the training atoms only: the training median of all atoms, and the training median of each
element (an atom's potential is set mostly by its own charge, hence its element). Prints one table row per predictor:
MAE and RMSE over the labelled test atoms, in the task's units.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equiprop.data import keys
from equiprop.inference import Predictor
from equiprop.train.run import build_datamodule


def labelled_atoms(subset, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, atomic numbers) of the labelled atoms of a subset."""
    values, numbers = [], []
    for graph in subset:
        mask = graph[keys.mask_key(task)]
        values.append(graph[keys.label_key(task)][mask].numpy())
        numbers.append(graph[keys.ATOMIC_NUMBERS][mask].numpy())
    return np.concatenate(values), np.concatenate(numbers)


@torch.no_grad()
def model_predictions(checkpoint: str, subset, task: str) -> np.ndarray:
    model = Predictor.from_checkpoint(checkpoint).models[0]
    out = []
    for batch in DataLoader(subset, batch_size=64):
        mask = batch[keys.mask_key(task)]
        out.append(model.predict_physical(batch, [task])[task][mask].double().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", default="ewald_site_potential")
    args = parser.parse_args()
    datamodule = build_datamodule(args.recipe)
    datamodule.setup("fit")
    units = datamodule.tasks[args.task].units
    train, train_z = labelled_atoms(datamodule.subsets["train"], args.task)
    test, test_z = labelled_atoms(datamodule.subsets["test"], args.task)
    by_element = {z: np.median(train[train_z == z]) for z in np.unique(train_z)}
    rows = {"training median (all atoms)": np.full_like(test, np.median(train)),
            "training median per element": np.array([by_element.get(z, np.median(train)) for z in test_z]),
            f"model {args.checkpoint}": model_predictions(args.checkpoint, datamodule.subsets["test"], args.task)}
    print(f"{args.task} on {len(test)} test atoms of {len(datamodule.subsets['test'])} test structures "
          f"({len(train)} training atoms)")
    print(f"| predictor | MAE ({units}) | RMSE ({units}) |\n|---|---|---|")
    for name, prediction in rows.items():
        error = prediction - test
        print(f"| {name} | {np.abs(error).mean():.3f} | {np.sqrt((error ** 2).mean()):.3f} |")


if __name__ == "__main__":
    main()
