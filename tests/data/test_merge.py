import numpy as np

from equiprop.data.merge import merge_sources
from equiprop.data.record import from_pymatgen_dict
from equiprop.data.sources.base import SourceResult
from equiprop.data.symmetry import rotate_tensor


def _result(name, records):
    result = SourceResult(name, "test")
    result.records = records
    return result


def test_same_id_and_cell_merge_into_one_record_with_both_labels(tiny_entries):
    e = next(e for e in tiny_entries if e["Eg"] is not None)
    a = from_pymatgen_dict(e["structure"], e["material_id"], "a", {"Eg": e["Eg"]})
    b = from_pymatgen_dict(e["structure"], e["material_id"], "b", {"Ef": -1.5})
    table, report = merge_sources([_result("a", [a]), _result("b", [b])])
    assert len(table) == 1
    assert table[0].labels == {"Eg": e["Eg"], "Ef": -1.5}
    assert table[0].source == "a+b" and report.num_merged == 1


def test_rotated_cell_with_a_tensor_label_stays_a_separate_record(tiny_entries):
    e = next(e for e in tiny_entries if e["eps_electronic"] is not None)
    eps = np.array(e["eps_electronic"])
    a = from_pymatgen_dict(e["structure"], e["material_id"], "a", {"eps_electronic": eps})
    # the same material, in a rotated Cartesian frame: its tensor is a different array
    theta = 0.4
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    b = from_pymatgen_dict(e["structure"], e["material_id"], "b", {"eps_electronic": rotate_tensor(eps, rot)})
    b.cell, b.positions = b.cell @ rot.T, b.positions @ rot.T
    table, report = merge_sources([_result("a", [a]), _result("b", [b])])
    assert [r.id for r in table] == [e["material_id"], f"{e['material_id']}@b"]
    assert report.frame_mismatches.counts["a vs b"] == 1 and report.num_merged == 0
    np.testing.assert_allclose(table[0].labels["eps_electronic"], eps)  # a's tensor was not overwritten


def test_conflicting_labels_keep_the_first_and_are_counted(tiny_entries):
    e = tiny_entries[0]
    a = from_pymatgen_dict(e["structure"], "x", "a", {"Ef": -1.0})
    b = from_pymatgen_dict(e["structure"], "x", "b", {"Ef": -2.0})
    table, report = merge_sources([_result("a", [a]), _result("b", [b])])
    assert table[0].labels["Ef"] == -1.0
    assert sum(report.conflicts.counts.values()) == 1


def test_different_ids_never_merge(tiny_entries):
    e = tiny_entries[0]
    a = from_pymatgen_dict(e["structure"], "mp-1", "a", {"Ef": -1.0})
    b = from_pymatgen_dict(e["structure"], "mp-2", "b", {"Eg": 1.0})
    table, _ = merge_sources([_result("a", [a]), _result("b", [b])])
    assert len(table) == 2
