"""The ``equiprop`` command.

    equiprop data summary [-c RECIPE.yaml] [--data.KEY=VALUE ...]

Recipes are LightningCLI-style YAML files; ``data summary`` reads their ``data:`` section (init arguments of
``MultiTaskDataModule``, optionally wrapped in class_path/init_args). With no recipe it summarises the bundled data.
"""

from __future__ import annotations

import sys
from equiprop.data.errors import ConfigError, DataError

USAGE = """usage: equiprop {fit,validate,test} -c RECIPE.yaml [--trainer.KEY=VALUE --model.KEY=VALUE --data.KEY=VALUE]
                [fit: --ckpt_path last.ckpt (resume) | --overwrite=true (replace an earlier run of this name)]
       equiprop predict (--model NAME | --checkpoint CKPT [...]) --input FILES_OR_DIR [...] --output out.{csv,json}
                [--allow-failures] [--allow-unseen-elements]
       equiprop models [NAME]
       equiprop screen --input PATHS --phase1 CKPT [...] [--phase2 CKPT ...] [-c SELECTION.yaml] --output OUT.csv
       equiprop tune -c RECIPE.yaml --n-trials N [--storage URL --study-name NAME] [--trainer.KEY=VALUE ...]
       equiprop matbench --task TASK -c RECIPE.yaml [--folds 0 1 2 3 4] [--subset] [--trainer.KEY=VALUE ...]
       equiprop ensemble -c RECIPE.yaml --seeds 0 1 2 [--mc-samples N] [--trainer.KEY=VALUE ...]
       equiprop calibrate --checkpoints CKPT [CKPT ...] [--mc-samples N] [--manifest OUT.json]
       equiprop suggest --pool FILES_OR_DIRS|bundled:NAME --checkpoints CKPT [...] --task NAME --budget N --output out.csv
       equiprop distill --teacher CKPT [...] -c STUDENT_RECIPE.yaml --pool bundled:NAME|FILES [--tasks ...]
       equiprop embed --checkpoint CKPT (--input FILES_OR_DIRS | --dataset default) --output emb.npz
       equiprop data summary [-c CONFIG] [--data.KEY=VALUE ...]

  fit|validate|test   LightningCLI on a recipe (see recipes/); `equiprop fit --help` lists every option
  predict             properties of new structures (CIF/POSCAR/extxyz) in physical units
  models              the pretrained models that ship with equiprop (equiprop-mp-v1, -v2): tasks, data, test metrics
  tune                Optuna search (max_ell, irreps, ...) declared in the recipe's tune: section
  matbench            official MatBench folds, one training each, results in matbench's record format
  ensemble            one training per seed, then calibration: a deep ensemble with a manifest (members, scales)
  calibrate           calibration of predicted sigmas on the validation/test splits; fits per-task std scales
  suggest             rank unlabelled structures for the next DFT labels (uncertainty/window/EI + diversity)
  distill             train a fast student on a teacher's predictions over unlabelled crystals plus the real labels
  embed               per-structure latent vectors (rotation-invariant) for maps of the learned space
  data summary        per source and task: records read, labels present, skips with reasons, merges, splits
"""
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def data_command(argv: list[str]) -> int:
    if not argv or argv[0] != "summary":
        print(USAGE, file=sys.stderr)
        return 2
    argv = argv[1:]
    config = None
    for flag in ("-c", "--config"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a file name")
            config, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    from equiprop.train.run import build_datamodule

    datamodule = build_datamodule(config, argv)
    print(datamodule.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "data":
            return data_command(argv[1:])
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from equiprop.train.cli import run_lightning_cli

            run_lightning_cli(argv)
            return 0
        if argv and argv[0] == "predict":
            from equiprop.workflows.predict import predict_command

            return predict_command(argv[1:])
        if argv and argv[0] == "models":
            from equiprop.shipped import models_command

            return models_command(argv[1:])
        if argv and argv[0] == "screen":
            from equiprop.workflows.screen import screen_command

            return screen_command(argv[1:])
        if argv and argv[0] == "tune":
            from equiprop.workflows.tune import tune_command

            return tune_command(argv[1:])
        if argv and argv[0] in ("ensemble", "calibrate"):
            from equiprop.workflows import calibrate

            return getattr(calibrate, f"{argv[0]}_command")(argv[1:])
        if argv and argv[0] == "suggest":
            from equiprop.workflows.suggest import suggest_command

            return suggest_command(argv[1:])
        if argv and argv[0] == "distill":
            from equiprop.workflows.distill import distill_command

            return distill_command(argv[1:])
        if argv and argv[0] == "embed":
            from equiprop.workflows.embed import embed_command

            return embed_command(argv[1:])
        if argv and argv[0] == "matbench":
            from equiprop.workflows.matbench import matbench_command

            return matbench_command(argv[1:])
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    except (ConfigError, DataError) as err:
        print(f"equiprop: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
