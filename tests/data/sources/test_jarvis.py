"""JarvisDFT3D on a dft_3d-format fixture of real structures, and jarvis_leaderboard_split on real benchmark zips."""

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.sources import JarvisDFT3D, jarvis_leaderboard_split
from equiprop.data.tasks import resolve_tasks

FIXTURE = Path(__file__).parents[1] / "fixtures" / "jarvis_dft_3d_format_fixture.json"


@pytest.fixture(scope="module")
def fixture_entries() -> list[dict]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def tiny_by_id(tiny_entries) -> dict:
    return {e["material_id"]: e for e in tiny_entries}


def test_fixture_is_the_figshare_layout(fixture_entries):
    assert isinstance(fixture_entries, list) and len(fixture_entries) == 12
    for entry in fixture_entries:
        assert entry["jid"].startswith("JVASP-FIXTURE-mp-")
        assert set(entry["atoms"]) == {"lattice_mat", "coords", "elements", "abc", "angles", "cartesian", "props"}
        assert entry["optb88vdw_bandgap"] == "na" or isinstance(entry["optb88vdw_bandgap"], float)


def test_reads_structures_and_labels_masking_na(fixture_entries, tiny_by_id):
    result = JarvisDFT3D(path=str(FIXTURE)).load(resolve_tasks(["Ef", "Eg"]))
    assert result.name == "jarvis:dft_3d" and str(FIXTURE) in result.provenance
    assert result.entries_read == 12 and len(result.records) == 12 and result.skips.total == 0
    assert result.missing == {"Eg": 2, "Ef": 2}  # the "na" values, masked and counted
    assert [r.id for r in result.records] == [e["jid"] for e in fixture_entries]
    for record in result.records:
        tiny = tiny_by_id[record.id.removeprefix("JVASP-FIXTURE-")]
        for task in ("Ef", "Eg"):
            if tiny[task] is None:
                assert task not in record.labels
            else:
                assert record.labels[task] == pytest.approx(tiny[task], abs=1e-5)
        structure = Structure.from_dict(tiny["structure"])
        assert record.numbers.tolist() == [site.specie.Z for site in structure]
        np.testing.assert_allclose(record.cell, structure.lattice.matrix, atol=1e-5)
        np.testing.assert_allclose(record.positions, structure.cart_coords, atol=1e-4)
    assert "Eg" not in next(r for r in result.records if r.id == "JVASP-FIXTURE-mp-2").labels


def test_entries_without_requested_labels_are_counted_skips():
    result = JarvisDFT3D(path=str(FIXTURE)).load(resolve_tasks(["Eg"]))
    assert len(result.records) == 10 and result.missing == {"Eg": 2}
    assert result.skips.counts == {"no label of the requested tasks": 2}
    # a task whose field is "na" everywhere gives no records, but no crash
    result = JarvisDFT3D(path=str(FIXTURE)).load(resolve_tasks(["K_Voigt"]))
    assert result.records == [] and result.missing == {"K_Voigt": 12}


def test_bad_entries_are_counted_and_compressed_copies_read(tmp_path, fixture_entries):
    entries = json.loads(json.dumps(fixture_entries))
    entries[0]["atoms"]["elements"][0] = "Xx"  # unknown element
    entries[1]["atoms"]["coords"][1] = entries[1]["atoms"]["coords"][0]  # two atoms on one site
    del entries[2]["atoms"]
    entries[3]["formation_energy_peratom"] = "not a number"
    gz_path = tmp_path / "dft_3d_bad.json.gz"
    with gzip.open(gz_path, "wt") as f:
        json.dump(entries, f)
    result = JarvisDFT3D(path=str(gz_path)).load(resolve_tasks(["Ef", "Eg"]))
    assert result.entries_read == 12 and len(result.records) == 9
    assert result.skips.counts == {"unknown element": 1, "atoms closer than 0.5 Å": 1, "entry without atoms": 1}
    assert result.label_skips.counts == {"Ef: invalid label value": 1}
    assert "Ef" not in result.records[0].labels and result.records[0].id == entries[3]["jid"]

    zip_path = tmp_path / "dft_3d_fixture.json.zip"  # the figshare download is a zip with one JSON member
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.write(FIXTURE, "dft_3d_fixture.json")
    zipped = JarvisDFT3D(path=str(zip_path), columns={"Ef": "formation_energy_peratom"}).load(resolve_tasks(["Ef"]))
    with_ef = [e["jid"] for e in fixture_entries if e["formation_energy_peratom"] != "na"]
    assert [r.id for r in zipped.records] == with_ef


def test_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        JarvisDFT3D(path=str(tmp_path / "missing.json")).load(resolve_tasks(["Ef"]))
    with pytest.raises(ConfigError, match="none of the requested tasks"):
        JarvisDFT3D(path=str(FIXTURE)).load(resolve_tasks(["eps_total"]))
    with pytest.raises(ConfigError, match="unknown JARVIS dataset"):  # checked before any download
        JarvisDFT3D(dataset="no_such_dataset", store_dir=str(tmp_path)).load(resolve_tasks(["Ef"]))
    not_a_list = tmp_path / "object.json"
    not_a_list.write_text('{"jid": "JVASP-1"}')
    with pytest.raises(DataError, match="JSON list"):
        JarvisDFT3D(path=str(not_a_list)).load(resolve_tasks(["Ef"]))


@pytest.fixture(scope="module")
def leaderboard(shared_data) -> Path:
    return shared_data / "jarvis_leaderboard"


@pytest.mark.parametrize("name, sizes", [
    ("dft_3d_exfoliation_energy.json.zip", (650, 81, 81)),
    ("megnet_e_form.json.zip", (60000, 5000, 4239)),
])
def test_leaderboard_split(name, sizes, leaderboard):
    path = leaderboard / name
    with zipfile.ZipFile(path) as archive:
        raw = json.loads(archive.read(archive.namelist()[0]))
    split = jarvis_leaderboard_split(str(path))
    assert list(split) == ["train", "val", "test"]
    assert tuple(len(split[part]) for part in split) == sizes
    assert len(set().union(*map(set, split.values()))) == sum(sizes)  # disjoint
    assert split == {part: list(raw[part]) for part in ("train", "val", "test")}


def test_leaderboard_split_with_official_overlaps_keeps_test_intact(leaderboard):
    # the official formation-energy split lists JVASP-113961 and JVASP-116461 in both train and test
    path = leaderboard / "dft_3d_formation_energy_peratom.json.zip"
    with zipfile.ZipFile(path) as archive:
        raw = json.loads(archive.read(archive.namelist()[0]))
    with pytest.warns(UserWarning, match="2 ids listed in two parts"):
        split = jarvis_leaderboard_split(str(path))
    assert split["test"] == list(raw["test"]) and split["val"] == list(raw["val"])
    assert split["train"] == [jid for jid in raw["train"] if jid not in {"JVASP-113961", "JVASP-116461"}]
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (44567, 5572, 5572)
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])


def test_leaderboard_split_resolves_overlap_towards_test(tmp_path):
    path = tmp_path / "overlap.json.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("overlap.json", json.dumps({"train": {"JVASP-1": 0.1, "JVASP-2": 0.2, "JVASP-3": 0.3},
                                                     "val": {"JVASP-3": 0.3}, "test": {"JVASP-2": 0.2}}))
    with pytest.warns(UserWarning, match="train 2"):
        split = jarvis_leaderboard_split(str(path))
    assert split == {"train": ["JVASP-1"], "val": ["JVASP-3"], "test": ["JVASP-2"]}
    bad = tmp_path / "bad.json.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("bad.json", json.dumps({"train": {}}))
    with pytest.raises(DataError, match="train"):
        jarvis_leaderboard_split(str(bad))
