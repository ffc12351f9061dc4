import numpy as np
import pytest
from ase.io import write
from pymatgen.core import Structure

from equiprop.data.errors import DataError
from equiprop.data.record import (CrystalRecord, from_ase, from_jarvis_dict, from_pymatgen, from_pymatgen_dict,
                                  read_structure_file)


def test_one_record_from_every_structure_type(tiny_entries, tmp_path):
    entry = tiny_entries[0]
    structure = Structure.from_dict(entry["structure"])
    reference = from_pymatgen(structure, entry["material_id"])
    jarvis = {"lattice_mat": structure.lattice.matrix.tolist(), "coords": structure.frac_coords.tolist(),
              "elements": [s.specie.symbol for s in structure], "cartesian": False}
    structure.to(filename=str(tmp_path / "x.cif"))
    structure.to(filename=str(tmp_path / "POSCAR"), fmt="poscar")
    write(tmp_path / "x.extxyz", structure.to_ase_atoms(), format="extxyz")
    records = [from_pymatgen_dict(entry["structure"], "a"), from_ase(structure.to_ase_atoms(), "b"),
               from_jarvis_dict(jarvis, "c"), read_structure_file(tmp_path / "POSCAR")[0],
               read_structure_file(tmp_path / "x.extxyz")[0]]
    for record in records:
        np.testing.assert_allclose(record.cell, reference.cell, atol=1e-6)
        np.testing.assert_allclose(record.positions, reference.positions, atol=1e-5)
        np.testing.assert_array_equal(record.numbers, reference.numbers)
    cif = read_structure_file(tmp_path / "x.cif")[0]  # CIF may reorder sites: compare as sets
    assert sorted(cif.numbers) == sorted(reference.numbers)
    assert cif.volume == pytest.approx(reference.volume, rel=1e-5)


def test_dict_round_trip_and_properties(tiny_entries):
    record = from_pymatgen_dict(tiny_entries[0]["structure"], "mp-10166", "src", {"Ef": -1.0})
    back = CrystalRecord.from_dict(record.to_dict())
    np.testing.assert_allclose(back.positions, record.positions, atol=1e-5)
    assert back.labels == {"Ef": -1.0} and back.source == "src"
    assert record.chemical_system == "Al-Na-Se"
    assert record.validate() is record


def test_validate_rejects_broken_structures():
    cell = np.eye(3) * 4.0
    with pytest.raises(DataError, match="zero volume"):
        CrystalRecord("flat", [[4, 0, 0], [0, 4, 0], [0, 0, 0]], [[0, 0, 0]], [14]).validate()
    with pytest.raises(DataError, match="0.300 Å apart"):
        CrystalRecord("close", cell, [[0, 0, 0], [0.3, 0, 0]], [14, 14]).validate()
    with pytest.raises(DataError, match="unknown element"):
        CrystalRecord("z0", cell, [[0, 0, 0]], [0]).validate()
    with pytest.raises(DataError, match="atomic numbers but"):
        CrystalRecord("n", cell, [[0, 0, 0]], [14, 8])
