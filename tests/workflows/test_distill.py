"""``equiprop distill`` end to end on the tiny bundled data: a real teacher, a real student fit of a few batches."""

import gzip
import json

import pytest
import yaml
from ase.data import chemical_symbols

from equiprop.cli import main
from equiprop.train.run import build_datamodule

TASKS = ["Ef", "Eg", "K_VRH"]


@pytest.fixture
def recipes(cli_recipe, tmp_path):
    """A teacher recipe (equivariant) and a student recipe (invariant) on the same tiny data and split."""
    cli_recipe["data"]["tasks"] = TASKS
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    teacher = dict(cli_recipe, run_name="teacher")
    student = dict(cli_recipe, run_name="student", model={"encoder": {
        "class_path": "equiprop.nn.InvariantEncoder", "init_args": {"num_features": 16, "num_layers": 1}}})
    paths = {}
    for name, recipe in (("teacher", teacher), ("student", student)):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(recipe))
    return paths


def test_distill_fills_only_missing_labels_outside_the_held_out_chemistry(recipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(recipes["teacher"])])
    teacher = tmp_path / "runs" / "teacher" / "best.ckpt"
    code = main(["distill", "--checkpoint", str(teacher), "-c", str(recipes["student"]), "--input", "bundled:tiny",
                 "--trainer.limit_train_batches=2"])
    assert code == 0
    work = tmp_path / "runs" / "student_distilled_pseudo"
    with gzip.open(work / "pseudo_labels.json.gz", "rt") as f:
        pseudo = json.load(f)
    assert "not DFT labels" in pseudo["meta"]["provenance"] and pseudo["meta"]["units"]["Ef"] == "eV/atom"
    data = build_datamodule(str(recipes["student"]), [])
    data.setup("fit")
    ids, systems = data.structure_ids, data.dataset.chemical_systems()
    split = {n: set(s.structure_ids()) for n, s in data.subsets.items()}
    held_systems = {systems[ids.index(i)] for i in split["val"] | split["test"]}
    labelled = data.dataset.labels({t: data.tasks[t] for t in TASKS})
    masks = {t: {ids[p] for p in labelled[t].structures} for t in TASKS}
    assert pseudo["records"]
    for record in pseudo["records"]:
        assert record["id"] not in split["val"] | split["test"]
        assert "-".join(sorted({chemical_symbols[z] for z in record["numbers"]})) not in held_systems
        real = {t for t in TASKS if record["id"] in masks[t]}
        assert record["labels"] and not set(record["labels"]) & real  # the teacher never overrides a real label
    assert (work / "test_ids.txt").read_text().split() == sorted(split["test"], key=ids.index)
    assert (tmp_path / "runs" / "student_distilled" / "best.ckpt").exists()
