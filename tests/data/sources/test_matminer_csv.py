import numpy as np
import pytest

from equiprop.data.sources.matminer_csv import MatminerCSV
from equiprop.data.symmetry import point_group_rotations, rotate_tensor
from equiprop.data.tasks import resolve_tasks

TASKS = resolve_tasks(["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor",
                       "piezo_tensor", "eij_max"])


@pytest.mark.parametrize("dataset,expected", [
    ("dielectric_constant", {"Eg", "eps_electronic", "eps_total"}),
    ("elastic_tensor", {"K_VRH", "G_VRH", "elastic_tensor"}),
    ("piezoelectric_tensor", {"piezo_tensor", "eij_max"}),
    ("flla_2015", {"Ef"}),
])
def test_reads_real_rows_with_units_and_provenance(shared_data, dataset, expected):
    result = MatminerCSV(str(shared_data / "matminer-0.4.0" / f"{dataset}.csv.gz"), limit=40).load(TASKS)
    assert result.entries_read == 40
    assert len(result.records) + result.skips.total == 40
    assert set(result.label_counts()) <= expected and set(result.label_counts())
    assert "ref:" in result.provenance  # the citation line of the file
    assert all(r.id.startswith("mp-") and r.source == f"matminer:{dataset}" for r in result.records)


def test_known_values_of_the_first_rows(shared_data):
    root = shared_data / "matminer-0.4.0"
    die = MatminerCSV(str(root / "dielectric_constant.csv.gz"), limit=1).load(TASKS).records[0]
    assert die.id == "mp-441" and die.labels["Eg"] == pytest.approx(1.88)
    assert die.labels["eps_electronic"].shape == (3, 3)
    assert np.trace(die.labels["eps_electronic"]) / 3 == pytest.approx(3.4413, abs=1e-3)  # cubic Rb2Te
    flla = MatminerCSV(str(root / "flla_2015.csv.gz"), limit=1).load(TASKS).records[0]
    assert flla.id == "mp-10" and flla.labels["Ef"] == pytest.approx(0.1074050600000005)
    el = MatminerCSV(str(root / "elastic_tensor.csv.gz"), limit=1).load(TASKS).records[0]
    assert el.labels["elastic_tensor"].shape == (3, 3, 3, 3)
    assert el.labels["K_VRH"] == pytest.approx(194.268884359)


def test_tensors_are_invariant_under_the_point_group_of_their_structure(shared_data):
    """The stored tensors fit their record's frame: the property that frame-aware merging and equivariance need."""
    root = shared_data / "matminer-0.4.0"
    for name, task in [("elastic_tensor", "elastic_tensor"), ("piezoelectric_tensor", "piezo_tensor")]:
        result = MatminerCSV(str(root / f"{name}.csv.gz"), limit=25).load(TASKS)
        labelled = [r for r in result.records if task in r.labels]
        assert len(labelled) >= 15
        for record in labelled:
            t = record.labels[task]
            for rotation in point_group_rotations(record.to_pymatgen()):
                np.testing.assert_allclose(rotate_tensor(t, rotation), t, atol=1e-6 * max(1, np.abs(t).max()))


def test_piezo_tensors_that_fit_no_frame_are_masked_and_counted(shared_data):
    result = MatminerCSV(str(shared_data / "matminer-0.4.0" / "piezoelectric_tensor.csv.gz"), limit=120).load(
        resolve_tasks(["piezo_tensor"]))
    dropped = result.label_skips.counts["piezo_tensor: tensor does not fit the structure frame"]
    assert dropped > 0
    assert result.skips.counts["no label of the requested tasks"] == dropped  # nothing else left on those entries
    assert len(result.records) + dropped == 120
