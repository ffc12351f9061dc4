"""Data efficiency: the equivariant encoder vs the invariant baseline, test MAE vs number of training labels.

    python recipes/learning_curve.py --task K_VRH --sizes 100 250 500 all --seeds 0 1 2 --out learning_curve \
        [--trainer.max_epochs=40]

Same data (bundled default), same grouped split (fixed held-out test set), same epochs and batch size for both
models; the training part is subsampled per seed. Writes learning_curve.csv (resumable) and learning_curve.png.
"""

import argparse
from pathlib import Path

from equiprop.workflows.curves import run_study
from equiprop.train.run import load_recipe

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="K_VRH")
    parser.add_argument("--sizes", nargs="+", default=["100", "250", "500", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--equivariant", default=str(HERE / "quickstart.yaml"))
    parser.add_argument("--invariant", default=str(HERE / "baseline_invariant.yaml"))
    parser.add_argument("--out", default="learning_curve")
    parser.add_argument("--parametrization", choices=["linear", "spd_log"],
                        help="tensor output parametrization of the task (default: the task's own)")
    args, overrides = parser.parse_known_args()
    models = {"equivariant": load_recipe(args.equivariant), "invariant": load_recipe(args.invariant)}
    for recipe in models.values():  # identical training budget for both
        recipe["trainer"]["max_epochs"] = 40
    task = {"name": args.task, "parametrization": args.parametrization} if args.parametrization else args.task
    run_study(models, task, args.sizes, args.seeds, Path(args.out), overrides)


if __name__ == "__main__":
    main()
