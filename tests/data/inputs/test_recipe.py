"""A recipe given as an input (``equiprop.data.inputs.recipe``): the records of its ``data.sources``, read by
equiprop's own Source classes with their checks; a recipe that names any other class runs nothing."""

from pathlib import Path

import pytest
import yaml

from equiprop.data.errors import ConfigError
from equiprop.data.inputs import InputFailure, read_structures
from equiprop.data.tasks import resolve_tasks

TINY = {"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}


def write(path: Path, recipe) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_recipes_sources_are_its_records_with_labels_only_on_request(tmp_path, tiny_entries):
    # the entries a fit of the recipe reads (a label of one of its tasks, or of the command's), the rest counted
    recipe = write(tmp_path / "r.yaml", {"data": {"init_args": {"sources": [TINY], "tasks": ["Ef"]}}})
    plain = read_structures([str(recipe)])
    labelled = read_structures([str(recipe)], tasks=resolve_tasks(["Eg"]))
    has = [{k for k in ("Ef", "Eg") if e.get(k) is not None} for e in tiny_entries]
    assert len(plain) == sum("Ef" in h for h in has) and len(labelled) == sum(bool(h) for h in has)
    assert plain.notices[0].startswith(f"{recipe} (bundled:tiny): {len(tiny_entries) - len(plain)} x no label")
    assert all(r.labels == {} and r.source == str(recipe) for r in plain)
    assert {k for r in labelled for k in r.labels} == {"Ef", "Eg"}  # the recipe's tasks and the command's
    assert {r.id for r in plain} <= {r.id for r in labelled}


@pytest.mark.parametrize("entry, message", [
    ({"class_path": "os.system", "init_args": {"command": "touch pwned"}}, "is not a reader of equiprop.data.sources"),
    ({"class_path": "equiprop.data.sources.NoSuchSource"}, "no source class"),
    ({"class_path": "equiprop.data.sources.base.ConfigError"}, "is not a Source"),
    ({"class_path": "equiprop.data.sources.RecordsJSON", "init_args": {"pathh": "x"}}, "RecordsJSON"),
])
def test_a_recipe_naming_anything_but_an_equiprop_source_is_refused_and_runs_nothing(tmp_path, monkeypatch, entry,
                                                                                       message):
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path / "evil.yaml", {"data": {"sources": [entry]}})
    with pytest.raises(ConfigError, match=message) as err:
        read_structures([str(recipe)])
    assert str(recipe) in str(err.value) and "data.sources[0]" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_an_unreadable_recipe_is_one_failed_item_and_one_without_sources_an_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    (item,) = list(read_structures([str(broken)]))
    assert isinstance(item, InputFailure) and item.reason == "unreadable file" and str(broken) in item.error
    with pytest.raises(ConfigError, match="needs a data.sources list"):
        read_structures([str(write(tmp_path / "empty.yaml", {"data": {"tasks": ["Ef"]}}))])
