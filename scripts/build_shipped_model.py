"""Rebuild the shipped model ``equiprop-mp-v1`` (``checkpoints/equiprop-mp-v1/``) from a fresh clone.

    python scripts/build_shipped_model.py                 # 5 seeds, ~50 min on 2 CPU cores (featurisation ~7 min)
    python scripts/build_shipped_model.py --seeds 0 1 2 3 4 --recipe recipes/equiprop_mp_v1.yaml --name equiprop-mp-v1

Steps, each reusing what an earlier (interrupted) run finished:
1. ``equiprop ensemble -c RECIPE --seeds ...``: one training per seed (``runs/<run>_s<seed>/best.ckpt``; the
   same seed gives the same weights), then the per-task std scales fitted on the validation split and the calibration
   report on the test split (``runs/<run>_ensemble_calibration.md``).
2. Export: each member as a weights-only checkpoint whose SevenNet-0 weights are referenced by the sha256 of the
   file the installed ``sevenn`` ships (``equiprop.train.export``), the split's structure ids (``split/*.txt``), ``model.json``.
3. The test-split table of the exported ensemble's mean beside the training median, the isotropic oracle (tensors)
   and the invariant baseline (``recipes/baseline_invariant.yaml``'s model on the same data and split, seed 0),
   written to ``test_metrics.md``/``.csv`` in the model folder (the model's errors in column ``model``, its folder in
   ``model_path``) and summarised in ``model.json``.
The model card (``README.md`` in the folder) is written by hand from these files.

    python scripts/build_shipped_model.py --name equiprop-mp-v1 --csv-from-markdown   # test_metrics.csv from its .md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
import yaml

from equiprop.train.integrity import parse_manifest
from equiprop.train.run_dir import run_path

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = ("formation energy, band gap, bulk and shear moduli, dielectric (electronic, total), elastic and "
               "piezoelectric tensors of inorganic crystals; frozen SevenNet-0 features, deep ensemble of head sets")


def train_and_calibrate(recipe: str, seeds: list[int], run: str, member_checkpoint: str = "best.ckpt"
                        ) -> tuple[list[str], Path]:
    from equiprop.workflows.calibrate import ensemble_command

    manifest = run_path(f"{run}_ensemble.json")
    members = [run_path(f"{run}_s{s}", member_checkpoint) for s in seeds]
    stale = manifest.exists() and parse_manifest(manifest)["members"] != [
        str(Path(f"{run}_s{s}") / member_checkpoint) for s in seeds]
    if not manifest.exists() or stale or not all(m.exists() for m in members):
        ensemble_command(["-c", recipe, "--seeds", *map(str, seeds), "--member-checkpoint", member_checkpoint,
                          "--trainer.enable_progress_bar=false"])
    return [str(m) for m in members], manifest


def export_members(members: list[str], seeds: list[int], out: Path) -> list[str]:
    from equiprop.nn.registry import build_encoder
    from equiprop.train.export import export_weights

    names = []
    encoder = None
    for path, seed in zip(members, seeds):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        meta = checkpoint["equiprop"]
        # how the shipped model runs (not what it computes): new structures are not cached on disk, and
        # centrosymmetric crystals skip the inverted pass (same features up to float rounding)
        meta["encoder"]["init_args"].update(cache_features=False, inversion_shortcut=True)
        encoder = encoder or build_encoder(meta["encoder"])
        name = f"member_s{seed}.ckpt"
        torch.save(export_weights(checkpoint, encoder), out / name)
        names.append(name)
    return names


def split_ids_file(datamodule, out: Path) -> dict:
    from equiprop.workflows.scoreboard_inputs import split_ids

    ids = split_ids(datamodule)
    (out / "split").mkdir(exist_ok=True)
    for part, values in ids.items():  # IdListSplit reads these: recipes can train and test on the same crystals
        (out / "split" / f"{part}.txt").write_text("\n".join(sorted(values)) + "\n")
    return {k: len(v) for k, v in ids.items()}


def invariant_baseline(recipe: str, baseline_recipe: str, run: str):
    """The invariant model trained on the recipe's data and split (seed 0), reused when already trained."""
    from equiprop.train.run import fit

    best = run_path(f"{run}_invariant_s0", "best.ckpt")
    if not best.exists():
        merged = yaml.safe_load(Path(baseline_recipe).read_text())
        merged["data"] = yaml.safe_load(Path(recipe).read_text())["data"]
        config = run_path(f"{run}_invariant.yaml")  # kept as the record of what trained
        config.write_text(yaml.safe_dump(merged, sort_keys=False))
        fit(merged, [f"--run_name={run}_invariant_s0", "--seed_everything=0", "--trainer.enable_progress_bar=false"])
    return best


def test_table(model_folder: Path, members: list[str], baseline: Path | None, recipe: str):
    from equiprop.inference import Predictor
    from equiprop.workflows.scoreboard import scoreboard_rows, write_csv, write_markdown
    from equiprop.workflows.scoreboard_inputs import Run, load_run, task_results
    from equiprop.workflows.calibrate import members_datamodule

    every_task = list(parse_manifest(model_folder / "model.json")["tasks"])  # opt-in ones are scored too
    predictor = Predictor.load(str(model_folder / "model.json"), batch_size=64, warn=False, tasks=every_task)
    datamodule, config, check = members_datamodule(members[0], recipe)
    run = Run(Path(members[0]), Path(config), predictor, datamodule, 0, "", check)
    base = load_run(baseline, recipe) if baseline is not None else None
    rows = scoreboard_rows(task_results(run, base))
    # "model" names the column of the model's errors: the folder goes in model_path (no column name repeats)
    meta = {"model_path": str(model_folder), "members": len(predictor.models), "data_config": config,
            "baseline_checkpoint": str(baseline), "split_check": check}
    write_csv(rows, meta, model_folder / "test_metrics.csv")
    write_markdown(rows, [], meta, model_folder / "test_metrics.md", [])
    return rows, datamodule


def rows_from_markdown(path: Path) -> tuple[list, dict[str, str]]:
    """The rows and metadata of a ``test_metrics.md`` written by ``write_markdown``, numbers as shown there."""
    from equiprop.workflows.scoreboard import PREDICTORS, Row

    meta, rows, header = {}, [], None
    for line in path.read_text().splitlines():
        if line.startswith("- ") and ": `" in line and header is None and not rows:  # metadata, above the table
            key, value = line[2:].split(": `", 1)
            meta[key] = value.removesuffix("`")
        elif line.startswith("| task |"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        elif header is not None and line.startswith("| "):
            cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|"))))
            rows.append(Row(cells["task"], cells["metric"], cells["units"], int(cells["n_train"]),
                            int(cells["n_test"]), {p: float(cells[p]) for p in PREDICTORS if cells.get(p)}))
        elif header is not None and not line.startswith("|"):
            header = None  # the table ended
    return rows, meta


def rebuild_csv(model_folder: Path) -> Path:
    """Rewrite ``test_metrics.csv`` from the ``test_metrics.md`` beside it, without training, for models built
    before the writer was fixed (a metadata key "model" had replaced every model error by the folder's path). The
    md's "model" line becomes the ``model_path`` column; every number is the one the md shows."""
    from equiprop.workflows.scoreboard import write_csv

    rows, meta = rows_from_markdown(model_folder / "test_metrics.md")
    if not rows:
        raise SystemExit(f"{model_folder / 'test_metrics.md'}: no table rows found")
    meta = {("model_path" if key == "model" else key): value for key, value in meta.items()}
    write_csv(rows, meta, model_folder / "test_metrics.csv")
    return model_folder / "test_metrics.csv"


def summary_metrics(rows, calibration: dict, units: dict) -> dict:
    from equiprop.workflows.scoreboard import INVARIANT, MEDIAN, MODEL, ORACLE

    summary = {}
    for row in rows:
        main = row.metric in ("mae", "component_mae")
        if not main or row.task not in units:
            continue
        recal = (calibration.get(row.task) or {}).get("test_recalibrated", {})
        summary[row.task] = {"units": row.units, "metric": row.metric, "n_test": row.n_test,
                             "mae": row.values.get(MODEL), "median_mae": row.values.get(MEDIAN),
                             "invariant_mae": row.values.get(INVARIANT), "isotropic_oracle_mae":
                                 row.values.get(ORACLE), "within_1sigma": recal.get("within_1sigma"),
                             "within_2sigma": recal.get("within_2sigma")}
    return summary


def code_state() -> dict:
    """The commit, and whether the code that builds the model (not docs, not this model's own folder) differs."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    status = git("status", "--porcelain", "--", "src", "recipes", "scripts", "pyproject.toml")
    return {"commit": git("rev-parse", "HEAD"), "code_dirty": "unknown" if status == "unknown" else bool(status)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/equiprop_mp_v1.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", default="equiprop-mp-v1")
    parser.add_argument("--baseline-recipe", default="recipes/baseline_invariant.yaml")
    parser.add_argument("--no-baseline", action="store_true", help="leave the invariant baseline out of the table")
    parser.add_argument("--member-checkpoint", default="best.ckpt",
                        help="each member's checkpoint (per_task_best.ckpt: each task's head from its own best epoch)")
    parser.add_argument("--opt-in", nargs="+", default=[], metavar="TASK=REASON",
                        help="tasks predicted only on request (`equiprop predict --tasks`), each with the measured "
                             "reason, written to model.json's opt_in_tasks")
    parser.add_argument("--csv-from-markdown", action="store_true",
                        help="only rewrite checkpoints/NAME/test_metrics.csv from its test_metrics.md (no training)")
    args = parser.parse_args()
    opt_in = dict(item.split("=", 1) for item in args.opt_in if "=" in item)
    if len(opt_in) != len(args.opt_in) or not all(opt_in.values()):
        parser.error("--opt-in takes TASK=REASON, each with a reason")
    if args.csv_from_markdown:
        print(f"wrote {rebuild_csv(Path('checkpoints') / args.name)}")
        return 0
    run = yaml.safe_load(Path(args.recipe).read_text()).get("run_name") or Path(args.recipe).stem
    members, manifest_path = train_and_calibrate(args.recipe, args.seeds, run, args.member_checkpoint)
    ensemble = parse_manifest(manifest_path)
    out = Path("checkpoints") / args.name
    out.mkdir(parents=True, exist_ok=True)
    names = export_members(members, args.seeds, out)
    for suffix in (".md", ".csv"):  # the calibration report ships beside the model it describes
        report = manifest_path.with_name(manifest_path.stem + "_calibration" + suffix)
        if report.exists():
            (out / f"calibration{suffix}").write_text(report.read_text())
    from equiprop.train.integrity import member_digests

    first = torch.load(out / names[0], map_location="cpu", weights_only=True)["equiprop"]
    backbone = {k: v for k, v in first["backbone"].items() if k != "dropped_tensors"}
    model = {"format": ensemble["format"], "name": args.name, "description": DESCRIPTION,
             "members": names, "member_sha256": member_digests(out / "model.json", names),
             "mc_samples": 0, "std_scale": ensemble["std_scale"],
             "std_scale_fitted_on": ensemble["std_scale_fitted_on"], "units": ensemble["units"],
             "backbone": backbone, **({"opt_in_tasks": opt_in} if opt_in else {}),
             "tasks": {n: {"units": t["units"], "kind": t["kind"], "description": t.get("description", ""),
                           "parametrization": t.get("parametrization", "linear")} for n, t in first["tasks"].items()},
             "built_by": {"command": shlex.join(["python", "scripts/build_shipped_model.py", *sys.argv[1:]]),
                          "recipe": args.recipe, "seeds": args.seeds, **code_state()}}
    (out / "model.json").write_text(json.dumps(model, indent=1))  # loadable now; metrics are added below
    baseline = None if args.no_baseline else invariant_baseline(args.recipe, args.baseline_recipe, run)
    rows, datamodule = test_table(out, members, baseline, args.recipe)
    counts = split_ids_file(datamodule, out)
    seen = torch.load(out / names[0], map_location="cpu", weights_only=True)["state_dict"]["species_seen"]
    from ase.data import chemical_symbols

    model["training_data"] = {
        "summary": f"{sum(counts.values())} Materials Project crystals (equiprop bundled 'default': matminer 0.4.0 "
                   f"dielectric, elastic, piezoelectric, formation-energy sets; CC BY 4.0), grouped split by chemical "
                   f"system: {counts['train']} train / {counts['val']} val / {counts['test']} test",
        "split": "GroupedSplit(val_fraction=0.1, test_fraction=0.1, seed=0); ids in split/{train,val,test}.txt",
        "label_counts": datamodule.report["label_counts"],
        "elements": [chemical_symbols[z] for z in torch.nonzero(seen).flatten().tolist()]}
    model["test_metrics"] = summary_metrics(rows, ensemble.get("metrics", {}), model["units"])
    (out / "model.json").write_text(json.dumps(model, indent=1, default=float))
    print((out / "test_metrics.md").read_text())
    from equiprop.shipped import describe_models

    print(describe_models())
    return 0


if __name__ == "__main__":
    sys.exit(main())
