"""Every fit recipe shipped in recipes/ parses and resolves through LightningCLI (linked cutoff and tasks)."""

from pathlib import Path

import pytest
import yaml

from equiprop.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FIT_RECIPES = ["quickstart", "multitask_equivariant", "baseline_invariant", "pretrain_ef_eg", "finetune_kg",
               "finetune_dielectric", "foundation_multitask", "foundation_finetune_kg", "tensors_foundation",
               "learning_curve_body_order"]


@pytest.mark.parametrize("name", FIT_RECIPES)
def test_fit_recipe_resolves(name, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(RECIPES / f"{name}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    # cutoff and tasks are defined once, in data, and linked into the model (not settable there)
    assert config["data"]["cutoff"] > 0 and config["data"]["tasks"]
    assert "cutoff" not in config["model"]["encoder"]["init_args"] and "tasks" not in config["model"]
    assert config["model"]["encoder"]["class_path"].startswith("equiprop.nn.")
    assert config["run_name"] == name
