"""Distillation Phase 2 -> Phase 1: is the distilled fast model closer to the slow teacher, at the fast model's speed?

    python benchmarks/distillation.py --checkpoint checkpoints/phase2_quickstart_mc/best.ckpt \
        --plain checkpoints/baseline_invariant_s0/best.ckpt checkpoints/baseline_invariant_s1/best.ckpt \
                checkpoints/baseline_invariant_s2/best.ckpt --shared ../shared/data

1. Pool: every structure we have, labels hidden: the bundled default set, matbench_phonons (1,265) and the perov5
   perovskites (7,572) from ``--shared`` (public-repository data: read from there, never copied into the project),
   written once to ``runs/distill_pool.extxyz``.
2. ``equiprop distill`` (skipped when the student's best.ckpt exists): the teacher labels the pool (held-out
   chemical systems excluded), the student (``--student-recipe``, seed 0) trains on pseudo + real labels.
3. Every model is scored on the same grouped test split (real labels), and timed on it (structures/s, forward passes
   on prepared graphs, batch 64, best of 3). Gap closed = (plain - distilled) / (plain - teacher) per task.
Writes ``OUT.{csv,md}`` with the command, commit and seeds.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from equiprop.train.run_dir import run_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def write_pool(shared: Path, path: Path) -> int:
    """The shared folder's extra structures (not the bundled set, which distill reads itself) as one extxyz."""
    import ase
    import ase.io
    import pandas as pd

    from equiprop.data.record import from_pymatgen_dict, from_text
    from equiprop.data.sources.jarvis import read_json_any

    records = []
    phonons = read_json_any(shared / "matbench" / "matbench_phonons.json.gz")
    column = phonons["columns"].index("structure")
    records += [from_pymatgen_dict(row[column], f"matbench_phonons:{i}") for i, row in
                zip(phonons["index"], phonons["data"])]
    for part in ("val", "test"):
        frame = pd.read_csv(shared / "perov5" / f"{part}.csv.gz")
        records += [from_text(cif, "cif", f"perov5:{mid}") for mid, cif in zip(frame["material_id"], frame["cif"])]
    frames = []
    for r in records:
        atoms = ase.Atoms(numbers=r.numbers, positions=r.positions, cell=r.cell, pbc=True)
        atoms.info["id"] = r.id
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return len(frames)


def score(checkpoint: str, recipe: str, tasks: list[str]) -> tuple[dict, dict]:
    """({task: (ids, |error|)} on the test split, {"structures_per_s": ...}) of one checkpoint."""
    from torch_geometric.data import Batch

    from equiprop.workflows.scoreboard_inputs import load_run, predictions_on_test_split

    run = load_run(checkpoint, recipe)
    errors = {}
    for name, (ids, true, pred) in predictions_on_test_split(run).items():
        if name in tasks:
            errors[name] = (ids, np.abs(pred - true).reshape(len(ids), -1).mean(axis=1))
    graphs = list(run.datamodule.subsets["test"])
    best = np.inf
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            for i in range(0, len(graphs), 64):
                run.predictor.models[0].predict_physical(Batch.from_data_list(graphs[i:i + 64]))
            best = min(best, time.perf_counter() - start)
    return errors, {"structures_per_s": len(graphs) / best, "test_structures": len(graphs)}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return out.stdout.strip() + (" (dirty)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--teacher-recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--plain", nargs="+", required=True, help="Phase-1 checkpoints of the student recipe")
    parser.add_argument("--student-recipe", default="recipes/baseline_invariant.yaml")
    parser.add_argument("--student-run", default="baseline_invariant_distilled",
                        help="the run equiprop distill trains (seed 0 of the student recipe)")
    parser.add_argument("--extra-students", nargs="*", default=[],
                        help="more distilled checkpoints (other seeds: equiprop fit -c <workdir>/student.yaml "
                             "--seed_everything=S --run_name=...), scored with the first")
    parser.add_argument("--shared", default="../shared/data")
    parser.add_argument("--tasks", nargs="+", default=["Ef", "Eg", "K_VRH", "G_VRH"])
    parser.add_argument("--out", default="docs/results/distillation")
    args, overrides = parser.parse_known_args()
    pool = REPO / run_path("distill_pool.extxyz")
    if not pool.exists():
        print(f"pool: wrote {write_pool(Path(args.shared), pool)} extra structures to {pool}")
    student = REPO / run_path(args.student_run, "best.ckpt")
    if not student.exists():
        command = [str(Path(sys.executable).parent / "equiprop"), "distill", "--checkpoint", args.teacher, "-c",
                   args.student_recipe, "--input", "bundled:default", str(pool), "--tasks", *args.tasks,
                   "--run_name", args.student_run, "--trainer.enable_progress_bar=false", *overrides]
        print(" ".join(command))
        subprocess.run(command, cwd=REPO, check=True)
    models = {"teacher (Phase 2)": [(args.teacher, args.teacher_recipe)],
              "plain Phase 1": [(p, args.student_recipe) for p in args.plain],
              "distilled Phase 1": [(str(student), args.student_recipe)] + [(p, args.student_recipe)
                                                                            for p in args.extra_students]}
    results = {name: [score(c, r, args.tasks) for c, r in runs] for name, runs in models.items()}
    common = {t: set.intersection(*[set(e[t][0]) for runs in results.values() for e, _ in runs])
              for t in args.tasks}
    rows = []
    for name, runs in results.items():
        for task in args.tasks:
            maes = [float(np.mean([err for i, err in zip(*e[task]) if i in common[task]])) for e, _ in runs]
            speed = float(np.mean([s["structures_per_s"] for _, s in runs]))
            sem = float(np.std(maes, ddof=1) / np.sqrt(len(maes))) if len(maes) > 1 else float("nan")
            rows.append({"model": name, "task": task, "n_test": len(common[task]), "seeds": len(maes),
                         "mae": float(np.mean(maes)), "sem": sem, "structures_per_s": speed})
    write_outputs(rows, args, Path(args.out), models)


def write_outputs(rows: list[dict], args, out: Path, models: dict) -> None:
    from equiprop.data.tasks import resolve_task

    units = {t: resolve_task(t).units for t in args.tasks}
    lookup = {(r["model"], r["task"]): r["mae"] for r in rows}
    for r in rows:
        r["units"] = units[r["task"]]
        plain, teacher = lookup[("plain Phase 1", r["task"])], lookup[("teacher (Phase 2)", r["task"])]
        r["gap_closed"] = (plain - r["mae"]) / (plain - teacher) if plain != teacher else float("nan")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Distillation Phase 2 -> Phase 1 (test split, real labels)", "",
             f"- command: `python benchmarks/distillation.py {' '.join(sys.argv[1:])}`", f"- commit: `{git_commit()}`",
             f"- models: {', '.join(f'{k}: {[c for c, _ in v]}' for k, v in models.items())}",
             "- mae: mean over seeds of the test MAE (task units) on the structures every model predicts; sem: "
             "standard error over seeds; gap_closed = (plain - model) / (plain - teacher); speed: forward passes on "
             "prepared test graphs, batch 64, best of 3, mean over seeds", "",
             "| model | task | units | n_test | seeds | MAE | sem | gap closed | structures/s |", "|---|" * 9]
    lines += [f"| {r['model']} | {r['task']} | {r['units']} | {r['n_test']} | {r['seeds']} | {r['mae']:.4g} | "
              f"{r['sem']:.2g} | {r['gap_closed']:.2f} | {r['structures_per_s']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
