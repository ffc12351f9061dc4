"""An energy-and-forces model against honest baselines on its recipe's test split: energy, forces and stress.

    python scripts/emt_frames.py && equiprop fit -c recipes/forces_emt.yaml
    python benchmarks/forces.py --recipe recipes/forces_emt.yaml --checkpoint runs/forces_emt/best.ckpt

Baselines from the training split only: the energy as the training median energy per atom times the atom count, and
zero forces and zero stress (their training medians are ~0: a rattled crystal's forces average to zero). Prints one
table: MAE per structure (energy, eV), per force component (eV/Å) and per stress component (the task's units).
"""

from __future__ import annotations

import argparse

import numpy as np

from equiprop.inference import Predictor
from equiprop.inference.evaluate import evaluate_split, physical_labels
from equiprop.train.run import build_datamodule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/forces_emt.yaml")
    parser.add_argument("--checkpoint", default="runs/forces_emt/best.ckpt")
    args = parser.parse_args()
    data = build_datamodule(args.recipe)
    data.setup("fit")
    predicted = evaluate_split(Predictor.load([args.checkpoint]), data, "test", form="cartesian")
    train, test = data.subsets["train"], data.subsets["test"]
    energy = data.tasks["energy"]
    per_atom = physical_labels(energy, train.labels({"energy": energy})["energy"].values) / np.array(
        [train[i].num_nodes for i in range(len(train))])
    atoms = np.array([test[i].num_nodes for i in range(len(test))])
    rows = []
    for name in ("energy", "forces", "stress"):
        result, units = predicted[name], data.tasks[name].units
        baseline = np.median(per_atom) * atoms if name == "energy" else np.zeros_like(result.true)
        rows.append((name, units, len(result.true), np.abs(baseline - result.true).mean(),
                     np.abs(result.mean - result.true).mean()))
    print(f"{args.checkpoint} on the test split of {args.recipe} ({len(test)} structures)")
    print("| output | units | test labels | baseline MAE | model MAE | model / baseline |\n|---|---|---|---|---|---|")
    for name, units, count, base, model in rows:
        print(f"| {name} | {units} | {count} | {base:.4g} | {model:.4g} | {model / base:.2f}x |")


if __name__ == "__main__":
    main()
