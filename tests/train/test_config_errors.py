"""Training setups that are wrong fail loudly: one line naming the option, before anything trains."""

import copy

import pytest
import yaml

from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel


@pytest.fixture
def write_recipe(tmp_path, monkeypatch, cli_recipe):
    monkeypatch.chdir(tmp_path)

    def write(**changes):
        recipe = copy.deepcopy(cli_recipe)
        for dotted, value in changes.items():
            node = recipe
            *parents, last = dotted.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write


@pytest.mark.parametrize("override, expected", [
    ("--model.weighting=uncertanty", "model.weighting: Expected a typing.Literal['uncertainty', 'fixed']"),
    ("--model.loss=hubber", "model.loss: Expected a typing.Literal['mse', 'mae', 'huber']"),
    ("--model.scheduler=cosin", "model.scheduler: Expected a typing.Literal['cosine', 'plateau', 'none']"),
    ("--model.finetune=frozen", "model.finetune: Expected a typing.Literal['all', 'frozen_encoder', 'last_layers']"),
    ("--model.encoder.init_args.max_ell=9", "model.encoder.init_args.max_ell must be 0..3, got 9"),
    ("--data.cutoff=0", "data.cutoff (linked to model.encoder.init_args.cutoff) must be > 0, got 0.0"),
    ("--data.cutoff=-2", "data.cutoff (linked to model.encoder.init_args.cutoff) must be > 0, got -2.0"),
    ("--data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
    ("--model.lr=0", "model.lr must be > 0, got 0.0"),
    ("--data.sources=[{class_path: equiprop.data.sources.BundledDataset, init_args: {dataset: nope}}]",
     "data.sources: dataset: Expected a typing.Literal['default', 'tiny']. Got value: nope"),
    ("--data.sources=[{class_path: equiprop.data.sources.MatminerCSV, init_args: "
     "{path: missing/elastic_tensor.csv.gz, dataset: elastic_tensor}}]",
     "file not found: missing/elastic_tensor.csv.gz"),
])
def test_bad_options_are_one_line_errors_naming_them(write_recipe, tmp_path, capsys, override, expected):
    recipe = write_recipe()
    assert main(["fit", "-c", str(recipe), override]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("equiprop: error: "), err
    assert expected in err[0]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_choices_are_checked_from_python_too():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1)
    with pytest.raises(ConfigError, match="model.weighting must be one of 'uncertainty', 'fixed'; got 'uncertanty'"):
        MultiTaskModel(encoder, ["Ef"], weighting="uncertanty")
    with pytest.raises(ConfigError, match=r"task_weights names tasks the model does not have: \['Eg'\]"):
        MultiTaskModel(encoder, ["Ef"], weighting="fixed", task_weights={"Eg": 2.0})


def test_a_task_without_training_labels_is_refused(write_recipe, tmp_path, capsys):
    recipe = write_recipe(**{"data.tasks": ["Ef", "piezo_tensor"]})  # the tiny set has no piezo tensor
    assert main(["fit", "-c", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "tasks with no label in the training split: ['piezo_tensor']" in err[0]
    assert "'train': 0" in err[0]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # no untrained head is ever saved
