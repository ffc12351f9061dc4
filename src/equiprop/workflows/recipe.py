"""Recipes as data: load a recipe, set dotted keys, build a LightningCLI run without launching it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from equiprop.data.errors import ConfigError


def load_recipe(path: str | Path) -> dict:
    path = Path(path)
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


def build_run(recipe: dict, overrides: list[str], workdir: Path):
    """(trainer, model, datamodule) from a recipe dict plus ``--a.b=value`` overrides, via LightningCLI (run=False)."""
    from equiprop.train.cli import EquipropCLI, cli_kwargs, quietly

    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "recipe.yaml"
    config_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cli = quietly(lambda: EquipropCLI(args=["-c", str(config_path), *overrides], run=False, **cli_kwargs()))
    return cli.trainer, cli.model, cli.datamodule
