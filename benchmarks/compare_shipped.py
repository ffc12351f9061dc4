"""Paired comparison of two shipped models on the same test crystals (the same grouped split): per task, each model's
test MAE, the difference and its standard error by a paired bootstrap over test crystals.

    python benchmarks/compare_shipped.py checkpoints/equiprop_mp_v1_ensemble_calibration_predictions.npz \
        checkpoints/equiprop_mp_v2_ensemble_calibration_predictions.npz

Reads the (true, mean) arrays that ``equiprop ensemble``/``calibrate`` save beside their reports (the ensemble mean;
tensors as their independent components: 6 for a symmetric 3x3 in the order xx yy zz yz xz xy, 21 for the elastic
tensor, 18 for piezo); tensors: the MAE over those components, and for symmetric 3x3 tensors the error of the mean
eigenvalue (trace/3) too. 2,000 bootstrap resamples, seed 0.
"""

from __future__ import annotations

import argparse

import numpy as np


def per_crystal_errors(true: np.ndarray, mean: np.ndarray) -> dict[str, np.ndarray]:
    true, mean = true.reshape(len(true), -1), mean.reshape(len(mean), -1)
    errors = {"mae": np.abs(mean - true).mean(axis=1)}
    if true.shape[1] == 6:  # symmetric 3x3 (xx yy zz yz xz xy): the mean eigenvalue, trace/3
        errors["trace/3 mae"] = np.abs(mean[:, :3].mean(axis=1) - true[:, :3].mean(axis=1))
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    a, b = np.load(args.a), np.load(args.b)
    rng = np.random.default_rng(0)
    tasks = [k.split("/")[1] for k in a.files if k.startswith(f"{args.split}/") and k.endswith("/true")]
    print(f"| task | metric | A | B | B - A | s.e. (paired bootstrap) |\n|---|---|---|---|---|---|")
    for task in tasks:
        prefix = f"{args.split}/{task}/"
        if not np.array_equal(a[prefix + "true"], b[prefix + "true"]):
            raise SystemExit(f"{task}: the two files hold different test labels; not the same split")
        ea, eb = per_crystal_errors(a[prefix + "true"], a[prefix + "mean"]), \
            per_crystal_errors(b[prefix + "true"], b[prefix + "mean"])
        for metric in ea:
            diff = eb[metric] - ea[metric]
            draws = rng.integers(0, len(diff), size=(args.resamples, len(diff)))
            se = float(diff[draws].mean(axis=1).std())
            print(f"| {task} | {metric} | {ea[metric].mean():.4g} | {eb[metric].mean():.4g} | {diff.mean():+.4g} | "
                  f"{se:.2g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
