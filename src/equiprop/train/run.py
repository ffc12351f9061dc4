"""Building a run from a recipe: the one API below every command.

    from equiprop.train.run import build_run, fit, build_datamodule, load_recipe, set_dotted
    trainer, model, datamodule = build_run("recipes/quickstart.yaml", ["--trainer.max_epochs=2"])
    fit(recipe_dict, ["--seed_everything=1", "--run_name=my_run"])        # exactly `equiprop fit -c ... ...`

A recipe is a file or a dict (LightningCLI's class_path form); overrides are ``--a.b=value`` strings as on the command
line. Everything goes through the same LightningCLI subclass (``train.cli.EquipropCLI``): the same links
(``data.cutoff`` -> encoder, ``data.tasks`` -> model), validation, one-line errors and run-folder rules as
``equiprop fit``. A dict recipe is passed to the parser as YAML text, never through a temporary file.
``equiprop.cli``, the workflows (tune, matbench, ensemble, calibrate, distill, scoreboard, curves), the benchmarks
and the recipe scripts all build their runs here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from equiprop.data.errors import ConfigError


def load_recipe(source) -> dict:
    """A recipe as a dict: read from a YAML file (one-line errors), or a deep copy of a dict."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: a recipe is a mapping (trainer, model, data, ...)")
    return recipe


def set_dotted(config: dict, key: str, value) -> dict:
    """config with config[a][b][c] = value for key "a.b.c" (intermediate mappings created)."""
    out = copy.deepcopy(config)
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def config_args(recipe) -> list[str]:
    """``-c`` arguments for a recipe: a file by its path, a dict as YAML text (jsonargparse parses both)."""
    if isinstance(recipe, dict):
        return ["-c", yaml.safe_dump(recipe, sort_keys=False)]
    if not Path(recipe).exists():
        raise ConfigError(f"recipe not found: {recipe}")
    return ["-c", str(recipe)]


def build_run(recipe, overrides=(), record_dir: Path | None = None):
    """(trainer, model, datamodule) of a recipe plus overrides, built as ``equiprop fit`` builds them but not run;
    its ``run_name`` may name a sub-folder (``study/trial_000``: plain names joined by "/"). Its run folder is
    claimed as ``equiprop fit`` claims it (``train.run_dir``): locked against another process until this one ends,
    its own earlier checkpoints replaced, any checkpoint no equiprop run recorded there refused.
    ``record_dir``: a folder that keeps the recipe used, as ``recipe.yaml`` (tune trials, MatBench folds)."""
    from equiprop.train.cli import WorkflowCLI, cli_kwargs, quietly

    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        (record_dir / "recipe.yaml").write_text(yaml.safe_dump(load_recipe(recipe), sort_keys=False))
    cli = quietly(lambda: WorkflowCLI(args=[*config_args(recipe), *overrides], run=False, **cli_kwargs()))
    return cli.trainer, cli.model, cli.datamodule


def lightning_command(command: str, recipe, overrides=()) -> None:
    """``equiprop fit|validate|test`` on a recipe (file or dict) plus overrides."""
    from equiprop.train.cli import run_lightning_cli

    run_lightning_cli([command, *config_args(recipe), *overrides])


def fit(recipe, overrides=()) -> None:
    """Train as ``equiprop fit -c RECIPE OVERRIDES`` does: run folder, checkpoints, logs, the same refusals."""
    lightning_command("fit", recipe, overrides)


class _Parsed(Exception):
    def __init__(self, digest: tuple[str, dict]):
        super().__init__("parsed")
        self.digest = digest


def config_fingerprint(recipe, overrides=()) -> tuple[str, dict]:
    """(sha256, summary) of the configuration ``fit(recipe, overrides)`` would run, as a fit records it in its run
    folder (``train.run_record``), from parsing alone: nothing is built or written."""
    from equiprop.train.cli import EquipropCLI, cli_kwargs, quietly
    from equiprop.train.run_record import config_digest

    class Probe(EquipropCLI):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(config_digest(self.config[self.subcommand]))

    try:
        quietly(lambda: Probe(args=["fit", *config_args(recipe), *overrides], **cli_kwargs()))
    except _Parsed as parsed:
        return parsed.digest
    raise ConfigError("the recipe could not be parsed")  # unreachable: Probe always stops at the hook


def data_section(recipe) -> dict:
    """The ``data:`` section of a recipe (file, dict or None) as init arguments (class_path/init_args unwrapped)."""
    if recipe is None:
        return {}
    section = load_recipe(recipe).get("data", {})
    if not isinstance(section, dict):
        where = recipe if not isinstance(recipe, dict) else "recipe"
        raise ConfigError(f"{where}: 'data' must be a mapping of MultiTaskDataModule arguments")
    return section.get("init_args", section) if "class_path" in section else section


def build_datamodule(recipe, overrides=()):
    """A MultiTaskDataModule from a recipe's data section plus ``--data.KEY=VALUE`` overrides (jsonargparse)."""
    from jsonargparse import ArgumentParser

    from equiprop.data.datamodule import MultiTaskDataModule

    parser = ArgumentParser(prog="equiprop data summary", exit_on_error=False)
    parser.add_class_arguments(MultiTaskDataModule, "data")
    where = "command line" if recipe is None else ("recipe" if isinstance(recipe, dict) else recipe)
    try:
        parser.set_defaults({f"data.{k}": v for k, v in data_section(recipe).items()})
        cfg = parser.parse_args(list(overrides))
        return parser.instantiate(cfg).data
    except ConfigError:
        raise
    except Exception as err:  # jsonargparse reports unknown keys / bad types as ArgumentError
        raise ConfigError(f"{where}: {err}") from None
