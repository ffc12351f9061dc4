"""Ensemble manifests and their members are verified when read: a damaged, truncated, deleted or swapped member, or a
manifest with bad scales or units, is a one-line error naming the file, never a prediction."""

import hashlib
import json
import shutil

import pytest
import torch

from equiprop.cli import main
from equiprop.data.errors import ConfigError, DataError
from equiprop.shipped import shipped_models
from equiprop.train.integrity import DIGEST_KEY, read_manifest
from equiprop.uncertainty import load_predictor

SHIPPED = shipped_models()
needs_shipped = pytest.mark.skipif(len(SHIPPED) < 2, reason="needs both shipped models (checkpoints/ of the checkout)")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_copy(tmp_path):
    """A copy of equiprop-mp-v1's folder to damage (the shipped one is never touched)."""
    return shutil.copytree(SHIPPED["equiprop-mp-v1"], tmp_path / "copy")


def flip_bytes(path, count=64):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[len(data) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_one_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def swap_for_other_model(path):
    shutil.copyfile(SHIPPED["equiprop-mp-v2"] / path.name, path)


@needs_shipped
def test_every_shipped_model_pins_each_member_by_its_sha256():
    for name, folder in SHIPPED.items():
        info = json.loads((folder / "model.json").read_text())
        assert set(info[DIGEST_KEY]) == set(info["members"]), name
        for member, digest in info[DIGEST_KEY].items():
            assert sha256(folder / member) == digest, f"{name}/{member}"
        assert read_manifest(folder / "model.json")["notices"] == []


@needs_shipped
@pytest.mark.parametrize("damage", [flip_bytes, flip_one_bit, truncate, swap_for_other_model])
def test_a_damaged_or_swapped_member_is_refused_in_one_line_before_any_prediction(damage, model_copy, tmp_path,
                                                                                     capsys):
    damage(model_copy / "member_s2.ckpt")
    output = tmp_path / "out.csv"
    code = main(["predict", "--model", str(model_copy / "model.json"), "--input", "examples/cifs",
                 "--output", str(output)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not output.exists()
    assert len(err) == 1 and "member_s2.ckpt: sha256" in err[0] and "model.json" in err[0], err


@needs_shipped
def test_a_deleted_member_is_named(model_copy):
    (model_copy / "member_s3.ckpt").unlink()
    with pytest.raises(ConfigError, match="member not found: .*member_s3.ckpt"):
        read_manifest(model_copy / "model.json")


@needs_shipped
def test_a_transfer_from_a_damaged_shipped_model_is_refused(model_copy):
    from equiprop.shipped import first_member

    flip_one_bit(model_copy / "member_s0.ckpt")
    with pytest.raises(DataError, match="member_s0.ckpt: sha256"):
        first_member(model_copy / "model.json")


@needs_shipped
@pytest.mark.parametrize("value, problem", [(-5, "finite and > 0"), (0, "finite and > 0"), (float("nan"), "finite"),
                                            (float("inf"), "finite"), ("abc", "a number is expected"),
                                            (True, "a number is expected")])
def test_manifest_scales_must_be_finite_positive_numbers(value, problem, model_copy):
    manifest = model_copy / "model.json"
    info = json.loads(manifest.read_text())
    info["std_scale"]["Ef"] = value
    manifest.write_text(json.dumps(info))
    with pytest.raises(DataError, match=f"model.json: std_scale.Ef is .*{problem}"):
        read_manifest(manifest)


@needs_shipped
@pytest.mark.parametrize("edit, message", [
    (lambda m: m[DIGEST_KEY].pop("member_s1.ckpt"), "one sha256 for each member"),
    (lambda m: m.update(members="member_s0.ckpt"), "non-empty list"),
    (lambda m: m.update(units={"Ef": 3}), "'units' must map"),
    (lambda m: m.update(format="other"), "not an equiprop ensemble manifest"),
])
def test_a_damaged_manifest_is_named(edit, message, model_copy):
    manifest = model_copy / "model.json"
    info = json.loads(manifest.read_text())
    edit(info)
    manifest.write_text(json.dumps(info))
    with pytest.raises(DataError, match=message):
        read_manifest(manifest)
    manifest.write_text("{not json")
    with pytest.raises(DataError, match="not a readable ensemble manifest"):
        read_manifest(manifest)


@needs_shipped
def test_a_manifest_without_digests_loads_with_a_notice(model_copy):
    manifest = model_copy / "model.json"
    info = json.loads(manifest.read_text())
    del info[DIGEST_KEY]
    manifest.write_text(json.dumps(info))
    notices = read_manifest(manifest)["notices"]
    assert len(notices) == 1 and "records no sha256 of its members" in notices[0]


# -- units: members of one ensemble must agree ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_member(tmp_path_factory, tiny_checkpoint):
    return tiny_checkpoint(tmp_path_factory.mktemp("units") / "ev.ckpt", ["Ef", "Eg"], split=(0.25, 0.25))


def test_members_that_disagree_on_units_are_refused(tiny_member, tmp_path):
    checkpoint = torch.load(tiny_member, weights_only=True)
    checkpoint["equiprop"]["tasks"]["Ef"]["units"] = "meV/atom"
    other = tmp_path / "mev.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(ConfigError, match=r"disagree on the units of Ef: 'eV/atom' in .*ev.ckpt vs 'meV/atom' in "
                                          r".*mev.ckpt"):
        load_predictor([tiny_member, other], warn=False)


def test_a_manifest_whose_units_differ_from_its_members_is_refused(tiny_member, tmp_path):
    from equiprop.train.integrity import member_digests

    manifest = tmp_path / "m.json"
    entries = [str(tiny_member), str(tiny_member)]
    manifest.write_text(json.dumps({"format": "equiprop-ensemble-1", "members": entries,
                                    DIGEST_KEY: member_digests(manifest, entries), "units": {"Ef": "meV/atom"}}))
    with pytest.raises(DataError, match=r"m.json: units differ from its members' \(Ef: manifest 'meV/atom', "
                                        r"members 'eV/atom'\)"):
        load_predictor([manifest], warn=False)
