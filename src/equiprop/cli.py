"""The ``equiprop`` command.

    equiprop data summary [-c RECIPE.yaml] [--data.KEY=VALUE ...]

Recipes are LightningCLI-style YAML files; ``data summary`` reads their ``data:`` section (init arguments of
``MultiTaskDataModule``, optionally wrapped in class_path/init_args). With no recipe it summarises the bundled data.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from equiprop.data.errors import ConfigError, DataError

@dataclass(frozen=True)
class Command:
    """One ``equiprop`` command: where it lives (``module:function(argv) -> exit status``) and its usage lines."""

    run: str
    synopsis: str
    summary: str


# the one table of commands: dispatch and the usage text both come from it
COMMANDS = {
    "fit": Command("equiprop.train.cli:lightning_command_main",
                   "{fit,validate,test} -c RECIPE.yaml [--trainer.KEY=VALUE --model.KEY=VALUE --data.KEY=VALUE]\n"
                   "         [fit: --ckpt_path last.ckpt (resume) | --overwrite=true (replace an earlier run of this "
                   "name)]", "LightningCLI on a recipe (see recipes/); `equiprop fit --help` lists every option"),
    "validate": Command("equiprop.train.cli:lightning_command_main", "", ""),
    "test": Command("equiprop.train.cli:lightning_command_main", "", ""),
    "predict": Command("equiprop.workflows.predict:predict_command",
                       "predict (--model NAME | --checkpoint CKPT [...]) --input INPUTS [...] "
                       "--output out.{csv,json}\n         [--tasks ...] [--allow-failures] [--allow-unseen-elements]",
                       "properties of new structures in physical units"),
    "models": Command("equiprop.shipped:models_command", "models [NAME]",
                      "the pretrained models that ship with equiprop: tasks, data, test metrics"),
    "screen": Command("equiprop.workflows.screen:screen_command",
                      "screen --input INPUTS --phase1 CKPT [...] [--phase2 CKPT ...] [-c SELECTION.yaml] "
                      "--output OUT.csv", "two-phase screening: a fast model on everything, a slow one on the "
                                          "candidates its selection keeps (--phase1/--phase2: the two models)"),
    "tune": Command("equiprop.workflows.tune:tune_command",
                    "tune -c RECIPE.yaml --n-trials N [--storage URL --study-name NAME] [--trainer.KEY=VALUE ...]",
                    "Optuna search (backbones, max_ell, irreps, ...) declared in the recipe's tune: section"),
    "matbench": Command("equiprop.workflows.matbench:matbench_command",
                        "matbench --task TASK -c RECIPE.yaml [--folds 0 1 2 3 4] [--subset] [--trainer.KEY=VALUE ...]",
                        "official MatBench folds, one training each, results in matbench's record format"),
    "ensemble": Command("equiprop.workflows.calibrate:ensemble_command",
                        "ensemble -c RECIPE.yaml --seeds 0 1 2 [--run_name NAME] [--mc-samples N] "
                        "[--member-checkpoint per_task_best.ckpt] [--trainer.KEY=VALUE ...]",
                        "one training per seed, then calibration: a deep ensemble with a manifest (members, scales)"),
    "calibrate": Command("equiprop.workflows.calibrate:calibrate_command",
                         "calibrate --checkpoint CKPT [CKPT ...] [--mc-samples N] [--manifest OUT.json]",
                         "calibration of predicted sigmas on the validation/test splits; fits per-task std scales"),
    "suggest": Command("equiprop.workflows.suggest:suggest_command",
                       "suggest --input INPUTS --checkpoint CKPT [...] --task NAME --budget N "
                       "--output out.csv", "rank unlabelled structures for the next DFT labels (uncertainty/window/EI "
                                           "+ diversity)"),
    "distill": Command("equiprop.workflows.distill:distill_command",
                       "distill --checkpoint TEACHER [...] -c STUDENT_RECIPE.yaml --input INPUTS "
                       "[--tasks ...]", "train a fast student on a teacher's predictions over unlabelled crystals "
                                        "plus the real labels"),
    "embed": Command("equiprop.workflows.embed:embed_command",
                     "embed --checkpoint CKPT --input INPUTS --output emb.npz",
                     "per-structure latent vectors (rotation-invariant) for maps of the learned space"),
    "data": Command("equiprop.cli:data_command", "data summary [-c CONFIG] [--data.KEY=VALUE ...]",
                    "per source and task: records read, labels present, skips with reasons, merges, splits"),
}


def usage() -> str:
    """The usage text, from ``COMMANDS``: one synopsis per command, then one summary line each."""
    listed = {name: c for name, c in COMMANDS.items() if c.synopsis}
    lines = ["usage: equiprop " + "\n       equiprop ".join(c.synopsis for c in listed.values()), ""]
    width = max(len(n) for n in listed) + 3
    lines += [f"  {('fit|validate|test' if n == 'fit' else n):<{width + 8}}{c.summary}" for n, c in listed.items()]
    lines += ["", "INPUTS (every command that reads structures): structure files (CIF, POSCAR, extxyz frames, ASE .db "
                  "rows), folders (one level), globs, a recipe .yaml (its data.sources) or bundled:NAME.",
              "Old spellings of renamed flags (--checkpoints, --teacher, --pool, --run-name, embed --dataset NAME) "
              "still work, with a note."]
    return "\n".join(lines)


def data_command(argv: list[str]) -> int:
    if not argv or argv[0] != "summary":
        print(usage(), file=sys.stderr)
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
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:
        print(usage(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, function = command.run.split(":")
    try:
        run = getattr(importlib.import_module(module), function)
        # LightningCLI commands take their own name first; every other command its arguments only
        return run(argv if module == "equiprop.train.cli" else argv[1:])
    except (ConfigError, DataError) as err:
        print(f"equiprop: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
