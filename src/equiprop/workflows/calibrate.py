"""``equiprop calibrate`` and ``equiprop ensemble``: measure (and fix) how honest predicted uncertainties are.

    equiprop ensemble -c RECIPE.yaml --seeds 0 1 2 [--mc-samples N] [--trainer.KEY=VALUE ...]
    equiprop calibrate --checkpoint CKPT [CKPT ...] [--mc-samples N] [--manifest OUT.json] [--report PREFIX]

``ensemble`` trains the recipe once per seed (run folders ``runs/<run_name>_s<seed>``; a seed whose
``best.ckpt`` exists is reused, so an interrupted ensemble resumes), then calibrates the members. ``calibrate``
rebuilds the members' data (the first member's saved config; its training split is verified against the checkpoint),
predicts the validation and the (grouped) test split with mean and std, fits one std scale per output on validation
(``equiprop.uncertainty.calibration``), and reports on test before and after it. It writes the ensemble manifest
(members, MC samples, scales: what ``predict``/``screen``/``suggest`` load), a Markdown and CSV report and
calibration curves.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from equiprop.data.errors import ConfigError
from equiprop.uncertainty.calibration import EXPECTED_WITHIN, calibration_metrics, calibration_plot, \
    fit_std_scale, flat_components
from equiprop.train.integrity import DIGEST_KEY, MANIFEST_FORMAT, member_digests
from equiprop.train.run_dir import run_path
from equiprop.inference import Predictor, evaluate_split, load_predictor
from equiprop.workflows.options import ArgumentParser, non_negative_int, random_seed
from equiprop.workflows.predict import check_output

METRICS = ["n", "mae", "mean_sigma", "within_1sigma", "within_2sigma", "miscalibration_area", "spearman",
           "zero_sigma"]


def split_predictions(predictor: Predictor, datamodule, split: str) -> dict[str, tuple]:
    """{task: (true, mean, std)} as (n, components) arrays in physical units over the split's labelled structures
    (``evaluate_split``; binary tasks left out: a probability has no error in units)."""
    return {name: tuple(flat_components(predictor.tasks[name], v) for v in (p.true, p.mean, p.std))
            for name, p in evaluate_split(predictor, datamodule, split).items()}


def calibrate(predictor: Predictor, datamodule, save: Path | None = None) -> dict[str, dict]:
    """Per task: the std scale fitted on validation, metrics on validation, on test raw and on test rescaled.
    ``save``: an .npz of every (true, mean, std) array, to study other recalibrations without predicting again."""
    if not predictor.has_uncertainty:
        raise ConfigError("these checkpoints give no uncertainty: give several checkpoints (an ensemble), or a "
                          "model trained with model.dropout > 0 and --mc-samples N")
    val, test = split_predictions(predictor, datamodule, "val"), split_predictions(predictor, datamodule, "test")
    if save is not None:
        np.savez_compressed(save, **{f"{split}/{name}/{part}": array for split, arrays in (("val", val), ("test", test))
                                     for name, values in arrays.items()
                                     for part, array in zip(("true", "mean", "std"), values)})
    return calibration_results(val, test, predictor.tasks)


def calibration_results(val: dict, test: dict, tasks: dict) -> dict[str, dict]:
    results = {}
    for name, (true, mean, std) in test.items():
        if name not in val:
            continue  # nothing to fit a scale on; reported as missing
        v_true, v_mean, v_std = val[name]
        scale = fit_std_scale(v_mean - v_true, v_std)
        results[name] = {"units": tasks[name].units, "std_scale": scale,
                         "val": calibration_metrics(v_mean - v_true, v_std),
                         "test": calibration_metrics(mean - true, std),
                         "test_recalibrated": calibration_metrics(mean - true, std * scale),
                         "z_test": (mean - true)[std > 0] / std[std > 0]}
    return results


def write_manifest(path: Path, members: list[str], mc_samples: int, results: dict, extra: dict) -> None:
    entries = [os.path.relpath(Path(m).resolve(), path.parent.resolve()) for m in members]
    manifest = {"format": MANIFEST_FORMAT, "members": entries, DIGEST_KEY: member_digests(path, entries),
                "mc_samples": mc_samples,
                "std_scale": {n: r["std_scale"] for n, r in results.items()},
                "units": {n: r["units"] for n, r in results.items()},
                "std_scale_fitted_on": "validation split (equiprop calibrate)", **extra,
                "metrics": {n: {k: v for k, v in r.items() if k in ("val", "test", "test_recalibrated")}
                            for n, r in results.items()}}
    path.write_text(json.dumps(manifest, indent=1, default=float))


def report_rows(results: dict) -> list[dict]:
    rows = []
    for name, r in results.items():
        for variant in ("val", "test", "test_recalibrated"):
            rows.append({"task": name, "units": r["units"], "split": variant, "std_scale": r["std_scale"],
                         **{m: r[variant][m] for m in METRICS}})
    return rows


def write_report(prefix: Path, results: dict, meta: dict) -> list[Path]:
    rows = report_rows(results)
    csv_path, md_path, png_path = (prefix.with_name(prefix.name + ext) for ext in (".csv", ".md", ".png"))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Calibration of predicted uncertainty\n"] + [f"- {k}: `{v}`" for k, v in meta.items()] + [
        "", f"Expected for a calibrated Gaussian: within 1 sigma {EXPECTED_WITHIN[1]:.3f}, within 2 sigma "
            f"{EXPECTED_WITHIN[2]:.3f}, miscalibration area 0. `n`: values scored (structures x independent components: "
            "tensors pool their components); `mae` and `mean_sigma` in the task's units; `zero_sigma`: values whose "
            "sigma is exactly 0 (every draw agrees, e.g. a component an invariant model always predicts as 0), left "
            "out of the z-based columns. `test_recalibrated`: test sigmas times the std scale fitted on "
            "validation.", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(_fmt(v) for v in row.values()) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    calibration_plot({n: {"test": r["z_test"], "test recalibrated": r["z_test"] / r["std_scale"]}
                      for n, r in results.items()}, png_path, "calibration on the test split")
    return [csv_path, md_path, png_path]


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def members_datamodule(checkpoint: str, recipe: str | None):
    """The data module a member was trained on (its saved config, else ``recipe``), training split verified."""
    from equiprop.train.run import build_datamodule
    from equiprop.workflows.scoreboard_inputs import check_training_split, saved_config

    config = saved_config(Path(checkpoint)) or (Path(recipe) if recipe else None)
    if config is None:
        raise ConfigError(f"{checkpoint}: no saved config.yaml beside it; give --recipe with its data section")
    datamodule = build_datamodule(str(config), [])
    datamodule.setup("test")
    check = check_training_split(torch.load(checkpoint, map_location="cpu", weights_only=True), datamodule)
    return datamodule, str(config), check


def run_calibration(checkpoints: list[str], mc_samples: int, manifest: Path, report: Path,
                    recipe: str | None = None, command: str = "") -> dict:
    predictor = load_predictor(checkpoints, mc_samples=mc_samples, batch_size=64)
    for notice in predictor.notices:
        print(f"equiprop calibrate: warning: {notice}", file=sys.stderr)
    datamodule, config, check = members_datamodule(checkpoints[0], recipe)
    results = calibrate(predictor, datamodule, report.with_name(report.name + "_predictions.npz"))
    from equiprop.workflows.scoreboard_inputs import git_state

    meta = {"command": command, "members": " ".join(checkpoints), "mc_samples": mc_samples, "data_config": config,
            "split_check": check, **git_state(Path.cwd())}
    write_manifest(manifest, checkpoints, mc_samples, results, {"data_config": config})
    written = write_report(report, results, meta)
    print((report.with_name(report.name + ".md")).read_text())
    print(f"wrote {manifest} and {', '.join(map(str, written))}")
    return results


def calibrate_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="equiprop calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="ensemble members (.ckpt)")
    parser.add_argument("--mc-samples", type=non_negative_int, default=0,
                        help="dropout draws per member (models with dropout)")
    parser.add_argument("--recipe", help="data section to use when a member has no saved config.yaml")
    parser.add_argument("--manifest", help="ensemble manifest to write (default: <first run folder>_ensemble.json)")
    parser.add_argument("--report", help="report prefix (default: the manifest's name + _calibration)")
    args = parser.parse_args(argv)
    manifest = Path(args.manifest or default_manifest(args.checkpoint[0]))
    report = Path(args.report) if args.report else manifest.with_name(manifest.stem + "_calibration")
    check_output(manifest, "--manifest")
    check_output(report, "--report")
    run_calibration(args.checkpoint, args.mc_samples, manifest, report, args.recipe,
                    "equiprop calibrate " + " ".join(argv))
    return 0


def default_manifest(checkpoint: str) -> Path:
    run = Path(checkpoint).parent
    stem = run.name.rsplit("_s", 1)[0] if "_s" in run.name else run.name
    return run.parent / f"{stem}_ensemble.json"


def check_reusable(best: Path, recipe, member_args: list[str]) -> None:
    """ConfigError unless ``best`` was written by a fit of this recipe and these options (its run record's config
    digest, ``train.run_record``) and is unchanged since: a member from another recipe is never averaged in."""
    from equiprop.train.run import config_fingerprint
    from equiprop.train.run_record import owned_checkpoints, read_record

    record = read_record(best.parent)
    digest, summary = config_fingerprint(recipe, member_args)
    if best not in owned_checkpoints(best.parent)[0]:
        raise ConfigError(f"{best} exists but no equiprop fit recorded writing it (or it changed since): equiprop "
                          "ensemble cannot tell which recipe trained it; choose another --run_name or move it away")
    if record.get("config_sha256") != digest:
        raise ConfigError(f"{best} was trained from another configuration than this ensemble's (it: "
                          f"{record.get('config_summary')}; this: {summary}): choose another --run_name, or move "
                          "that run away")


def ensemble_command(argv: list[str]) -> int:
    """Train the recipe once per seed (reusing finished members), then calibrate them as one ensemble."""
    from equiprop.train.per_task_best import FILENAME as PER_TASK
    from equiprop.train.run import fit, load_recipe
    from equiprop.train.run_dir import check_run_name

    parser = ArgumentParser(prog="equiprop ensemble", description="Train a deep ensemble and calibrate it.")
    parser.add_argument("-c", "--config", required=True, help="the recipe every member is trained with")
    parser.add_argument("--seeds", nargs="+", type=random_seed, required=True,
                        help="one member per seed (seed_everything)")
    parser.add_argument("--run_name", help="members go to runs/<run_name>_s<seed> (default: the recipe's)")
    parser.add_argument("--mc-samples", type=non_negative_int, default=0,
                        help="dropout draws per member in calibration")
    parser.add_argument("--member-checkpoint", default="best.ckpt", choices=["best.ckpt", "last.ckpt", PER_TASK],
                        help="which checkpoint of each member's run is the member: best.ckpt (lowest summed "
                             f"validation loss), last.ckpt, or {PER_TASK} (each task's head from its own best "
                             "epoch; the recipe must list the callback equiprop.train.per_task_best.PerTaskBest)")
    args, overrides = parser.parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds repeats a seed: {args.seeds}; identical members add no information")
    name = check_run_name(args.run_name or load_recipe(args.config).get("run_name") or Path(args.config).stem)
    members = []
    for seed in args.seeds:
        best = run_path(f"{name}_s{seed}", args.member_checkpoint)
        member_args = [f"--seed_everything={seed}", f"--run_name={name}_s{seed}", *overrides]
        if best.exists():
            check_reusable(best, args.config, member_args)
            print(f"equiprop ensemble: seed {seed}: reusing {best}")
        else:
            print(f"equiprop ensemble: seed {seed}: training {best.parent}")
            fit(args.config, member_args)
            if not best.exists():
                raise ConfigError(f"seed {seed}: training finished without {best}")
        members.append(str(best))
    manifest = run_path(f"{name}_ensemble.json")
    run_calibration(members, args.mc_samples, manifest, manifest.with_name(manifest.stem + "_calibration"),
                    args.config, "equiprop ensemble " + " ".join(argv))
    return 0
