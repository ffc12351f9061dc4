"""Training-set-size studies: one real fit per (model, N, seed), scored on a fixed held-out test split.

Used by ``recipes/learning_curve.py`` (equivariant vs invariant) and ``recipes/transfer_curve.py`` (scratch vs
fine-tuned vs frozen encoder). Results are appended to a CSV as they finish, so an interrupted study resumes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from equiprop.train.run import build_run, set_dotted
from equiprop.train.run_dir import run_path, runs_root

FIELDS = ["model", "requested", "n_train", "seed", "task", "metric", "mae", "units", "epochs"]


def split_config(n_train: int | None, seed: int, split_seed: int = 0) -> dict:
    """Grouped (by chemical system) base split, fixed across runs; the training part subsampled to n_train."""
    return {"class_path": "equiprop.data.splits.SubsampledSplit",
            "init_args": {"base": {"class_path": "equiprop.data.splits.GroupedSplit",
                                   "init_args": {"val_fraction": 0.1, "test_fraction": 0.15, "seed": split_seed}},
                          "n_train": n_train, "seed": seed}}


def fit_and_test(recipe: dict, task: str | dict, n_train: int | None, seed: int, workdir: Path,
                 overrides: list[str] = ()) -> dict:
    """One fit of ``recipe`` on ``n_train`` labels of ``task`` (None: all): test MAE, its units, the N used.

    ``task``: a task name, or a task definition such as {"name": "eps_electronic", "parametrization": "spd_log"}."""
    run = dict(recipe, seed_everything=seed, run_name=str(workdir.relative_to(runs_root())))
    run = set_dotted(set_dotted(run, "data.tasks", [task]), "data.split", split_config(n_train, seed))
    trainer, model, datamodule = build_run(run, list(overrides) + ["--trainer.enable_progress_bar=false",
                                                                   "--trainer.enable_model_summary=false"], workdir)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
    name = task["name"] if isinstance(task, dict) else task
    metric = model.tasks[name].kind_def.error_metric  # tensors: per Cartesian component
    return {"mae": float(metrics[f"test/{name}/{metric}"]), "metric": metric, "units": model.tasks[name].units,
            "n_train": len(datamodule.subsets["train"]), "epochs": trainer.current_epoch}


MEDIAN = "training-median"  # the honest floor of every curve: the median of the N training labels, predicted for all


def median_baseline(recipe: dict, task: str | dict, n_train: int | None, seed: int, workdir: Path,
                    overrides: list[str] = ()) -> dict:
    """Test MAE of the component-wise median of the same N training labels a fit of ``recipe`` would see (no fit)."""
    from equiprop.data import keys
    from equiprop.inference.evaluate import physical_labels
    from equiprop.workflows.scoreboard_inputs import training_labels

    run = dict(recipe, seed_everything=seed, run_name=str(workdir.relative_to(runs_root())))
    run = set_dotted(set_dotted(run, "data.tasks", [task]), "data.split", split_config(n_train, seed))
    _, model, datamodule = build_run(run, list(overrides), workdir)
    datamodule.setup("test")
    name = task["name"] if isinstance(task, dict) else task
    spec = datamodule.tasks[name]
    median = np.median(training_labels(datamodule, name), axis=0)
    true = [physical_labels(spec, batch[keys.label_key(name)][batch[keys.mask_key(name)]])
            for batch in datamodule.test_dataloader()]
    errors = np.abs(np.concatenate(true) - median)
    return {"mae": float(errors.mean()), "metric": spec.kind_def.error_metric,
            "units": spec.units, "n_train": len(datamodule.subsets["train"]), "epochs": 0}


def done_runs(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {(r["model"], r["requested"], r["seed"]) for r in csv.DictReader(f)}


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_study(models: dict[str, dict], task: str | dict, sizes: list[str], seeds: list[int], out: Path,
              overrides: list[str] = ()) -> None:
    """Every (model, size, seed) not yet in ``out``.csv; then the CSV summary and the PNG plot."""
    table = out.with_suffix(".csv")
    done = done_runs(table)
    task_name = task["name"] if isinstance(task, dict) else task
    for size in sizes:  # the baseline row of each (N, seed): no training, the first model's data and split
        for seed in seeds:
            if (MEDIAN, str(size), str(seed)) not in done:
                workdir = run_path(out.stem, f"{MEDIAN}_n{size}_s{seed}")
                result = median_baseline(next(iter(models.values())), task, None if size == "all" else int(size),
                                         seed, workdir, overrides)
                append_row(table, {"model": MEDIAN, "requested": size, "seed": seed, "task": task_name, **result})
    for name, recipe in models.items():
        for size in sizes:
            for seed in seeds:
                if (name, str(size), str(seed)) in done:
                    continue
                n = None if size == "all" else int(size)
                workdir = run_path(out.stem, f"{name}_n{size}_s{seed}")
                result = fit_and_test(recipe, task, n, seed, workdir, overrides)
                append_row(table, {"model": name, "requested": size, "seed": seed, "task": task_name, **result})
                print(f"{name} N={result['n_train']} seed={seed}: test MAE {result['mae']:.4g} {result['units']}")
    print(summary_table(table))
    plot(table, out.with_suffix(".png"), f"{task_name}: test MAE vs training labels")
    print(f"wrote {table} and {out.with_suffix('.png')}")


def plot(path: Path, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with path.open() as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 5))
    for model in sorted({r["model"] for r in rows}):
        sizes = sorted({int(r["n_train"]) for r in rows if r["model"] == model})
        maes = [[float(r["mae"]) for r in rows if r["model"] == model and int(r["n_train"]) == n] for n in sizes]
        ax.errorbar(sizes, [np.mean(m) for m in maes], yerr=[np.std(m) for m in maes], marker="o", capsize=3,
                    label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training labels N")
    ax.set_ylabel(f"test MAE [{rows[0]['units']}]" if rows else "test MAE")
    ax.set_title(title)
    ax.legend()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)


def summary_table(path: Path) -> str:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    lines = [f"{'model':<16} {'N':>6} {'seeds':>5} {'MAE mean':>10} {'std':>8}  units"]
    for model in sorted({r["model"] for r in rows}):
        for n in sorted({int(r["n_train"]) for r in rows if r["model"] == model}):
            maes = [float(r["mae"]) for r in rows if r["model"] == model and int(r["n_train"]) == n]
            lines.append(f"{model:<16} {n:>6} {len(maes):>5} {np.mean(maes):>10.4g} {np.std(maes):>8.3g}  "
                         f"{rows[0]['units']}")
    return "\n".join(lines)
