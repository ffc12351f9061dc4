"""The long-range (Ewald) block against the same recipe without it: Ef, the dielectric tensor's isotropic part and
the piezoelectric tensor on the grouped test split, several seeds, paired by seed.

    python benchmarks/long_range.py --seeds 0 1 2 --epochs 20 [--recipe recipes/long_range.yaml]

Each seed fits the recipe twice (``--model.long_range=false`` / ``true``) under ``runs/long_range_<variant>_s<seed>``
(a finished run is reused), then scores its ``best.ckpt`` on the test split. Baselines from the training labels
only: the training median of Ef and of the isotropic part of eps_electronic, and the zero piezo tensor (the
training median of every component is 0). Prints one table per metric (mean ± standard error over seeds and the
paired difference on minus off) and the seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import numpy as np

from equiprop.data.tensor_ops import cartesian_isotropic_scalar
from equiprop.inference import Predictor
from equiprop.inference.evaluate import evaluate_split, physical_labels
from equiprop.train.run import build_datamodule, fit
from equiprop.train.run_dir import run_path

EPS, PIEZO = "eps_electronic", "piezo_tensor"


def scores(checkpoint: str, datamodule) -> dict[str, float]:
    """Test MAEs: Ef (eV/atom), eps_electronic's isotropic part (trace/3), piezo components (C/m^2)."""
    predicted = evaluate_split(Predictor.load([checkpoint]), datamodule, "test", form="cartesian")
    ef, eps, piezo = predicted["Ef"], predicted[EPS], predicted[PIEZO]
    return {"Ef": float(np.abs(ef.mean - ef.true).mean()),
            "eps_iso": float(np.abs(cartesian_isotropic_scalar(eps.mean, 2)
                                    - cartesian_isotropic_scalar(eps.true, 2)).mean()),
            "piezo": float(np.abs(piezo.mean - piezo.true).mean())}


def baselines(datamodule) -> dict[str, float]:
    train, test = datamodule.subsets["train"], datamodule.subsets["test"]
    out = {}
    for name, metric in (("Ef", "Ef"), (EPS, "eps_iso"), (PIEZO, "piezo")):
        task = datamodule.tasks[name]
        fitted = physical_labels(task, train.labels({name: task})[name].values)
        true = physical_labels(task, test.labels({name: task})[name].values)
        if metric == "Ef":
            out[metric] = float(np.abs(true - np.median(fitted)).mean())
        elif metric == "eps_iso":
            iso = cartesian_isotropic_scalar(true, 2)
            out[metric] = float(np.abs(iso - np.median(cartesian_isotropic_scalar(fitted, 2))).mean())
        else:
            out[metric] = float(np.abs(true).mean())  # the zero tensor
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/long_range.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"python benchmarks/long_range.py --recipe {args.recipe} --seeds {' '.join(map(str, args.seeds))} "
          f"--epochs {args.epochs}  (commit {commit})")
    results: dict[str, dict[int, dict]] = {"off": {}, "on": {}}
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    datamodule = None
    for seed in args.seeds:
        for variant in ("off", "on"):
            name = f"long_range_{variant}_s{seed}"
            checkpoint = run_path(name) / "best.ckpt"
            if not checkpoint.is_file():
                start = time.perf_counter()
                fit(args.recipe, [f"--seed_everything={seed}", f"--trainer.max_epochs={args.epochs}",
                                  f"--model.long_range={variant == 'on'}", f"--run_name={name}"])
                seconds[variant].append((time.perf_counter() - start) / args.epochs)
            if datamodule is None:
                datamodule = build_datamodule(args.recipe)
                datamodule.setup("fit")
            results[variant][seed] = scores(str(checkpoint), datamodule)
            print(json.dumps({"run": name, **results[variant][seed]}))
    base = baselines(datamodule)
    units = {"Ef": "eV/atom", "eps_iso": "dimensionless", "piezo": "C/m^2"}
    print("\n| metric | baseline | without | with long range | paired (with - without) | with / baseline |")
    print("|---|---|---|---|---|---|")
    for metric, unit in units.items():
        off = np.array([results["off"][s][metric] for s in args.seeds])
        on = np.array([results["on"][s][metric] for s in args.seeds])
        diff = on - off
        se = (lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan"))
        print(f"| {metric} ({unit}) | {base[metric]:.4f} | {off.mean():.4f} ± {se(off):.4f} | "
              f"{on.mean():.4f} ± {se(on):.4f} | {diff.mean():+.4f} ± {se(diff):.4f} | "
              f"{on.mean() / base[metric]:.2f}x |")
    for variant, values in seconds.items():
        if values:
            print(f"{variant}: {np.mean(values):.1f} s/epoch (fit wall time / epochs, this machine)")


if __name__ == "__main__":
    main()
