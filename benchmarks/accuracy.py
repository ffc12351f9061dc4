"""Accuracy scoreboard: a recipe's model on the test split beside the training median, the isotropic oracle and the
invariant baseline trained on the same data and split; per-task tables, the issue's goal checks and parity plots.

    python benchmarks/accuracy.py [--recipe R] [--baseline B] [--quick] [--seed S] [--checkpoint CKPT]
                                  [--baseline-checkpoint CKPT] [--out PREFIX] [--trainer.KEY=VALUE ...]
    python benchmarks/accuracy.py --aggregate PREFIX_s0.csv PREFIX_s1.csv PREFIX_s2.csv --out PREFIX   # mean ± s.e.

Without --checkpoint the recipe is trained here (``equiprop fit``, run name ``scoreboard_<recipe stem>_s<seed>``,
a previous run of that name removed first); likewise the baseline, with the baseline recipe's model and trainer on the
recipe's data section (same sources, tasks, cutoff and split). Extra ``--trainer.*``/``--model.*`` options go to
both trainings. ``--quick``: a smoke-size training (1 epoch of 5 batches) that checks the plumbing in a few minutes;
its outputs default to runs/scoreboard_quick/ so docs/results is never overwritten by a smoke run.
The split is not re-derived from the recipe but rebuilt from the config each run saved, and verified (see
``equiprop.workflows.scoreboard_inputs``). Run from the repository root. Writes PREFIX.csv, PREFIX.md and
PREFIX_parity_<task>.png / PREFIX_eigenvalues_<task>.png.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from equiprop.train.run_dir import run_path

DEFAULT_RECIPE = "recipes/quickstart.yaml"
DEFAULT_BASELINE = "recipes/baseline_invariant.yaml"
DEFAULT_OUT = "docs/results/accuracy"
QUICK_OUT = "runs/scoreboard_quick/accuracy"
QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=2"]
REPO = Path(__file__).resolve().parents[1]


def baseline_on_recipe_data(baseline: str, recipe: str) -> str:
    """A config with the baseline's model and trainer and the recipe's data section (same data, tasks and split),
    written under runs/scoreboard_configs/."""
    import yaml

    merged = yaml.safe_load(Path(baseline).read_text())
    merged["data"] = yaml.safe_load(Path(recipe).read_text())["data"]
    path = run_path("scoreboard_configs") / f"{Path(baseline).stem}_on_{Path(recipe).stem}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {baseline} (model, trainer) on the data of {recipe}, written by benchmarks/accuracy.py\n"
                    + yaml.safe_dump(merged, sort_keys=False))
    return str(path)


def train(recipe: str, seed: int, quick: bool, overrides: list[str]) -> Path:
    """Fit the recipe in a fresh run folder and return its best checkpoint."""
    run_name = f"scoreboard_{Path(recipe).stem}_s{seed}" + ("_quick" if quick else "")
    shutil.rmtree(run_path(run_name), ignore_errors=True)  # else a rerun writes best-v1.ckpt beside
    from equiprop.train.run import fit

    args = [f"--run_name={run_name}", f"--seed_everything={seed}", *(QUICK if quick else []), *overrides]
    print("$ " + shlex.join(["equiprop", "fit", "-c", recipe, *args]), flush=True)
    fit(recipe, args)
    best = run_path(run_name, "best.ckpt")
    if not best.exists():
        raise SystemExit(f"training finished without {best}")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=DEFAULT_RECIPE)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="the invariant baseline's recipe")
    parser.add_argument("--quick", action="store_true", help="smoke-size trainings (plumbing check)")
    parser.add_argument("--seed", type=int, default=0, help="seed_everything of both trainings (not the split's)")
    parser.add_argument("--checkpoint", help="score this checkpoint of the recipe instead of training it")
    parser.add_argument("--baseline-checkpoint", help="score this baseline checkpoint instead of training it")
    parser.add_argument("--out", help=f"output prefix (default {DEFAULT_OUT}; with --quick {QUICK_OUT})")
    parser.add_argument("--aggregate", nargs="+", metavar="CSV",
                        help="summarise scoreboard CSVs of several seeds (mean ± s.e.) into OUT.md; trains nothing")
    args, overrides = parser.parse_known_args()
    if args.aggregate:
        from equiprop.workflows.scoreboard import seed_summary

        out = Path(args.out or DEFAULT_OUT).with_suffix(".md")
        command = shlex.join(["python", "benchmarks/accuracy.py", *sys.argv[1:]])
        out.write_text(f"# Accuracy scoreboard over seeds\n\n- command: `{command}`\n\n" + seed_summary(args.aggregate))
        print(out.read_text())
        return 0
    command = shlex.join(["python", "benchmarks/accuracy.py", *sys.argv[1:]])

    from equiprop.workflows.scoreboard_inputs import git_state

    code_state = git_state(REPO)  # the code that trains and scores: read before a commit made meanwhile can change it
    model_ckpt = args.checkpoint or train(args.recipe, args.seed, args.quick, overrides)
    baseline_ckpt = args.baseline_checkpoint or train(baseline_on_recipe_data(args.baseline, args.recipe), args.seed,
                                                      args.quick, overrides)

    from equiprop.workflows.scoreboard import format_table, goal_checks, scoreboard_rows, write_csv, write_markdown
    from equiprop.workflows.scoreboard_inputs import check_same_split, load_run, task_results
    from equiprop.workflows.scoreboard_plots import parity_plots

    model_run, baseline_run = load_run(model_ckpt, args.recipe), load_run(baseline_ckpt, args.baseline)
    check_same_split(model_run.datamodule, baseline_run.datamodule)
    results = task_results(model_run, baseline_run)
    rows = scoreboard_rows(results)
    checks = goal_checks(rows)

    meta = {**code_state, "command": command, "quick": str(args.quick),
            "seed": str(model_run.seed) if model_run.seed == baseline_run.seed
            else f"model {model_run.seed}, baseline {baseline_run.seed}",
            "recipe": args.recipe, "baseline_recipe": args.baseline,
            "model_checkpoint": str(model_ckpt), "baseline_checkpoint": str(baseline_ckpt),
            "data_config": str(model_run.config), "split": model_run.split,
            "split_check": f"model {model_run.split_check}; baseline {baseline_run.split_check}; "
                           "same train/val/test structures in both"}
    notes = ["Binary tasks are not scored here." if any(t.kind == "binary" for t in model_run.datamodule.tasks.values())
             else "", "QUICK RUN: smoke-size trainings, the numbers check the plumbing only." if args.quick else ""]
    out = Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT))
    write_csv(rows, meta, out.with_name(out.name + ".csv"))
    write_markdown(rows, checks, meta, out.with_name(out.name + ".md"), [n for n in notes if n])
    plots = parity_plots(results, out)

    print(format_table(rows))
    print("\n".join(c.line() for c in checks))
    print(f"split: {meta['split']}; {meta['split_check']}")
    print(f"wrote {out}.csv, {out}.md and {len(plots)} plots ({out}_parity_<task>.png, ...)")
    return 0


if __name__ == "__main__":
    from equiprop.data.errors import ConfigError, DataError

    try:
        sys.exit(main())
    except (ConfigError, DataError) as err:  # e.g. the baseline was trained on another split
        print(f"accuracy.py: error: {err}", file=sys.stderr)
        sys.exit(2)
