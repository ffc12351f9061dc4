"""``equiprop ensemble``: one real tiny fit per seed, reused on a rerun, then a calibration manifest."""

import json

import yaml

from equiprop.cli import main
from equiprop.uncertainty import load_predictor


def test_ensemble_trains_each_seed_once_and_writes_a_loadable_manifest(cli_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cli_recipe))
    assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "1"]) == 0
    manifest = tmp_path / "runs" / "tiny_ensemble.json"
    content = json.loads(manifest.read_text())
    assert content["members"] == ["tiny_s0/best.ckpt", "tiny_s1/best.ckpt"]
    assert set(content["std_scale"]) == {"Ef", "Eg"} and content["units"]["Ef"] == "eV/atom"
    assert (tmp_path / "runs" / "tiny_ensemble_calibration.md").exists()
    first = (tmp_path / "runs" / "tiny_s0" / "best.ckpt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "1"]) == 0  # resumes: nothing retrained
    assert capsys.readouterr().out.count("reusing") == 2
    assert (tmp_path / "runs" / "tiny_s0" / "best.ckpt").stat().st_mtime_ns == first
    predictor = load_predictor([manifest], warn=False)
    assert predictor.has_uncertainty and predictor.std_scale == content["std_scale"]
    assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "0"]) == 2  # a repeated seed adds nothing
    assert set(content["member_sha256"]) == set(content["members"])  # the manifest pins its members

    other = tmp_path / "other.yaml"  # same run name, other tasks: tiny_s0 is not one of its members
    other.write_text(yaml.safe_dump({**cli_recipe, "data": {**cli_recipe["data"], "tasks": ["Ef"]}}))
    capsys.readouterr()
    assert main(["ensemble", "-c", str(other), "--seeds", "0", "1"]) == 2
    err = capsys.readouterr().err
    assert "tiny_s0/best.ckpt was trained from another configuration" in err and "['Ef', 'Eg']" in err, err
    assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "1", "--trainer.max_epochs=2"]) == 2  # other options
    best = tmp_path / "runs" / "tiny_s1" / "best.ckpt"
    best.write_bytes(best.read_bytes() + b"\0")  # no longer what the fit wrote
    assert main(["ensemble", "-c", str(recipe), "--seeds", "1"]) == 2
    assert "no equiprop fit recorded writing it" in capsys.readouterr().err
    assert (tmp_path / "runs" / "tiny_s0" / "best.ckpt").stat().st_mtime_ns == first  # nothing retrained


def test_an_ensemble_named_by_a_path_is_refused_before_anything_is_written(cli_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cli_recipe))
    outside = tmp_path / "outside"
    assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "--run_name", str(outside / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not one folder name" in err[0], err
    assert not outside.exists() and not (tmp_path / "runs").exists()
