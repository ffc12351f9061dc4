"""No command can delete, replace or add a file in a shipped model's folder: every command is run here with its
outputs aimed at one (by name, by folder, by file) and must refuse in one line (exit 2), leaving every byte as it was."""

import hashlib

import pytest
import yaml

from equiprop.cli import main
from equiprop.shipped import shipped_models

MODELS = shipped_models()
pytestmark = pytest.mark.skipif("equiprop-mp-v1" not in MODELS, reason="no shipped models in this checkout")
EXAMPLES = "examples/cifs"


def snapshot() -> dict[str, str]:
    """Every path under every shipped model's folder with the sha256 of its bytes (folders included, as '')."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            for folder in MODELS.values() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def before():
    return snapshot()


@pytest.fixture
def recipe(tmp_path, monkeypatch, cli_recipe, request):
    from pathlib import Path

    examples = Path(request.config.rootpath) / EXAMPLES
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    (tmp_path / EXAMPLES).symlink_to(examples)
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cli_recipe))
    tune = {"metric": "val/loss", "search_space": {"model.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({**cli_recipe, "tune": tune}))
    (tmp_path / "tune_named.yaml").write_text(yaml.safe_dump({**cli_recipe, "tune": tune,
                                                              "run_name": "equiprop-mp-v1"}))
    return path


FOLDER = str(MODELS.get("equiprop-mp-v1", ""))
COMMANDS = {
    "fit by name": ["fit", "-c", "{recipe}", "--run_name=equiprop-mp-v1", "--overwrite=true"],
    "fit into its folder": ["fit", "-c", "{recipe}", f"--checkpoint.dirpath={FOLDER}", "--overwrite=true"],
    "fit logs into its folder": ["fit", "-c", "{recipe}", f"--trainer.default_root_dir={FOLDER}"],
    "validate by name": ["validate", "-c", "{recipe}", "--run_name=equiprop-mp-v1"],
    "tune by name": ["tune", "-c", "tune_named.yaml", "--n-trials", "1", "--study-name", "x"],
    "tune storage": ["tune", "-c", "tune.yaml", "--n-trials", "1", f"--storage=sqlite:///{FOLDER}/optuna.db"],
    "matbench by name": ["matbench", "--task", "matbench_phonons", "-c", "{recipe}", "--folds", "0",
                         "--run_name=equiprop-mp-v1"],
    "ensemble by name": ["ensemble", "-c", "{recipe}", "--seeds", "0", "--run_name", "equiprop-mp-v1"],
    "calibrate manifest": ["calibrate", "--checkpoint", f"{FOLDER}/member_s0.ckpt", f"{FOLDER}/member_s1.ckpt",
                           "--manifest", f"{FOLDER}/model.json"],
    "calibrate report": ["calibrate", "--checkpoint", f"{FOLDER}/member_s0.ckpt", "--manifest", "m.json",
                         "--report", f"{FOLDER}/calibration"],
    "distill by name": ["distill", "--checkpoint", "equiprop-mp-v1", "-c", "{recipe}", "--input", "bundled:tiny",
                        "--run_name", "equiprop-mp-v1"],
    "distill workdir": ["distill", "--checkpoint", "equiprop-mp-v1", "-c", "{recipe}", "--input", "bundled:tiny",
                        "--workdir", FOLDER],
    "predict output": ["predict", "--model", "equiprop-mp-v1", "--input", EXAMPLES, "--output",
                       f"{FOLDER}/test_metrics.csv"],
    "screen output": ["screen", "--input", EXAMPLES, "--phase1", "equiprop-mp-v1", "--output", f"{FOLDER}/s.csv"],
    "screen workdir": ["screen", "--input", EXAMPLES, "--phase1", "equiprop-mp-v1", "--output", "s.csv",
                       "--workdir", f"{FOLDER}/split"],
    "suggest output": ["suggest", "--input", EXAMPLES, "--checkpoint", "equiprop-mp-v1", "--task", "Ef",
                       "--budget", "1", "--output", f"{FOLDER}/s.csv"],
    "embed output": ["embed", "--checkpoint", f"{FOLDER}/member_s0.ckpt", "--input", EXAMPLES, "--output",
                     f"{FOLDER}/member_s0.npz"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_command_changes_a_shipped_model(name, recipe, before, capsys):
    argv = [part.format(recipe=recipe) for part in COMMANDS[name]]
    try:
        code = main(argv)
    except SystemExit as stop:  # an argparse refusal
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (name, err)
    assert err and "shipped model" in err[-1], (name, err)
    assert snapshot() == before
