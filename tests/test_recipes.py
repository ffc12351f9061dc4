"""Every recipe in recipes/ is parsed by a test: fit recipes resolve through LightningCLI (linked cutoff and tasks),
tune recipes' search spaces and a trial recipe drawn from them, MatBench recipes as the fold recipe the runner
builds, the screen's selection recipe with the outputs it names, and the recipe scripts compile."""

from pathlib import Path

import pytest
import yaml

from equiprop.cli import main
from equiprop.train.run import config_fingerprint, load_recipe, set_dotted

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
YAML = sorted(RECIPES.glob("*.yaml"))
SCRIPTS = sorted(RECIPES.glob("*.py"))


def kind(recipe: dict) -> str:
    if "run_name" not in recipe and ("model" in recipe or "trainer" in recipe) and "encoder" not in recipe.get(
            "model", {}):
        return "overlay"  # layered on another recipe: equiprop fit -c BASE.yaml -c THIS.yaml
    return next((k for k in ("selection", "tune", "matbench") if k in recipe), "fit")


def test_the_recipe_folder_is_covered():
    kinds = {path.stem: kind(load_recipe(path)) for path in YAML}
    assert {"fit", "tune", "matbench", "selection"} <= set(kinds.values()) and len(kinds) >= 20


@pytest.mark.parametrize("path", [p for p in YAML if kind(load_recipe(p)) == "fit"], ids=lambda p: p.stem)
def test_fit_recipe_resolves(path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(path), "--print_config"])
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    # cutoff and tasks are defined once, in data, and linked into the model (not settable there)
    assert config["data"]["cutoff"] > 0 and config["data"]["tasks"]
    assert "cutoff" not in config["model"]["encoder"]["init_args"] and "tasks" not in config["model"]
    assert config["model"]["encoder"]["class_path"].startswith("equiprop.nn.")
    assert config["run_name"] == path.stem


@pytest.mark.parametrize("path", [p for p in YAML if kind(load_recipe(p)) == "overlay"], ids=lambda p: p.stem)
def test_overlay_recipe_resolves_on_the_recipe_its_header_names(path, capsys):
    import re

    base = re.search(rf"-c (recipes/\S+\.yaml) -c recipes/{path.stem}\.yaml", path.read_text())
    assert base, f"{path.name}: its header names no base recipe (equiprop fit -c BASE.yaml -c {path.name})"
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(RECIPES.parent / base.group(1)), "-c", str(path), "--print_config"])
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert all(config[section][key] == value for section, values in load_recipe(path).items()
               for key, value in values.items())


def first_choice(spec: dict):
    return {"categorical": lambda: spec["choices"][0], "int": lambda: spec["low"], "float": lambda: spec["low"],
            "int_list": lambda: [spec["low"]] * spec["length"]}[spec["type"]]()


@pytest.mark.parametrize("path", [p for p in YAML if kind(load_recipe(p)) == "tune"], ids=lambda p: p.stem)
def test_tune_recipe_parses_with_a_trial_drawn_from_its_space(path):
    from equiprop.workflows.tune import check_search_space, make_pruner, study_directions

    recipe = load_recipe(path)
    check_search_space(recipe["tune"]["search_space"])
    study_directions(recipe["tune"]) and make_pruner(recipe["tune"])
    trial = {k: v for k, v in recipe.items() if k != "tune"}
    for name, spec in recipe["tune"]["search_space"].items():
        trial = set_dotted(trial, name, first_choice(spec))
    digest, summary = config_fingerprint(trial)  # parsed as `equiprop fit` parses it, nothing built
    assert len(digest) == 64 and summary["encoder"].startswith("equiprop.nn.")


@pytest.mark.parametrize("path", [p for p in YAML if kind(load_recipe(p)) == "matbench"], ids=lambda p: p.stem)
def test_matbench_recipe_parses_as_a_fold_recipe(path):
    recipe = {k: v for k, v in load_recipe(path).items() if k != "matbench"}
    fold = {"data.sources": [{"class_path": "equiprop.data.sources.MatbenchTask",
                              "init_args": {"task": "matbench_phonons", "path": "matbench_phonons.json.gz"}}],
            "data.tasks": ["phdos_peak"],
            "data.split": {"class_path": "equiprop.data.splits.MatbenchFoldSplit",
                           "init_args": {"task": "matbench_phonons", "fold": 0}}}
    for key, value in fold.items():
        recipe = set_dotted(recipe, key, value)
    digest, summary = config_fingerprint(recipe)
    assert len(digest) == 64 and summary["tasks"] == ["phdos_peak"]


@pytest.mark.parametrize("path", [p for p in YAML if kind(load_recipe(p)) == "selection"], ids=lambda p: p.stem)
def test_selection_recipe_parses(path):
    from equiprop.screening.selection import load_selection

    shapes = {"Eg": (), "K_VRH": (), "G_VRH": (), "Ef": (), "eps_electronic": (3, 3), "eps_total": (3, 3)}
    selection = load_selection(path, shapes)
    assert selection.windows


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_recipe_script_compiles_and_runs_only_as_a_script(path):
    source = path.read_text()
    compile(source, str(path), "exec")
    assert 'if __name__ == "__main__":' in source
