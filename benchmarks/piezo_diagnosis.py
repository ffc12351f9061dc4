"""Why is the piezoelectric tensor no better than predicting zero? Measurements on the bundled labels and features.

    python benchmarks/piezo_diagnosis.py [--recipe recipes/equiprop_mp_v1.yaml]

Prints: label statistics per split (how many crystals are polar / centrosymmetric, the size distribution of the
tensors and how much of the zero predictor's error the largest labels carry), how far labels sit from their
crystal's point-group-invariant subspace (frames and symmetry-forbidden components), what simple predictors score
(zero, the training median, each crystal's symmetry-projected training mean), and the magnitudes of the frozen
encoder's odd (g-) features beside its even ones on the piezo crystals.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from pymatgen.core import Lattice, Structure

from equiprop.train.run import build_datamodule
from equiprop.data import keys
from equiprop.data.symmetry import point_group_rotations, symmetrise

TASK = "piezo_tensor"


def _labels(subset, tasks):
    """(labels, model space; the graphs carrying them) of one split."""
    labels = subset.labels({TASK: tasks[TASK]})[TASK]
    return labels.values.double().numpy(), [subset[int(p)] for p in labels.structures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/equiprop_mp_v1.yaml")
    parser.add_argument("--features", action="store_true", help="also measure the frozen encoder's odd features")
    parser.add_argument("--shipped", action="store_true", help="also score equiprop-mp-v1 on the same crystals")
    args = parser.parse_args()
    data = build_datamodule(args.recipe, [])
    data.setup("fit")
    train, train_graphs = _labels(data.subsets["train"], data.tasks)
    test, test_graphs = _labels(data.subsets["test"], data.tasks)
    print("| split | labels | max abs component: median | 90% | 99% | max (C/m^2) | share of zero-MAE in top 10% |")
    print("|---|---|---|---|---|---|---|")
    for name, labels in (("train", train), ("test", test)):
        peak = np.abs(labels).reshape(len(labels), -1).max(1)
        per = np.abs(labels).reshape(len(labels), -1).mean(1)
        top = per >= np.quantile(per, 0.9)
        print(f"| {name} | {len(labels)} | {np.median(peak):.3f} | {np.quantile(peak, 0.9):.3f} | "
              f"{np.quantile(peak, 0.99):.3f} | {peak.max():.2f} | {per[top].sum() / per.sum():.0%} |")
    per_test = np.abs(test).reshape(len(test), -1).mean(1)
    train_peak = np.abs(train).max()
    in_range = np.abs(test).reshape(len(test), -1).max(1) <= train_peak
    print("\nlargest test labels (mean |component| C/m^2, max |component|, id):")
    for k in np.argsort(-per_test)[:4]:
        graph = test_graphs[k]
        print(f"  {per_test[k]:.3f}  {np.abs(test[k]).max():.2f}  {graph[keys.STRUCTURE_ID]}")
    print(f"share of the zero predictor's test MAE from the single largest label: {per_test.max() / per_test.sum():.0%}; "
          f"{int((~in_range).sum())} test crystals exceed the largest training component ({train_peak:.2f} C/m^2); "
          f"zero MAE without them {np.abs(test[in_range]).mean():.4f}")
    median = np.median(train, axis=0)
    zero_mae = np.abs(test).mean()
    print(f"\ntest component MAE: zero {zero_mae:.4f}; training median tensor {np.abs(test - median).mean():.4f} "
          f"C/m^2")
    # symmetry: the part of each label outside its crystal's point-group-invariant subspace, and the share of
    # components the symmetry allows
    forbidden, allowed, projected_mean = [], [], []
    train_mean = train.mean(0)
    for label, graph in zip(test, test_graphs):
        structure = Structure(Lattice(graph[keys.CELL][0].double().numpy()),
                              graph[keys.ATOMIC_NUMBERS].numpy(), graph[keys.POSITIONS].double().numpy(),
                              coords_are_cartesian=True)
        rotations = point_group_rotations(structure)
        forbidden.append(np.linalg.norm(label - symmetrise(label, rotations)) / max(np.linalg.norm(label), 1e-12))
        basis = np.eye(27).reshape(27, 3, 3, 3)
        basis = 0.5 * (basis + basis.transpose(0, 1, 3, 2))
        invariant = np.stack([symmetrise(b, rotations).ravel() for b in basis])
        allowed.append(np.linalg.matrix_rank(invariant, tol=1e-8))
        projected_mean.append(symmetrise(train_mean, rotations))
    print(f"label norm outside the point-group-invariant subspace: median {np.median(forbidden):.2e}, "
          f"max {np.max(forbidden):.2e}")
    counts = np.bincount(allowed)
    print("independent components allowed by symmetry (test crystals): "
          + ", ".join(f"{k}: {c}" for k, c in enumerate(counts) if c))
    print(f"training mean projected onto each crystal's symmetry: MAE {np.abs(test - np.stack(projected_mean)).mean():.4f}")
    if args.shipped:
        _shipped_model(data, test_graphs, test, in_range)
    if args.features:
        _feature_magnitudes(data, train_graphs[:256])


def _shipped_model(data, graphs, labels, in_range) -> None:
    from equiprop.inference import load_predictor

    predictor = load_predictor("equiprop-mp-v1")
    predictions = predictor.predict_graphs(graphs)
    pred = np.stack([np.asarray(p[TASK]) for p in predictions])
    if pred.shape[1:] != labels.shape[1:]:  # Voigt (3, 6) out: back to Cartesian
        from equiprop.data.tensor_ops import voigt_to_cartesian

        pred = np.stack([voigt_to_cartesian(p) for p in pred])
    error = np.abs(pred - labels)
    print(f"equiprop-mp-v1 test component MAE {error.mean():.4f} (zero {np.abs(labels).mean():.4f}); within the "
          f"training range {error[in_range].mean():.4f} (zero {np.abs(labels[in_range]).mean():.4f})")


def _feature_magnitudes(data, graphs) -> None:
    from equiprop.nn import FoundationEncoder

    encoder = FoundationEncoder(transfer="frozen", inversion_shortcut=False).eval()
    loader = DataLoader(graphs, batch_size=32)
    sums = None
    with torch.no_grad():
        for batch in loader:
            x = encoder(batch)
            squares = torch.stack([x[:, sl].pow(2).sum(1).mean() / (sl.stop - sl.start)
                                   for sl in encoder.irreps_out.slices()])
            sums = squares if sums is None else sums + squares
    rms = (sums / len(loader)).sqrt()
    print("\nrms per component of the frozen features on piezo crystals:")
    for (mul, ir), value in zip(encoder.irreps_out, rms):
        print(f"  {mul}x{ir}: {float(value):.4f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
