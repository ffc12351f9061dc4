"""MatbenchTask and matbench_folds on the real matbench_phonons task and the official v0.1 splits."""

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop.data.errors import ConfigError
from equiprop.data.sources import MatbenchTask, matbench_folds
from equiprop.data.tasks import resolve_tasks

N_PHONONS = 1265

# metadata and official splits ship inside the matbench package (pip install --no-deps matbench==0.6)
needs_matbench = pytest.mark.skipif(importlib.util.find_spec("matbench") is None, reason="matbench not installed")


@pytest.fixture(scope="module")
def phonons_path(shared_data) -> Path:
    return shared_data / "matbench" / "matbench_phonons.json.gz"


@pytest.fixture(scope="module")
def phonons_raw(phonons_path) -> dict:
    with gzip.open(phonons_path, "rt") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def phonons_result(phonons_path):
    return MatbenchTask("matbench_phonons", path=str(phonons_path)).load(resolve_tasks(["phdos_peak"]))


def test_reads_every_entry_with_matbench_ids_and_targets(phonons_result, phonons_raw, phonons_path):
    result = phonons_result
    assert result.name == "matbench:matbench_phonons"
    assert str(phonons_path) in result.provenance
    assert result.entries_read == N_PHONONS and result.skips.total == 0 and result.label_skips.total == 0
    assert [r.id for r in result.records] == [f"mb-phonons-{i:04d}" for i in range(1, N_PHONONS + 1)]
    assert phonons_raw["columns"] == ["structure", "last phdos peak"]
    targets = [row[1] for row in phonons_raw["data"]]
    assert [r.labels["phdos_peak"] for r in result.records] == targets
    assert all(r.source == "matbench:matbench_phonons" for r in result.records)


@pytest.mark.parametrize("index", [0, 1, 640, N_PHONONS - 1])
def test_structures_match_the_file(phonons_result, phonons_raw, index):
    record = phonons_result.records[index]
    structure = Structure.from_dict(phonons_raw["data"][index][0])
    assert record.numbers.tolist() == [site.specie.Z for site in structure]
    np.testing.assert_allclose(record.cell, structure.lattice.matrix)
    np.testing.assert_allclose(record.positions, structure.cart_coords, atol=1e-10)
    record.validate()  # raises on a broken structure


@needs_matbench
def test_pre_placed_file_in_data_home_is_used(tmp_path, monkeypatch, phonons_path):
    monkeypatch.delenv("MATMINER_DATA", raising=False)
    (tmp_path / "matbench_phonons.json.gz").symlink_to(phonons_path)
    result = MatbenchTask("matbench_phonons", data_home=str(tmp_path)).load(resolve_tasks(["phdos_peak"]))
    assert str(tmp_path / "matbench_phonons.json.gz") in result.provenance
    assert len(result.records) == N_PHONONS


def _truncated_copy(raw: dict, folder: Path, rows: int, matminer_layout: bool = False) -> Path:
    """The first rows of the task; matminer's copies index rows 0, 1, ... instead of by MatBench id."""
    folder.mkdir()
    path = folder / "matbench_phonons.json.gz"
    index = list(range(rows)) if matminer_layout else raw["index"][:rows]
    small = {"index": index, "columns": raw["columns"], "data": raw["data"][:rows]}
    with gzip.open(path, "wt") as f:
        json.dump(small, f)
    return path


@needs_matbench
def test_pre_placed_file_with_wrong_row_count_is_not_used(tmp_path, monkeypatch, phonons_raw):
    placed = _truncated_copy(phonons_raw, tmp_path / "placed", rows=10)
    # matminer's own download folder: empty, so it must download (and fails without network)
    monkeypatch.setenv("MATMINER_DATA", str(tmp_path / "matminer_download"))
    source = MatbenchTask("matbench_phonons", data_home=str(placed.parent))
    with pytest.warns(UserWarning, match="10 rows"):
        try:
            result = source.load(resolve_tasks(["phdos_peak"]))
        except ConfigError as err:
            message = str(err)
            assert "could not be downloaded" in message and "matbench_phonons.json.gz" in message
        else:  # with network access, matminer downloads the official file instead of using the truncated one
            assert len(result.records) == N_PHONONS


@needs_matbench
def test_stale_matminer_file_is_refused(tmp_path, monkeypatch, phonons_raw):
    # $MATMINER_DATA holds a truncated file: skipped as pre-placed, then read by matminer (which checks no hash)
    stale = _truncated_copy(phonons_raw, tmp_path / "stale", rows=7, matminer_layout=True)
    monkeypatch.setenv("MATMINER_DATA", str(stale.parent))
    with pytest.warns(UserWarning, match="7 rows"), pytest.raises(ConfigError, match="loaded 7 rows"):
        MatbenchTask("matbench_phonons").load(resolve_tasks(["phdos_peak"]))


@needs_matbench
def test_row_numbers_of_matminer_copies_become_matbench_ids(tmp_path, phonons_raw):
    path = _truncated_copy(phonons_raw, tmp_path / "copy", rows=12, matminer_layout=True)
    result = MatbenchTask("matbench_phonons", path=str(path)).load(resolve_tasks(["phdos_peak"]))
    # zero-padded to the size of the whole task (1265 -> 4 digits), as matbench names them
    assert [r.id for r in result.records] == phonons_raw["index"][:12]
    assert [r.labels["phdos_peak"] for r in result.records] == [row[1] for row in phonons_raw["data"][:12]]


def test_configuration_errors(tmp_path, phonons_path):
    with pytest.raises(ConfigError, match="unsupported MatBench task"):
        MatbenchTask("matbench_steels")  # composition-only task
    with pytest.raises(ConfigError, match="phdos_peak"):
        MatbenchTask("matbench_phonons", path=str(phonons_path)).load(resolve_tasks(["Ef"]))
    with pytest.raises(ConfigError, match="file not found"):
        MatbenchTask("matbench_phonons", path=str(tmp_path / "nope.json.gz")).load(resolve_tasks(["phdos_peak"]))


@needs_matbench
def test_official_folds(phonons_raw, shared_data):
    folds = matbench_folds("matbench_phonons")
    assert sorted(folds) == [0, 1, 2, 3, 4]
    all_ids = set(phonons_raw["index"])
    tests = [set(test) for _, test in folds.values()]
    for train, test in folds.values():
        assert (len(train), len(test)) == (1012, 253)
        assert set(train) | set(test) == all_ids and not set(train) & set(test)
    assert sum(len(t) for t in tests) == N_PHONONS and set().union(*tests) == all_ids  # disjoint cover

    with gzip.open(shared_data / "matbench" / "matbench_v0.1_validation.json.gz", "rt") as f:
        shared = json.load(f)["splits"]["matbench_phonons"]
    assert {int(k.removeprefix("fold_")): (v["train"], v["test"]) for k, v in shared.items()} == folds

    with pytest.raises(ConfigError, match="no MatBench v0.1 splits"):
        matbench_folds("matbench_nonexistent")
