"""Augmentation on the scarce tasks (issue 30, item 4): one recipe with and without each augmentation option
(``data.augment``, ``model.denoise_weight``), paired over seeds: test MAE per seed, mean ± standard error, and the
paired difference against no augmentation (same seeds, same training subsets, same test structures).

    # K and G at 100 labels, the transfer curve's protocol (bundled data, grouped split, fixed held-out test set of
    # 160 structures, the N training labels subsampled per seed; recipes/finetune_kg.yaml settings, 30 epochs):
    # frozen SevenNet-0 gave 17.4 ± 0.5 GPa for K at 100 labels (docs/benchmarks.md, seeds 0 1 2)
    python benchmarks/augmentation.py --studies K_VRH@100 G_VRH@100 K_VRH@400 --model frozen
    python benchmarks/augmentation.py --studies K_VRH@100 --model scratch --variants none noise strain denoise
    # MatBench, fold 0 (recipes/matbench_foundation.yaml; subsets need --shared): log_kvrh/log_gvrh subsets with
    # their fold-0 training ids subsampled to N, the dielectric subset and phonons with all their training ids
    python benchmarks/augmentation.py --studies log_kvrh@100 log_gvrh@400 dielectric phonons --shared ../shared/data

Studies: ``K_VRH@N`` / ``G_VRH@N`` (``workflows.curves.fit_and_test`` on the recipes of ``recipes/transfer_curve.py``:
``--model frozen`` or ``scratch``), ``log_kvrh@N`` / ``log_gvrh@N`` / ``dielectric`` / ``phonons``
(``workflows.matbench.run_fold``, fold 0, on ``--matbench-recipe``). Variants (``VARIANTS``): none, noise
(``--noise`` Å), strain (``--strain``, on ``--strain-fraction`` of the structures), noise_strain, denoise (noise plus
``model.denoise_weight = --denoise-factor / noise^2``: needs the module option, and an encoder that trains; with a
frozen encoder the denoising readout shares no weight with the property heads). Any other ``--a.b=value`` is passed
to every fit. Each fit lands in ``runs/augmentation/<study>/<variant>/seed_<s>/`` with its result (and seconds);
finished fits are kept and skipped on re-run. With frozen SevenNet-0, an augmented structure's features are computed
at every step (new geometry each time), where the unaugmented run reads them from the feature cache: such a fit costs
what featurising its training structures once per epoch costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from equiprop.train.run import load_recipe
from equiprop.train.run_dir import run_path
from equiprop.workflows.curves import fit_and_test
from equiprop.workflows.matbench import finished_run, run_fold, shared_folder, source_config, task_data_path

REPO = Path(__file__).resolve().parents[1]
MATBENCH = {"log_kvrh": ("matbench_log_kvrh", True), "log_gvrh": ("matbench_log_gvrh", True),
            "dielectric": ("matbench_dielectric", True), "phonons": ("matbench_phonons", False)}  # task, subset
BUNDLED = ("K_VRH", "G_VRH")
REFERENCE = {("K_VRH@100", "frozen"): "17.4 ± 0.5 GPa (frozen SevenNet-0, docs/benchmarks.md, commit 5733553)",
             ("K_VRH@100", "scratch"): "42.6 ± 6.5 GPa (scratch, docs/benchmarks.md, commit 5733553)"}


def variants(args) -> dict[str, list[str]]:
    noise = [f"--data.augment.noise={args.noise}"]
    strain = [f"--data.augment.strain={args.strain}", f"--data.augment.strain_fraction={args.strain_fraction}"]
    return {"none": [], "noise": noise, "strain": strain, "noise_strain": noise + strain,
            "denoise": noise + [f"--model.denoise_weight={args.denoise_factor / args.noise ** 2:g}"]}


def parse_study(text: str) -> tuple[str, int | None]:
    name, _, size = text.partition("@")
    if name not in BUNDLED and name not in MATBENCH:
        raise argparse.ArgumentTypeError(f"unknown study {name!r}; choose from {[*BUNDLED, *MATBENCH]}")
    if name in BUNDLED and not size:
        raise argparse.ArgumentTypeError(f"{name} needs a training size: {name}@100")
    return name, int(size) if size else None


def transfer_recipes() -> dict[str, dict]:
    """The transfer curve's recipes on recipes/finetune_kg.yaml ("frozen": SevenNet-0 features, "scratch": our
    equivariant encoder), from recipes/transfer_curve.py itself."""
    spec = importlib.util.spec_from_file_location("transfer_curve", REPO / "recipes" / "transfer_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.foundation(load_recipe(REPO / "recipes" / "finetune_kg.yaml"), "7net-0")


def subsampled_fold(recipe: dict, task: str, subset: bool, n_train: int, seed: int) -> str:
    """``--data.split`` for fold 0 with its training ids subsampled to ``n_train`` (per seed); its validation ids
    are run_fold's own (the recipe's seed and val_fraction), its test ids the fold's."""
    fold = {"class_path": "equiprop.data.splits.MatbenchFoldSplit",
            "init_args": {"task": task, "fold": 0, "val_fraction": recipe.get("matbench", {}).get("val_fraction", 0.1),
                          "seed": recipe.get("seed_everything", 0), "restrict_to_present": subset}}
    return "--data.split=" + json.dumps({"class_path": "equiprop.data.splits.SubsampledSplit",
                                         "init_args": {"base": fold, "n_train": n_train, "seed": seed}})


def one_fit(study: tuple[str, int | None], overrides: list[str], seed: int, workdir: Path, args) -> dict:
    """Test MAE (and units, training labels, seconds) of one fit of ``study`` with ``overrides``."""
    name, n_train = study
    start = time.perf_counter()
    if name in BUNDLED:
        result = fit_and_test(args.recipes[args.model], name, n_train, seed, workdir, overrides)
    else:
        task, subset = MATBENCH[name]
        recipe = load_recipe(args.matbench_recipe)
        shared = shared_folder(args.shared, f"the {name} study") if subset else None
        source = source_config(task, subset, task_data_path(task, None, args.shared), shared)
        split = [subsampled_fold(recipe, task, subset, n_train, seed)] if n_train else []
        result = run_fold(recipe, task, 0, subset, source, [*overrides, *split], workdir, seed)
        result = {k: result[k] for k in ("mae", "units", "n_train", "n_val", "n_test")}
    return {**result, "seconds": time.perf_counter() - start}


def git_commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (dirty)" if git("status", "--porcelain", "-uno") else "")


def table(label: str, results: dict[str, list[dict]], seeds: list[int]) -> list[str]:
    first = next(iter(results.values()))[0]
    lines = [f"\n{label}: {first['n_train']} training labels, test MAE in {first['units']}",
             f"{'variant':<13} " + " ".join(f"{'seed ' + str(s):>9}" for s in seeds)
             + f" {'mean':>9} {'s.e.':>8} {'vs none (paired)':>20} {'s/fit':>7}"]
    base = np.array([r["mae"] for r in results.get("none", [])])
    for variant, rows in results.items():
        maes = np.array([r["mae"] for r in rows])
        se = maes.std(ddof=1) / np.sqrt(len(maes)) if len(maes) > 1 else float("nan")
        paired = ""
        if variant != "none" and len(base) == len(maes):
            diff = maes - base
            paired = f"{diff.mean():+.4g}" + (f" ± {diff.std(ddof=1) / np.sqrt(len(diff)):.2g}" if len(diff) > 1
                                             else "")
        lines.append(f"{variant:<13} " + " ".join(f"{m:>9.4g}" for m in maes) + f" {maes.mean():>9.4g} "
                     f"{se:>8.2g} {paired:>20} {np.median([r['seconds'] for r in rows]):>7.0f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=parse_study, nargs="+", default=[parse_study("K_VRH@100")])
    parser.add_argument("--variants", nargs="+", default=["none", "noise", "strain", "denoise"],
                        choices=["none", "noise", "strain", "noise_strain", "denoise"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", choices=["frozen", "scratch"], default="frozen",
                        help="K_VRH/G_VRH studies: frozen SevenNet-0 features or our encoder from scratch")
    parser.add_argument("--matbench-recipe", default=str(REPO / "recipes" / "matbench_foundation.yaml"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="folder with matbench/ ...")
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs of every fit (default: the recipe's)")
    parser.add_argument("--noise", type=float, default=0.02, help="Å")
    parser.add_argument("--strain", type=float, default=0.005)
    parser.add_argument("--strain-fraction", type=float, default=0.5)
    parser.add_argument("--denoise-factor", type=float, default=0.1, help="denoise_weight = factor / noise^2")
    args, extra = parser.parse_known_args()
    args.recipes = transfer_recipes() if any(name in BUNDLED for name, _ in args.studies) else {}
    common = [*extra, *([f"--trainer.max_epochs={args.epochs}"] if args.epochs else [])]
    lines = [f"command: python benchmarks/augmentation.py {' '.join(sys.argv[1:])}", f"commit: {git_commit()}",
             f"seeds: {args.seeds}; variants: {dict((v, variants(args)[v]) for v in args.variants)}"]
    print("\n".join(lines), flush=True)
    for study in args.studies:
        label = f"{study[0]}@{study[1]}" if study[1] else study[0]
        folder = study[0] + (f"_n{study[1]}" if study[1] else "") + (f"_{args.model}" if study[0] in BUNDLED else "")
        results = {}
        for variant in args.variants:
            results[variant] = []
            for seed in args.seeds:
                workdir = run_path("augmentation", folder, variant, f"seed_{seed}")
                results[variant].append(finished_run(workdir / "result.json", lambda: one_fit(
                    study, [*common, *variants(args)[variant]], seed, workdir, args), f"{label} {variant} {seed}"))
                print(f"{label} {variant} seed {seed}: MAE {results[variant][-1]['mae']:.4g} "
                      f"({results[variant][-1]['seconds']:.0f} s)", flush=True)
        reference = REFERENCE.get((label, args.model)) if study[0] in BUNDLED else None
        lines += table(label + (f" ({args.model})" if study[0] in BUNDLED else ""), results, args.seeds)
        lines += [f"reference without augmentation: {reference}"] if reference else []
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
