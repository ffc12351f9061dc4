"""A fit deletes only what an equiprop run wrote in its own folder, never writes into a shipped model, and refuses bad
options and crafted checkpoints in one line."""

import hashlib
import os

import pytest
import torch
import yaml

from equiprop.cli import main
from equiprop.shipped import shipped_models
from equiprop.train.run_record import read_record


@pytest.fixture
def recipe(tmp_path, monkeypatch, cli_recipe):
    monkeypatch.chdir(tmp_path)  # runs go to ./runs/<run_name>
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cli_recipe))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("equiprop: error: "), err
    return err[0]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration  # two short fits
def test_overwrite_deletes_only_the_checkpoints_an_equiprop_run_wrote(recipe, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    assert main(["fit", "-c", str(recipe)]) == 0
    written = read_record(run)["files"]
    assert set(written) == {"best.ckpt", "last.ckpt"} and written["best.ckpt"] == digest(run / "best.ckpt")
    (run / "mine.ckpt").write_bytes(b"a checkpoint of the user's")
    capsys.readouterr()
    assert main(["fit", "-c", str(recipe), "--overwrite=true"]) == 2
    assert "mine.ckpt" in one_line_error(capsys)
    assert (run / "mine.ckpt").read_bytes() == b"a checkpoint of the user's" and (run / "best.ckpt").exists()

    (run / "mine.ckpt").unlink()
    (run / "last.ckpt").write_bytes(b"changed since the run wrote it")
    assert main(["fit", "-c", str(recipe), "--overwrite=true"]) == 2
    assert "changed since (last.ckpt)" in one_line_error(capsys)
    assert (run / "last.ckpt").read_bytes() == b"changed since the run wrote it"

    (run / "last.ckpt").unlink()
    assert main(["fit", "-c", str(recipe), "--overwrite=true", "--seed_everything=1"]) == 0  # ours alone: replaced
    assert set(read_record(run)["files"]) == {"best.ckpt", "last.ckpt"}


def test_overwrite_never_deletes_in_a_checkpoint_folder_given_by_path(recipe, tmp_path, capsys):
    elsewhere = tmp_path / "any" / "folder"
    elsewhere.mkdir(parents=True)
    for name in ("a.ckpt", "best.ckpt"):
        (elsewhere / name).write_bytes(name.encode())
    assert main(["fit", "-c", str(recipe), f"--checkpoint.dirpath={elsewhere}", "--overwrite=true",
                 "--run_name=x"]) == 2
    assert "deletes only in the run's own folder" in one_line_error(capsys)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["a.ckpt", "best.ckpt"]
    assert (elsewhere / "best.ckpt").read_bytes() == b"best.ckpt"


@pytest.mark.skipif(not shipped_models(), reason="no shipped models in this checkout")
@pytest.mark.parametrize("option, message", [
    ("--run_name={name}", "is the name of a shipped model"),
    ("--checkpoint.dirpath={folder}", "checkpoint.dirpath"),
    ("--trainer.default_root_dir={folder}/logs", "trainer.default_root_dir"),
    ("--run_name=logs_there", "trainer.logger.save_dir"),
    ("--ckpt_path={folder}/member_s0.ckpt", "not a training checkpoint to resume"),
])
def test_no_fit_writes_into_a_shipped_model(option, message, recipe, cli_recipe, capsys):
    name, folder = next(iter(shipped_models().items()))
    before = {p.name: digest(p) for p in folder.rglob("*") if p.is_file()}
    if option == "--run_name=logs_there":  # the logger's folder is the one written into
        cli_recipe["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                           "init_args": {"save_dir": str(folder)}}
        recipe.write_text(yaml.safe_dump(cli_recipe))
    assert main(["fit", "-c", str(recipe), option.format(name=name, folder=folder), "--overwrite=true"]) == 2
    error = one_line_error(capsys)
    assert message in error and (option.startswith("--ckpt_path") or "shipped model" in error), error
    assert {p.name: digest(p) for p in folder.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("option, message", [
    ("--run_name=" + "a" * 300, "is 300 characters long: at most 200"),
    ("--trainer.max_epochs=-5", "trainer.max_epochs must be >= -1"),
    ("--trainer.max_steps=-2", "trainer.max_steps must be >= -1"),
    ("--trainer.gradient_clip_val=nan", "trainer.gradient_clip_val"),
    ("--model.lr=nan", "model.lr: Expected a <class 'float'>. Got value: nan"),  # jsonargparse's own refusal
    ("--model.weight_decay=inf", "model.weight_decay: Expected a <class 'float'>. Got value: inf"),
])
def test_bad_run_options_are_one_line_errors(option, message, recipe, tmp_path, capsys):
    assert main(["fit", "-c", str(recipe), option]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


class Payload:
    """What a hostile checkpoint holds: unpickling it would create a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("option", ["--model.init_from={path}", "--ckpt_path={path}"])
def test_a_crafted_checkpoint_is_refused_without_torch_advice_to_unpickle_it(option, recipe, tmp_path, capsys):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload(marker)}, path)
    assert main(["fit", "-c", str(recipe), option.format(path=path)]) == 2
    error = one_line_error(capsys)
    assert "evil.ckpt: not an equiprop checkpoint: it holds objects other than tensors" in error
    assert "weights_only" not in error and not marker.exists()
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint")
    assert main(["fit", "-c", str(recipe), option.format(path=tmp_path / "garbage.ckpt")]) == 2
    assert "garbage.ckpt: not a readable checkpoint" in one_line_error(capsys)
