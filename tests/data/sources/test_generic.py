"""StructureFolder (CGCNN layout) and ExtXYZ on files written from real tiny_multitask structures."""

import json

import ase.io
import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from equiprop.data.errors import ConfigError
from equiprop.data.sources import ExtXYZ, StructureFolder
from equiprop.data.tasks import resolve_tasks


@pytest.fixture(scope="module")
def tiny(tiny_multitask_path) -> list[dict]:
    return json.loads(tiny_multitask_path.read_text())["entries"]


def _structure(entry: dict) -> Structure:
    return Structure.from_dict(entry["structure"])


def _assert_same_crystal(record, entry: dict) -> None:
    structure = _structure(entry)
    assert sorted(record.numbers.tolist()) == sorted(site.specie.Z for site in structure)
    assert record.volume == pytest.approx(structure.volume, rel=1e-4)


@pytest.fixture
def cgcnn_folder(tmp_path, tiny):
    """CGCNN layout: 7 good structure files in three naming styles, one malformed CIF, one row without a file."""
    root = tmp_path / "cgcnn_Ef"
    root.mkdir()
    with_ef = [e for e in tiny if e["Ef"] is not None][:8]
    for i, entry in enumerate(with_ef[:7]):
        name = {5: f"POSCAR_{entry['material_id']}", 6: f"{entry['material_id']}.vasp"}.get(i)
        if name is None:
            _structure(entry).to(filename=str(root / f"{entry['material_id']}.cif"), fmt="cif")
        else:
            _structure(entry).to(filename=str(root / name), fmt="poscar")
    (root / f"{with_ef[7]['material_id']}.cif").write_text("data_broken\n_cell_length_a 3.0\nnot a cif at all\n")
    rows = [f"{e['material_id']},{e['Ef']!r}" for e in with_ef] + ["mp-no-file,-1.5"]
    (root / "id_prop.csv").write_text("\n".join(rows) + "\n")  # CGCNN: no header
    return root, with_ef


def test_cgcnn_folder_without_header(cgcnn_folder):
    root, with_ef = cgcnn_folder
    result = StructureFolder(str(root)).load(resolve_tasks(["Ef"]))
    assert result.name == "folder:cgcnn_Ef"
    assert result.entries_read == 9 and len(result.records) == 7
    assert result.skips.counts == {"structure file missing": 1, "unparseable structure": 1}
    assert result.skips.examples["structure file missing"] == ["mp-no-file"]
    assert [r.id for r in result.records] == [e["material_id"] for e in with_ef[:7]]
    for record, entry in zip(result.records, with_ef):
        assert record.labels == {"Ef": entry["Ef"]}
        assert record.source == "folder:cgcnn_Ef"
        _assert_same_crystal(record, entry)


def test_headerless_csv_with_several_tasks_is_an_error(cgcnn_folder):
    root, _ = cgcnn_folder
    with pytest.raises(ConfigError, match="no header"):
        StructureFolder(str(root)).load(resolve_tasks(["Ef", "Eg"]))


def test_headered_csv_with_two_tasks(tmp_path, tiny):
    root = tmp_path / "mixed"
    root.mkdir()
    with_eg = [e for e in tiny if e["Eg"] is not None][:5]
    chosen = with_eg + [e for e in tiny if e["Eg"] is None and e["Ef"] is not None][:3]
    lines = ["material_id,formation_energy_per_atom,band_gap,comment"]  # task keys as column names
    for entry in chosen:
        _structure(entry).to(filename=str(root / f"{entry['material_id']}.cif"), fmt="cif")
        cells = ["" if entry[t] is None else repr(entry[t]) for t in ("Ef", "Eg")]
        lines.append(",".join([entry["material_id"], *cells, "real MP structure"]))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")

    result = StructureFolder(str(root), labels="labels.csv").load(resolve_tasks(["Ef", "Eg"]))
    assert len(result.records) == 8 and result.skips.total == 0
    n_ef = sum(e["Ef"] is not None for e in chosen)
    assert result.missing == {"Ef": 8 - n_ef, "Eg": 3}
    for record, entry in zip(result.records, chosen):
        assert record.id == entry["material_id"]
        assert record.labels == {t: entry[t] for t in ("Ef", "Eg") if entry[t] is not None}

    # explicit column names win over task keys; a named column that does not exist is an error
    renamed = StructureFolder(str(root), labels="labels.csv", columns={"Eg": "formation_energy_per_atom"})
    result = renamed.load(resolve_tasks([{"name": "Eg", "valid_range": None}]))  # formation energies are < 0
    assert [r.labels["Eg"] for r in result.records] == [e["Ef"] for e in chosen if e["Ef"] is not None]
    with pytest.raises(ConfigError, match="'gap' of task 'Eg' not found"):
        StructureFolder(str(root), labels="labels.csv", columns={"Eg": "gap"}).load(resolve_tasks(["Eg"]))
    with pytest.raises(ConfigError, match="no label of the requested tasks"):
        StructureFolder(str(root), labels="labels.csv").load(resolve_tasks(["K_VRH"]))


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        StructureFolder(str(tmp_path / "absent")).load(resolve_tasks(["Ef"]))
    (tmp_path / "id_prop.csv").write_text("name,value\nx,1.0\n")
    with pytest.raises(ConfigError, match="no id column"):
        StructureFolder(str(tmp_path)).load(resolve_tasks(["Ef"]))


def test_extxyz_frames_with_labels_in_info(tmp_path, tiny):
    dielectric = [e for e in tiny if e["eps_electronic"] is not None][:5]
    frames = []
    for i, entry in enumerate(dielectric):
        atoms = AseAtomsAdaptor.get_atoms(_structure(entry))
        atoms.info = {"band_gap": entry["Eg"]}
        if i != 3:  # frame 3 has no id: it is named after the file and frame index
            atoms.info["material_id"] = entry["material_id"]
        if entry["Ef"] is not None:
            atoms.info["formation_energy_per_atom"] = entry["Ef"]
        if i != 1:  # flat 9-component tensor, as extxyz stores arrays
            atoms.info["eps_electronic"] = np.asarray(entry["eps_electronic"]).reshape(-1)
        frames.append(atoms)
    path = tmp_path / "dielectric.extxyz"
    ase.io.write(str(path), frames, format="extxyz")

    result = ExtXYZ(str(path)).load(resolve_tasks(["Ef", "Eg", "eps_electronic"]))
    assert result.entries_read == 5 and len(result.records) == 5 and result.skips.total == 0
    expected_ids = [e["material_id"] for e in dielectric]
    expected_ids[3] = "dielectric:3"
    assert [r.id for r in result.records] == expected_ids
    n_ef = sum(e["Ef"] is not None for e in dielectric)
    assert result.missing == ({"Ef": 5 - n_ef} if n_ef < 5 else {}) | {"eps_electronic": 1}
    for i, (record, entry) in enumerate(zip(result.records, dielectric)):
        assert record.labels["Eg"] == pytest.approx(entry["Eg"])
        assert set(record.labels) == {"Eg"} | ({"Ef"} if entry["Ef"] is not None else set()) | (
            {"eps_electronic"} if i != 1 else set())
        if i != 1:
            tensor = record.labels["eps_electronic"]
            assert tensor.shape == (3, 3)
            np.testing.assert_allclose(tensor, entry["eps_electronic"], atol=1e-3 * np.abs(tensor).max())
        np.testing.assert_allclose(record.positions, _structure(entry).cart_coords, atol=1e-6)

    # an info key named through columns
    result = ExtXYZ(str(path), columns={"Eg": "band_gap"}).load(resolve_tasks(["Eg"]))
    assert [r.labels["Eg"] for r in result.records] == pytest.approx([e["Eg"] for e in dielectric])
    with pytest.raises(ConfigError, match="no label of the requested tasks"):
        ExtXYZ(str(path)).load(resolve_tasks(["K_VRH"]))


def test_extxyz_per_atom_columns_label_a_per_atom_task(tmp_path, tiny):
    charge = {"name": "charge", "key": "charges", "units": "e", "level": "atom"}  # ase keeps charges in a calculator
    frames = []
    for i, entry in enumerate(tiny[:3]):
        atoms = AseAtomsAdaptor.get_atoms(_structure(entry))
        values = np.arange(len(atoms), dtype=float) + i
        if i == 1:
            values[0] = np.nan  # one atom without a label: masked, the others kept
        atoms.arrays["charges"] = values
        atoms.info["Ef"] = -1.0
        frames.append(atoms)
    frames[2].arrays["charges"] = np.full(len(frames[2]), np.nan)  # no atom labelled: the label is missing
    path = tmp_path / "charges.extxyz"
    ase.io.write(path, frames, format="extxyz")
    result = ExtXYZ(str(path)).load(resolve_tasks([charge, "Ef"]))
    assert [r.labels["charge"].shape for r in result.records[:2]] == [(len(frames[0]),), (len(frames[1]),)]
    np.testing.assert_array_equal(result.records[0].labels["charge"], np.arange(len(frames[0])))
    assert np.isnan(result.records[1].labels["charge"][0]) and result.records[1].labels["charge"][1] == 2.0
    assert "charge" not in result.records[2].labels and result.missing["charge"] == 1
