"""How good is each physics prior alone (no head, no training) on the grouped test split? Prints a table.

    python benchmarks/priors.py [--recipe recipes/equiprop_mp_v1.yaml] [--relaxed-ion]

Per prior, on the test split's labelled crystals: the prior's MAE beside the training median's (and for the elastic
tensor the anisotropic-part error beside predicting the true isotropic part alone). The potential_energy
references are fitted on the training split exactly as a fit does (``PhysicsPriors.fit_references``). The Penn
prior is shown with the DFT gap label (an upper bound of what the model's own gap gives) and E_0 = 4 eV.
Caveat: SevenNet-0 was pretrained on Materials Project relaxation trajectories (these crystals' energy surfaces).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equiprop.train.run import build_datamodule
from equiprop.data import keys
from equiprop.data.tensor_ops import anisotropic_part, isotropic_part
from equiprop.nn.priors import PhysicsPriors
from equiprop.train.normalizer import TaskNormalizer

PRIORS = {"Ef": "potential_energy", "K_VRH": "potential_bulk_modulus", "G_VRH": "potential_shear_modulus",
          "elastic_tensor": "potential_stiffness", "eps_electronic": "penn"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/equiprop_mp_v1.yaml")
    parser.add_argument("--relaxed-ion", action="store_true")
    args = parser.parse_args()
    data = build_datamodule(args.recipe, [])
    data.setup("fit")
    tasks = {n: data.tasks[n] for n in PRIORS if n in data.tasks}
    priors = PhysicsPriors(tasks, {n: PRIORS[n] for n in tasks}, relaxed_ion=args.relaxed_ion, penn_gap_task="Eg")
    normalizer = TaskNormalizer(tasks)  # identity statistics: estimates stay in model space
    start = time.time()
    fit = priors.fit_references(DataLoader(data.subsets["train"], batch_size=64), "Ef")
    print(f"Ef references: {fit}")
    rows = {n: [] for n in tasks}
    for batch in DataLoader(data.subsets["test"], batch_size=32):
        for name in tasks:
            mask = batch[keys.mask_key(name)].bool()
            if not mask.any():
                continue
            model = priors.estimate(name, batch, mask, {}, normalizer) if PRIORS[name] != "penn" else \
                priors.estimate(name, batch, mask, {"Eg": batch[keys.label_key("Eg")].flatten()}, normalizer)
            physical = tasks[name].from_model(model[mask].detach().double().numpy())
            label = tasks[name].from_model(batch[keys.label_key(name)][mask].double().numpy())
            rows[name].append((physical, label))
    elapsed = time.time() - start
    train = data.subsets["train"]
    print(f"\n| task | test labels | prior alone MAE | training median MAE | units |\n|---|---|---|---|---|")
    for name, parts in rows.items():
        pred = np.concatenate([p for p, _ in parts])
        label = np.concatenate([l for _, l in parts])
        train_labels = tasks[name].from_model(train.labels({name: tasks[name]})[name].values.double().numpy())
        median = np.median(train_labels, axis=0)
        units = tasks[name].units
        if tasks[name].kind == "tensor":
            formula = tasks[name].formula
            err = np.mean([np.abs(p - l).mean() for p, l in zip(pred, label)])
            base = np.mean([np.abs(median - l).mean() for l in label])
            print(f"| {name} component | {len(label)} | {err:.4g} | {base:.4g} | {units} |")
            aniso = np.mean([np.abs(anisotropic_part(p, formula) - anisotropic_part(l, formula)).mean()
                             for p, l in zip(pred, label)])
            oracle = np.mean([np.abs(isotropic_part(l, formula) - l).mean() for l in label])
            print(f"| {name} anisotropic part | {len(label)} | {aniso:.4g} | {oracle:.4g} (isotropic oracle) | "
                  f"{units} |")
        else:
            print(f"| {name} | {len(label)} | {np.abs(pred - label).mean():.4g} | {np.abs(median - label).mean():.4g} "
                  f"| {units} |")
    print(f"\n{'relaxed' if args.relaxed_ion else 'clamped'}-ion stiffness; {elapsed:.0f} s including the potential's "
          "quantities (cached for later runs)")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
