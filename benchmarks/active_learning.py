"""Simulated active learning on the bundled data: does choosing labels by uncertainty (+ latent diversity) reach
random selection's test error with fewer labels?

    python benchmarks/active_learning.py [--task Ef] [--n0 50] [--per-round 50] [--rounds 6] [--seeds 0 1 2]
                                         [--epochs 40] [--mc-samples 10] [--diversity 0.5] [--out PREFIX]

A grouped split (GroupedSplit seed 0, val 0.1, test 0.15) is fixed; the pool is the training-split structures with a
label of the task, their labels hidden. Per seed, both strategies start from the same N0 random labels; each round
a model is trained from scratch on the labels revealed so far (an ``IdListSplit``: graphs come from the shared cache),
scored on the test split, and N more pool structures are revealed: ``random`` draws them, ``al`` takes
``equiprop suggest``'s choice (strategy uncertainty: MC-dropout sigma, greedy diverse selection in the first
member's invariant latent space; ``equiprop.uncertainty.acquisition``). Rows are appended to PREFIX.csv as fits
finish (a rerun skips done (strategy, round, seed)); then PREFIX.png (test MAE vs labels, mean +- standard error over
seeds) and PREFIX.md (table, label saving). Run from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from equiprop.train.run_dir import run_path, runs_root

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["strategy", "round", "seed", "n_labels", "task", "test_mae", "units", "val_spearman_abs_err_sigma",
          "fit_seconds", "epochs"]
STRATEGIES = ("random", "al")


def recipe(task: str, epochs: int, dropout: float, dataset: str = "default") -> dict:
    """A fast invariant model with feature dropout (MC-dropout sigma) on the bundled data, one task."""
    return {"seed_everything": 0,
            "trainer": {"max_epochs": epochs, "accelerator": "cpu", "log_every_n_steps": 5, "logger": False,
                        "enable_progress_bar": False, "enable_model_summary": False},
            "model": {"encoder": {"class_path": "equiprop.nn.InvariantEncoder",
                                  "init_args": {"num_features": 32, "num_layers": 2, "num_basis": 8}},
                      "dropout": dropout, "weighting": "fixed", "loss": "huber", "lr": 0.003, "scheduler": "cosine"},
            "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset",
                                  "init_args": {"dataset": dataset}}],
                     "tasks": [task], "cutoff": 4.5, "batch_size": 16, "eval_batch_size": 256}}


def fixed_split(task: str, dataset: str = "default") -> tuple[list[str], list[str], list[str]]:
    """(pool ids: training split with a label of the task, val ids, test ids) of the fixed grouped split."""
    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.sources import BundledDataset
    from equiprop.data.splits import GroupedSplit

    data = MultiTaskDataModule([BundledDataset(dataset)], [task], cutoff=4.5,
                               split=GroupedSplit(val_fraction=0.1, test_fraction=0.15, seed=0))
    data.setup("fit")
    ids = data.structure_ids
    labelled = set(data.dataset.labels({task: data.tasks[task]})[task].structures.tolist())
    split = data.split(ids, data.dataset.chemical_systems())
    return [ids[i] for i in split["train"] if i in labelled], [ids[i] for i in split["val"]], \
        [ids[i] for i in split["test"]]


def write_ids(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def fit(args, train_ids: list[str], val_ids: list[str], test_ids: list[str], seed: int, workdir: Path) -> dict:
    """Train from scratch on ``train_ids``; the test MAE and the best checkpoint."""
    from equiprop.train.run import build_run, set_dotted

    for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
        write_ids(workdir / f"{name}_ids.txt", ids)
    split = {"class_path": "equiprop.data.splits.IdListSplit",
             "init_args": {n: str(workdir / f"{n}_ids.txt") for n in ("train", "val", "test")}}
    run = set_dotted(dict(recipe(args.task, args.epochs, args.dropout, args.dataset), seed_everything=seed,
                          run_name=str(workdir.relative_to(runs_root()))), "data.split", split)
    start = time.time()
    trainer, model, datamodule = build_run(run, [], workdir)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)[0]
    return {"test_mae": float(metrics[f"test/{args.task}/mae"]), "units": model.tasks[args.task].units,
            "n_labels": len(datamodule.subsets["train"]), "epochs": trainer.current_epoch,
            "fit_seconds": round(time.time() - start, 1), "datamodule": datamodule,
            "checkpoint": workdir / "best.ckpt"}


def select(args, checkpoint: Path, datamodule, pool_ids: list[str], revealed: list[str]) -> tuple[list[str], float]:
    """``suggest``'s choice of the next labels (uncertainty + diversity), and Spearman(|err|, sigma) on val."""
    import torch
    from torch_geometric.loader import DataLoader

    from equiprop.uncertainty import calibration_metrics, load_predictor
    from equiprop.uncertainty.acquisition import greedy_diverse_selection
    from equiprop.workflows.calibrate import split_predictions
    from equiprop.workflows.suggest import predict_with_latents

    predictor = load_predictor([str(checkpoint)], mc_samples=args.mc_samples, batch_size=256, warn=False)
    true, mean, std = split_predictions(predictor, datamodule, "val")[args.task]
    spearman = calibration_metrics(mean - true, std)["spearman"]
    position = {id_: i for i, id_ in enumerate(datamodule.structure_ids)}
    known = set(revealed)
    candidates = [i for i in pool_ids if i not in known]

    def latents(ids):
        subset = datamodule.dataset.index_select(torch.as_tensor([position[i] for i in ids], dtype=torch.long))
        return predict_with_latents(predictor, DataLoader(subset, batch_size=256), args.task)

    _, sigma, z = latents(candidates)
    _, _, z_known = latents(revealed)
    picks, _ = greedy_diverse_selection(sigma, z, args.per_round, args.diversity, labelled=z_known)
    return [candidates[i] for i in picks], spearman


def done_rows(path: Path) -> set[tuple[str, str, str]]:
    return {(r["strategy"], r["round"], r["seed"]) for r in _rows(path)}


def append_row(path: Path, row: dict) -> None:
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, restval="", extrasaction="ignore")
        if f.tell() == 0:  # a new file: header first
            writer.writeheader()
        writer.writerow(row)


def run_seed(args, seed: int, pool_ids, val_ids, test_ids, table: Path) -> None:
    """Both strategies for one seed; done rows skipped, revealed ids read back from each round's folder."""
    root = Path(args.workdir) / f"{args.task}_s{seed}"
    start = [str(i) for i in np.random.default_rng(seed).choice(pool_ids, args.n0, replace=False)]
    for strategy in STRATEGIES:
        for round_ in range(args.rounds):
            done = done_rows(table)
            # round 0 is one fit for both strategies (the same N0 labels)
            workdir = root / ("r0" if round_ == 0 else f"{strategy}_r{round_}")
            revealed = start if round_ == 0 else (workdir / "train_ids.txt").read_text().split()
            nxt = root / f"{strategy}_r{round_ + 1}" / "train_ids.txt"
            need_next = round_ + 1 < args.rounds and not nxt.exists()
            shared = [r for r in _rows(table) if r["round"] == "0" and r["seed"] == str(seed)] if round_ == 0 else []
            if (strategy, str(round_), str(seed)) in done or (shared and (workdir / "best.ckpt").exists()):
                row = shared[0] if shared else None
                result = None
            else:
                result = fit(args, revealed, val_ids, test_ids, seed, workdir)
                row = None
            spearman = ""
            if need_next:
                if strategy == "random":  # seeded per (seed, round): reproducible without replaying earlier rounds
                    known = set(revealed)
                    remaining = [i for i in pool_ids if i not in known]
                    new = [str(i) for i in np.random.default_rng([seed, round_]).choice(
                        remaining, args.per_round, replace=False)]
                else:
                    datamodule = result["datamodule"] if result else _datamodule(workdir)
                    new, spearman = select(args, workdir / "best.ckpt", datamodule, pool_ids, revealed)
                write_ids(nxt, revealed + new)
            if (strategy, str(round_), str(seed)) in done:
                continue
            row = dict(row or result)
            row.update(strategy=strategy, round=round_, seed=seed, task=args.task,
                       val_spearman_abs_err_sigma=row.get("val_spearman_abs_err_sigma", "") if spearman == ""
                       else f"{spearman:.3f}")
            append_row(table, row)
            print(f"{strategy} seed={seed} round={round_} labels={row['n_labels']}: test MAE "
                  f"{float(row['test_mae']):.4g} {row['units']}"
                  + (f"; val Spearman(|err|, sigma) {spearman:.3f}" if spearman != "" else ""), flush=True)


def _rows(table: Path) -> list[dict]:
    if not table.exists():
        return []
    with table.open() as f:
        return list(csv.DictReader(f))


def _datamodule(workdir: Path):
    from equiprop.train.run import build_datamodule

    datamodule = build_datamodule(str(workdir / "recipe.yaml"), [])
    datamodule.setup("fit")
    return datamodule


# -- summary --------------------------------------------------------------------------------------------------------
def curves(table: Path) -> tuple[dict[str, dict[int, list[float]]], str]:
    rows = _rows(table)
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        out.setdefault(r["strategy"], {}).setdefault(int(r["n_labels"]), []).append(float(r["test_mae"]))
    return out, rows[0]["units"] if rows else ""


def labels_to_reach(curve: dict[int, list[float]], target: float) -> float | None:
    """Labels at which the mean curve first reaches ``target`` (linear interpolation between rounds)."""
    sizes = sorted(curve)
    means = [float(np.mean(curve[n])) for n in sizes]
    for k, (n, m) in enumerate(zip(sizes, means)):
        if m <= target:
            if k == 0:
                return float(n)
            n0, m0 = sizes[k - 1], means[k - 1]
            return float(n0 + (m0 - target) / (m0 - m) * (n - n0))
    return None


def summarise(args, table: Path, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from equiprop.workflows.scoreboard_inputs import git_state

    data, units = curves(table)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    lines = ["| strategy | labels | seeds | test MAE mean [" + units + "] | s.e. [" + units + "] |", "|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        curve = data.get(strategy, {})
        sizes = sorted(curve)
        mean = [np.mean(curve[n]) for n in sizes]
        se = [np.std(curve[n], ddof=1) / np.sqrt(len(curve[n])) if len(curve[n]) > 1 else 0.0 for n in sizes]
        ax.errorbar(sizes, mean, yerr=se, marker="o", capsize=3,
                    label="uncertainty + diversity (suggest)" if strategy == "al" else "random")
        lines += [f"| {strategy} | {n} | {len(curve[n])} | {m:.4f} | {s:.4f} |" for n, m, s in zip(sizes, mean, se)]
    ax.set_xlabel("labels used")
    ax.set_ylabel(f"test MAE [{units}]")
    ax.set_title(f"{args.task}: simulated active learning, mean ± s.e. over seeds")
    ax.legend()
    fig.savefig(out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    random_curve, al_curve = data.get("random", {}), data.get("al", {})
    verdict = "incomplete: both strategies need rows"
    if random_curve and al_curve:
        final_n = max(random_curve)
        target = float(np.mean(random_curve[final_n]))
        needed = labels_to_reach(al_curve, target)
        if needed is None:
            verdict = (f"AL does not reach random selection's final error ({target:.4g} {units} at {final_n} labels) "
                       f"within {max(al_curve)} labels: no saving; goal (30% fewer labels) NOT met")
        else:
            saving = 100 * (1 - needed / final_n)
            verdict = (f"AL reaches random selection's final error ({target:.4g} {units} at {final_n} labels) with "
                       f"{needed:.0f} labels: label saving {saving:.0f}%; goal (30% fewer labels) "
                       f"{'met' if saving >= 30 else 'NOT met'}")
    rho = [float(r["val_spearman_abs_err_sigma"]) for r in _rows(table)
           if r["val_spearman_abs_err_sigma"] and r["round"] == "0"]
    meta = [f"- command: `python benchmarks/active_learning.py {' '.join(sys.argv[1:])}`".rstrip(),
            f"- git: {git_state(REPO)}", f"- task {args.task}, seeds {args.seeds}, N0 {args.n0}, +{args.per_round} per "
            f"round, {args.rounds} rounds, {args.epochs} epochs, dropout {args.dropout}, MC samples "
            f"{args.mc_samples}, diversity {args.diversity}",
            f"- val Spearman(|err|, sigma) of the round-0 models: {', '.join(f'{r:.3f}' for r in rho) or 'n/a'}"]
    text = "# Active learning\n\n" + "\n".join(meta) + "\n\n" + "\n".join(lines) + f"\n\n{verdict}\n"
    out.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="Ef", help="a scalar task of the bundled data")
    parser.add_argument("--n0", type=int, default=50, help="random labels to start from")
    parser.add_argument("--per-round", type=int, default=50, help="labels revealed per round")
    parser.add_argument("--rounds", type=int, default=6, help="fits per strategy and seed (round 0: the N0 labels)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument("--diversity", type=float, default=0.5, help="LAMBDA of the greedy diverse selection")
    parser.add_argument("--out", default="docs/results/active_learning", help="PREFIX of .csv, .png, .md")
    parser.add_argument("--dataset", default="default", help="bundled dataset (tiny: a smoke test in seconds)")
    parser.add_argument("--workdir", default=str(run_path("active_learning")), help="run folders (under runs/)")
    parser.add_argument("--summary-only", action="store_true", help="rewrite .png/.md from the CSV, no training")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = out.with_suffix(".csv")
    if not args.summary_only:
        pool_ids, val_ids, test_ids = fixed_split(args.task, args.dataset)
        print(f"pool {len(pool_ids)} labelled training structures of {args.task}; val {len(val_ids)}, "
              f"test {len(test_ids)}", flush=True)
        for seed in args.seeds:
            run_seed(args, seed, pool_ids, val_ids, test_ids, table)
    print(summarise(args, table, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
