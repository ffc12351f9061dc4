"""Bad input, case by case: each is either a clear error naming the file or entry and the problem, or a counted skip.

Every input is built in ``tmp_path`` from the real structures of ``tests/fixtures/tiny_multitask.json`` (Materials
Project data via matminer 0.4.0), then broken in one precise way. For counted skips the test also checks that every
other entry was still read.
"""

from __future__ import annotations

import copy
import io
import json
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

import equiprop
from equiprop.cli import main
from equiprop.data import keys
from equiprop.data.dataset import build_graphs
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import neighbour_list
from equiprop.data.record import (CrystalRecord, from_jarvis_dict, from_pymatgen_dict, from_text,
                                  read_structure_file)
from equiprop.data.sources.base import SourceResult, add_entry
from equiprop.data.sources.matminer_csv import MatminerCSV
from equiprop.data.sources.records_json import RecordsJSON
from equiprop.data.tasks import resolve_tasks


# -- real inputs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_multitask_path) -> list[dict]:
    return json.loads(tiny_multitask_path.read_text())["entries"]


def _with(tiny: list[dict], *fields: str) -> list[dict]:
    """Entries that carry every one of ``fields``."""
    return [e for e in tiny if all(e.get(f) is not None for f in fields)]


def _structure(entry: dict) -> Structure:
    return Structure.from_dict(entry["structure"])


def _record(entry: dict, labels: dict | None = None, id: str | None = None) -> CrystalRecord:
    return from_pymatgen_dict(entry["structure"], id or entry["material_id"], "tiny", labels)


def _write_records(path: Path, records: list[dict]) -> Path:
    """An equiprop records file. Python's json writes float NaN / inf as NaN / Infinity and reads them back."""
    path.write_text(json.dumps({"meta": {"provenance": "test"}, "records": records}))
    return path


def _write_entries(path: Path, entries: list[dict]) -> Path:
    """A file in the tiny_multitask layout."""
    path.write_text(json.dumps({"meta": {}, "entries": entries}))
    return path


def _new_result() -> SourceResult:
    return SourceResult("test", "built in the test")


def _ids(result: SourceResult) -> list[str]:
    return [r.id for r in result.records]


# -- structure files: unreadable, malformed CIF, malformed POSCAR ---------------------------------------------------
@pytest.mark.parametrize("how", ["invalid utf-8", "a directory", "does not exist"])
def test_unreadable_structure_file_is_an_error_naming_the_file(tmp_path, how):
    path = tmp_path / "mp-unreadable.cif"
    if how == "invalid utf-8":
        path.write_bytes(b"\xff\xfe\x00data_\x80\x81\x82 binary junk")
    elif how == "a directory":
        path.mkdir()
    with pytest.raises(DataError) as info:
        read_structure_file(path)
    assert str(path) in str(info.value) and "unreadable file" in str(info.value)
    assert info.value.kind == "unreadable file"


def test_structure_file_of_unknown_type_is_an_error_naming_the_file(tmp_path, tiny):
    path = tmp_path / "mp-10166.txt"
    path.write_text(_structure(tiny[0]).to(fmt="cif"))
    with pytest.raises(DataError) as info:
        read_structure_file(path)
    assert str(path) in str(info.value) and "unknown structure file type" in str(info.value)


def _broken_cifs(structure: Structure) -> dict[str, str]:
    cif = structure.to(fmt="cif")
    lines = cif.splitlines()
    return {"not a cif": "data_broken\n_cell_length_a 3.0\nnot a cif at all\n",
            "empty": "",
            "truncated": "\n".join(lines[: len(lines) // 2]) + "\n",
            "non-numeric cell": cif.replace("_cell_length_a", "_cell_length_a xx\n#")}


def _broken_poscars(structure: Structure) -> dict[str, str]:
    lines = structure.to(fmt="poscar").splitlines()
    return {"truncated coordinates": "\n".join(lines[:-3]) + "\n",
            "non-numeric lattice": "\n".join(lines[:2] + ["a b c"] + lines[3:]) + "\n",
            "non-integer counts": "\n".join(lines[:6] + ["two two four"] + lines[7:]) + "\n",
            "empty": ""}


@pytest.mark.parametrize("case", ["not a cif", "empty", "truncated", "non-numeric cell"])
def test_malformed_cif_file_is_an_error_naming_the_file(tmp_path, tiny, case):
    structure = _structure(tiny[0])
    good = tmp_path / "mp-good.cif"
    structure.to(filename=str(good), fmt="cif")
    assert sorted(read_structure_file(good)[0].numbers) == sorted(s.specie.Z for s in structure)  # the control reads

    path = tmp_path / "mp-broken.cif"
    path.write_text(_broken_cifs(structure)[case])
    with pytest.raises(DataError) as info:
        read_structure_file(path)
    assert "mp-broken" in str(info.value) and "cannot parse CIF" in str(info.value)
    assert info.value.kind == "unparseable structure"
    with pytest.raises(DataError, match=r"mp-broken\.cif \(my-id\): cannot parse CIF"):
        read_structure_file(path, id="my-id")


@pytest.mark.parametrize("case", ["truncated coordinates", "non-numeric lattice", "non-integer counts", "empty"])
def test_malformed_poscar_file_is_an_error_naming_the_file(tmp_path, tiny, case):
    structure = _structure(tiny[0])
    good = tmp_path / "mp-good.vasp"
    structure.to(filename=str(good), fmt="poscar")
    assert read_structure_file(good)[0].num_atoms == len(structure)  # the control reads

    for name in ("mp-broken.vasp", "POSCAR_mp-broken"):
        path = tmp_path / name
        path.write_text(_broken_poscars(structure)[case])
        with pytest.raises(DataError) as info:
            read_structure_file(path)
        assert "mp-broken" in str(info.value) and "cannot parse POSCAR" in str(info.value)
        assert info.value.kind == "unparseable structure"


def test_malformed_text_is_an_error_naming_the_entry(tiny):
    structure = _structure(tiny[0])
    for fmt, texts in (("cif", _broken_cifs(structure)), ("poscar", _broken_poscars(structure)),
                       ("vasp", _broken_poscars(structure))):
        for case, text in texts.items():
            with pytest.raises(DataError) as info:
                from_text(text, fmt, "mp-entry-7")
            assert str(info.value).startswith("mp-entry-7: cannot parse"), (fmt, case, str(info.value))
            assert info.value.kind == "unparseable structure"


def test_malformed_text_through_add_entry_is_a_counted_skip(tiny):
    tasks = resolve_tasks(["Ef"])
    good = _with(tiny, "Ef")[:4]
    structure = _structure(good[0])
    result = _new_result()
    for e in good:
        add_entry(result, e["material_id"], lambda e=e: from_text(_structure(e).to(fmt="poscar"), "poscar",
                                                                 e["material_id"]), {"Ef": e["Ef"]}, tasks)
    add_entry(result, "mp-badcif", lambda: from_text(_broken_cifs(structure)["truncated"], "cif", "mp-badcif"),
              {"Ef": -1.0}, tasks, "structures.csv:mp-badcif")
    add_entry(result, "mp-badposcar", lambda: from_text(_broken_poscars(structure)["truncated coordinates"],
                                                        "poscar", "mp-badposcar"), {"Ef": -1.0}, tasks)
    assert result.entries_read == 6
    assert dict(result.skips.counts) == {"unparseable structure": 2}
    examples = result.skips.examples["unparseable structure"]
    assert examples[0].startswith("structures.csv:mp-badcif: cannot parse CIF")
    assert examples[1].startswith("mp-badposcar: cannot parse POSCAR")
    assert _ids(result) == [e["material_id"] for e in good]


def test_unparseable_structure_dict_through_records_json_is_a_counted_skip(tmp_path, tiny):
    entries = copy.deepcopy(_with(tiny, "Ef")[:5])
    broken = copy.deepcopy(entries[2])
    broken["material_id"] = "mp-nolattice"
    del broken["structure"]["lattice"]
    path = _write_entries(tmp_path / "tiny_broken.json", entries + [broken])

    result = RecordsJSON(str(path)).load(resolve_tasks(["Ef"]))
    assert result.entries_read == 6
    assert dict(result.skips.counts) == {"unparseable structure": 1}
    (example,) = result.skips.examples["unparseable structure"]
    assert example.startswith("tiny_broken.json:mp-nolattice:") and "lattice" in example
    assert _ids(result) == [e["material_id"] for e in entries]


@pytest.mark.parametrize("breakage", ["cell of shape 2x3", "ragged frac", "non-numeric cell", "no cell"])
def test_malformed_structure_in_records_layout_is_a_counted_skip(tmp_path, tiny, breakage):
    """A records file entry whose cell/coordinates cannot form a structure must be skipped and counted like any
    other unparseable structure (as the tiny layout does), not crash the whole load with a bare ValueError/KeyError
    that names neither the file nor the entry."""
    good = [_record(e, {"Ef": e["Ef"]}).to_dict() for e in _with(tiny, "Ef")[:4]]
    bad = copy.deepcopy(good[1])
    bad["id"] = "mp-badcell"
    if breakage == "cell of shape 2x3":
        bad["cell"] = bad["cell"][:2]
    elif breakage == "ragged frac":
        bad["frac"][-1] = bad["frac"][-1][:2]
    elif breakage == "non-numeric cell":
        bad["cell"][0][0] = "abc"
    else:
        del bad["cell"]
    path = _write_records(tmp_path / "records.json", good + [bad])

    result = RecordsJSON(str(path)).load(resolve_tasks(["Ef"]))
    assert dict(result.skips.counts) == {"unparseable structure": 1}
    assert result.skips.examples["unparseable structure"][0].startswith("records.json:mp-badcell")
    assert _ids(result) == [d["id"] for d in good]


@pytest.mark.parametrize("content", ["truncated json", "binary"])
def test_unreadable_records_file_is_an_error_naming_the_file(tmp_path, tiny, content):
    """A records file that is not JSON must give a DataError/ConfigError naming the file (which the CLI reports),
    not a bare JSONDecodeError / UnicodeDecodeError."""
    path = tmp_path / "records_broken.json"
    if content == "truncated json":
        text = json.dumps({"meta": {}, "records": [_record(e, {"Ef": e["Ef"]}).to_dict()
                                                   for e in _with(tiny, "Ef")[:3]]})
        path.write_text(text[: len(text) // 2])
    else:
        path.write_bytes(b"\xff\xfe\x00\x80 not json")
    with pytest.raises((DataError, ConfigError)) as info:
        RecordsJSON(str(path)).load(resolve_tasks(["Ef"]))
    assert "records_broken.json" in str(info.value)


# -- geometry: isolated atom, atoms too close, unknown elements, zero volume ---------------------------------------
def _with_stray_atom(entry: dict, id: str = "mp-stray") -> CrystalRecord:
    """The real atoms of ``entry`` as a cluster in a 30 Å box, plus one Cl atom far from all of them."""
    record = _record(entry, id=id)
    positions = record.positions - record.positions.min(axis=0) + 2.0
    stray = positions.max(axis=0) + 8.0  # > 5 Å from every atom; its own images are 30 Å away
    return CrystalRecord(id=id, cell=np.eye(3) * 30.0, positions=np.vstack([positions, stray]),
                         numbers=np.append(record.numbers, 17), labels={"Ef": -1.0})


def test_atom_without_neighbour_is_an_error_naming_the_entry_and_atom(tiny):
    record = _with_stray_atom(tiny[0])
    record.validate()  # a valid structure: only the graph cannot be built
    with pytest.raises(DataError) as info:
        neighbour_list(record, cutoff=5.0)
    stray_index = record.num_atoms - 1
    assert str(info.value) == f"mp-stray: atom {stray_index} has no neighbour within the 5.0 Å cutoff"
    assert info.value.kind == "atom with no neighbour within the cutoff"
    # the same cluster without the stray atom has neighbours everywhere
    edges, _ = neighbour_list(CrystalRecord("ok", record.cell, record.positions[:-1], record.numbers[:-1]), 5.0)
    assert set(edges[0].tolist()) == set(range(stray_index))


def test_build_graphs_counts_isolated_atoms_and_keeps_the_rest(tiny):
    entries = _with(tiny, "Ef")[:5]
    records = [_record(e, {"Ef": e["Ef"]}) for e in entries]
    records.insert(2, _with_stray_atom(tiny[0]))
    graphs, skips = build_graphs(records, resolve_tasks(["Ef"]), cutoff=5.0)
    assert dict(skips.counts) == {"atom with no neighbour within the cutoff": 1}
    assert skips.examples["atom with no neighbour within the cutoff"][0].startswith("mp-stray: atom")
    assert [g[keys.STRUCTURE_ID] for g in graphs] == [e["material_id"] for e in entries]


def test_isolated_atom_is_reported_by_the_datamodule(tmp_path, tiny):
    entries = _with(tiny, "Ef")[:6]
    records = [_record(e, {"Ef": e["Ef"]}).to_dict() for e in entries] + [_with_stray_atom(tiny[0]).to_dict()]
    path = _write_records(tmp_path / "with_stray.json", records)
    dm = MultiTaskDataModule(sources=[RecordsJSON(str(path))], tasks=["Ef"], cache_dir=str(tmp_path / "cache"))
    dataset, report = dm.load_graphs()
    assert report["sources"][0]["records"] == 7  # the structure itself is valid
    assert report["graph_skipped"] == {"atom with no neighbour within the cutoff": {
        "count": 1, "examples": [f"mp-stray: atom {len(records[-1]['numbers']) - 1} has no neighbour within the "
                                 "5.0 Å cutoff, nor within 10 Å (the most it is extended, 2x)"]}}
    assert report["num_graphs"] == len(dataset) == 6


def _with_close_atom(entry: dict, id: str, across_boundary: bool = False) -> CrystalRecord:
    """The real structure plus an O atom 0.3 Å from atom 0 (optionally on the far side of a cell face)."""
    record = _record(entry, id=id)
    direction = record.cell[2] / np.linalg.norm(record.cell[2])
    new = record.positions[0] - 0.3 * direction
    if across_boundary:  # wrap into the cell: the close pair is then only close through a periodic image
        frac = np.linalg.solve(record.cell.T, new) % 1.0
        new = frac @ record.cell
        assert np.linalg.norm(new - record.positions[0]) > 1.0
    return CrystalRecord(id=id, cell=record.cell, positions=np.vstack([record.positions, new]),
                         numbers=np.append(record.numbers, 8))


@pytest.mark.parametrize("across_boundary", [False, True])
def test_atoms_closer_than_half_an_angstrom_are_an_error(tiny, across_boundary):
    entry = next(e for e in tiny if _structure(e).frac_coords[0][2] < 0.01)  # atom 0 on a cell face
    record = _with_close_atom(entry, "mp-close", across_boundary)
    with pytest.raises(DataError) as info:
        record.validate()
    assert str(info.value) == "mp-close: two atoms are 0.300 Å apart (< 0.5 Å)"
    assert info.value.kind == "atoms closer than 0.5 Å"


def test_atoms_too_close_through_add_entry_are_a_counted_skip(tiny):
    tasks = resolve_tasks(["Ef"])
    entries = _with(tiny, "Ef")[:4]
    result = _new_result()
    for i, e in enumerate(entries):
        add_entry(result, e["material_id"], lambda e=e: _record(e), {"Ef": e["Ef"]}, tasks)
        if i == 1:
            add_entry(result, "mp-close", lambda e=e: _with_close_atom(e, "mp-close"), {"Ef": -1.0}, tasks)
    assert result.entries_read == 5
    assert dict(result.skips.counts) == {"atoms closer than 0.5 Å": 1}
    assert result.skips.examples["atoms closer than 0.5 Å"] == ["mp-close: two atoms are 0.300 Å apart (< 0.5 Å)"]
    assert _ids(result) == [e["material_id"] for e in entries]


@pytest.mark.parametrize("z", [0, 119])
def test_unknown_atomic_number_is_an_error_and_a_counted_skip(tiny, z):
    record = _record(tiny[0], id="mp-unknown-z")
    record.numbers[0] = z
    with pytest.raises(DataError) as info:
        record.validate()
    assert str(info.value) == f"mp-unknown-z: unknown element (atomic number {z})"
    assert info.value.kind == "unknown element"

    tasks = resolve_tasks(["Ef"])
    entries = _with(tiny, "Ef")[:3]
    result = _new_result()
    add_entry(result, "mp-unknown-z", lambda: record, {"Ef": -1.0}, tasks)
    for e in entries:
        add_entry(result, e["material_id"], lambda e=e: _record(e), {"Ef": e["Ef"]}, tasks)
    assert dict(result.skips.counts) == {"unknown element": 1}
    assert _ids(result) == [e["material_id"] for e in entries]


def _jarvis_dict(entry: dict) -> dict:
    structure = _structure(entry)
    return {"lattice_mat": structure.lattice.matrix.tolist(), "coords": structure.frac_coords.tolist(),
            "elements": [s.specie.symbol for s in structure], "cartesian": False}


@pytest.mark.parametrize("symbol", ["Xx", "X", "D1", ""])
def test_unknown_symbol_in_jarvis_dict_is_an_error_and_a_counted_skip(tiny, symbol):
    bad = _jarvis_dict(tiny[0])
    bad["elements"][1] = symbol
    with pytest.raises(DataError) as info:
        from_jarvis_dict(bad, "JVASP-bad")
    assert str(info.value) == f"JVASP-bad: unknown element {symbol!r}"
    assert info.value.kind == "unknown element"

    tasks = resolve_tasks(["Ef"])
    entries = _with(tiny, "Ef")[:3]
    result = _new_result()
    for e in entries:
        add_entry(result, e["material_id"], lambda e=e: from_jarvis_dict(_jarvis_dict(e), e["material_id"]),
                  {"Ef": e["Ef"]}, tasks)
    add_entry(result, "JVASP-bad", lambda: from_jarvis_dict(bad, "JVASP-bad"), {"Ef": -1.0}, tasks,
              "dft_3d.json:JVASP-bad")
    assert dict(result.skips.counts) == {"unknown element": 1}
    assert result.skips.examples["unknown element"] == [f"dft_3d.json:JVASP-bad: unknown element {symbol!r}"]
    assert _ids(result) == [e["material_id"] for e in entries]


@pytest.mark.parametrize("fmt", ["poscar", "cif"])
def test_unknown_symbol_in_structure_text_is_an_error_naming_the_symbol(tiny, fmt):
    """pymatgen reads an unknown symbol as a DummySpecies whose ``Z`` is ``hash(symbol)`` (no AttributeError), so
    the record gets a random 19-digit "atomic number". The error must name the symbol, not that number."""
    structure = _structure(tiny[0])  # Na2 Al2 Se4
    if fmt == "poscar":
        lines = structure.to(fmt="poscar").splitlines()
        text = "\n".join(lines[:5] + [lines[5].replace("Na", "Qq")] + lines[6:]) + "\n"
    else:
        text = re.sub(r"\bNa(\d*)\b", r"Qq\1", structure.to(fmt="cif"))
    with pytest.raises(DataError) as info:
        from_text(text, fmt, "mp-qq").validate()
    assert info.value.kind == "unknown element"
    assert str(info.value).startswith("mp-qq: unknown element") and "Qq" in str(info.value)


def _flat_cell(cell: np.ndarray) -> np.ndarray:
    flat = np.array(cell, dtype=float)
    flat[2] = flat[0] + flat[1]  # three coplanar lattice vectors
    return flat


def test_zero_volume_cell_is_an_error(tiny):
    record = _record(tiny[0])
    for cell in (_flat_cell(record.cell), np.zeros((3, 3))):
        broken = CrystalRecord("mp-flat", cell, record.positions[:2] * 0.1, record.numbers[:2])
        with pytest.raises(DataError) as info:
            broken.validate()
        assert str(info.value).startswith("mp-flat: cell has zero volume")
        assert info.value.kind == "zero-volume cell"


def test_zero_volume_cell_through_readers_is_a_counted_skip(tmp_path, tiny):
    tasks = resolve_tasks(["Ef"])
    entries = _with(tiny, "Ef")[:4]

    records = [_record(e, {"Ef": e["Ef"]}).to_dict() for e in entries]
    flat = copy.deepcopy(records[0])
    flat["id"], flat["cell"] = "mp-flat", _flat_cell(flat["cell"]).tolist()
    result = RecordsJSON(str(_write_records(tmp_path / "records.json", records + [flat]))).load(tasks)
    assert dict(result.skips.counts) == {"zero-volume cell": 1}
    assert result.skips.examples["zero-volume cell"][0].startswith("records.json:mp-flat: cell has zero volume")
    assert _ids(result) == [e["material_id"] for e in entries]

    tiny_flat = copy.deepcopy(entries[1])
    tiny_flat["material_id"] = "mp-flat"
    tiny_flat["structure"]["lattice"]["matrix"] = _flat_cell(tiny_flat["structure"]["lattice"]["matrix"]).tolist()
    result = RecordsJSON(str(_write_entries(tmp_path / "entries.json", [tiny_flat] + entries))).load(tasks)
    assert dict(result.skips.counts) == {"zero-volume cell": 1}
    assert _ids(result) == [e["material_id"] for e in entries]


# -- labels: missing values, wrong shapes, asymmetric tensors ------------------------------------------------------
MISSING_VALUES = [float("nan"), float("inf"), float("-inf"), "na", "NA ", "nan", "", None]


def test_nan_inf_na_none_labels_are_masked_and_counted(tmp_path, tiny):
    entries = _with(tiny, "Ef", "Eg")
    assert len(entries) >= len(MISSING_VALUES) + 2
    tasks = resolve_tasks(["Ef", "Eg", "eps_electronic"])
    records = []
    for i, e in enumerate(entries[: len(MISSING_VALUES) + 2]):
        d = _record(e).to_dict()
        d["labels"] = {"Ef": MISSING_VALUES[i] if i < len(MISSING_VALUES) else e["Ef"], "Eg": e["Eg"]}
        records.append(d)
    records[0]["labels"]["eps_electronic"] = [[float("nan")] * 3] * 3  # a tensor with NaN entries is missing too
    records[1]["labels"] = {"Ef": None, "Eg": "na"}  # nothing left: the entry is skipped, and counted
    path = _write_records(tmp_path / "labels.json", records)
    text = path.read_text()
    assert "NaN" in text and "-Infinity" in text  # real non-finite JSON numbers in the file

    result = RecordsJSON(str(path)).load(tasks)
    assert result.entries_read == len(records)
    assert result.missing == {"Ef": len(MISSING_VALUES), "Eg": 1, "eps_electronic": len(records)}
    assert dict(result.skips.counts) == {"no label of the requested tasks": 1}
    assert result.skips.examples["no label of the requested tasks"] == [f"labels.json:{records[1]['id']}"]
    assert result.label_skips.total == 0
    assert _ids(result) == [d["id"] for i, d in enumerate(records) if i != 1]
    for record in result.records:
        assert set(record.labels) == ({"Ef", "Eg"} if record.id in {d["id"] for d in records[-2:]} else {"Eg"})
        assert all(np.isfinite(v).all() for v in record.labels.values())

    graphs, _ = build_graphs(result.records, tasks, cutoff=5.0)
    ef_mask = [bool(g[keys.mask_key("Ef")]) for g in graphs]
    assert ef_mask == [False] * (len(graphs) - 2) + [True, True]
    for g in graphs:  # masked labels are finite zeros, never NaN
        for name in tasks:
            assert bool(g[keys.label_key(name)].isfinite().all()), (g[keys.STRUCTURE_ID], name)


def test_null_labels_of_the_real_tiny_file_are_masked_and_counted(tiny, tiny_multitask_path):
    result = RecordsJSON(str(tiny_multitask_path)).load(resolve_tasks(["Ef", "Eg", "K_VRH"]))
    assert result.entries_read == len(tiny) == len(result.records)
    for name in ("Ef", "Eg", "K_VRH"):
        present = len(_with(tiny, name))
        assert result.label_counts()[name] == present
        assert result.missing[name] == len(tiny) - present


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", " INF "])
def test_non_finite_label_strings_are_masked_not_stored(tiny, value):
    """A label given as the string "inf" must be masked like float inf (the record invariant is: a label is present
    and finite, or absent); it must never reach the graphs as an infinite target."""
    tasks = resolve_tasks(["Ef", "Eg"])
    entry = _with(tiny, "Ef", "Eg")[0]
    result = _new_result()
    add_entry(result, entry["material_id"], lambda: _record(entry), {"Ef": value, "Eg": entry["Eg"]}, tasks)
    (record,) = result.records
    assert "Ef" not in record.labels
    assert result.missing["Ef"] == 1


def _tensor_entries(tiny: list[dict]) -> list[dict]:
    """Three real entries with dielectric tensors (and Eg) and three with elastic tensors (and K_VRH/G_VRH)."""
    return copy.deepcopy(_with(tiny, "eps_electronic")[:3] + _with(tiny, "elastic_tensor_voigt")[:3])


@pytest.mark.parametrize("bad", [
    ("eps_electronic", "eps_electronic", np.ones((2, 3))),
    ("eps_electronic", "eps_electronic", np.ones((3, 3, 3))),
    ("elastic_tensor", "elastic_tensor_voigt", np.ones((5, 5))),
    ("elastic_tensor", "elastic_tensor_voigt", np.ones(35)),
])
def test_tensor_of_wrong_shape_is_masked_and_counted(tmp_path, tiny, bad):
    task, field, value = bad
    entries = _tensor_entries(tiny)
    victim = next(e for e in entries if e[field] is not None)
    victim[field] = value.tolist()
    path = _write_entries(tmp_path / "tensors.json", entries)
    tasks = resolve_tasks(["Eg", "K_VRH", "eps_electronic", "elastic_tensor"])

    result = RecordsJSON(str(path)).load(tasks)
    assert dict(result.label_skips.counts) == {f"{task}: tensor of wrong shape": 1}
    (example,) = result.label_skips.examples[f"{task}: tensor of wrong shape"]
    assert example.startswith(f"tensors.json:{victim['material_id']}: {task}: tensor of shape {value.shape}")
    assert result.skips.total == 0 and _ids(result) == [e["material_id"] for e in entries]  # entry kept
    by_id = {r.id: r for r in result.records}
    assert task not in by_id[victim["material_id"]].labels
    assert result.label_counts()[task] == 2  # the other two tensors of that task were kept


def _perturbed(tensor: list, index: tuple, relative: float) -> list:
    arr = np.array(tensor, dtype=float)
    arr[index] += relative * np.abs(arr).max()
    return arr.tolist()


@pytest.mark.parametrize("task, field, index", [("eps_electronic", "eps_electronic", (0, 1)),
                                                ("eps_total", "eps_total", (2, 0)),
                                                ("elastic_tensor", "elastic_tensor_voigt", (0, 1)),
                                                ("elastic_tensor", "elastic_tensor_voigt", (3, 5))])
def test_asymmetric_tensor_is_masked_and_counted(tmp_path, tiny, task, field, index):
    entries = _tensor_entries(tiny)
    victim = next(e for e in entries if e[field] is not None)
    victim[field] = _perturbed(victim[field], index, 0.05)  # 5% > the 1% tolerance
    tasks = resolve_tasks(["Eg", "K_VRH", task])
    result = RecordsJSON(str(_write_entries(tmp_path / "tensors.json", entries))).load(tasks)
    assert dict(result.label_skips.counts) == {f"{task}: tensor not symmetric": 1}
    (example,) = result.label_skips.examples[f"{task}: tensor not symmetric"]
    assert example.startswith(f"tensors.json:{victim['material_id']}: {task}: tensor violates symmetry")
    assert result.skips.total == 0 and _ids(result) == [e["material_id"] for e in entries]
    assert task not in {r.id: r for r in result.records}[victim["material_id"]].labels
    assert result.label_counts()[task] == 2


@pytest.mark.parametrize("task, field", [("eps_electronic", "eps_electronic"), ("eps_total", "eps_total")])
def test_slightly_asymmetric_rank2_tensor_is_accepted_and_symmetrised_exactly(tmp_path, tiny, task, field):
    entries = _tensor_entries(tiny)
    victim = next(e for e in entries if e[field] is not None)
    raw = np.array(_perturbed(victim[field], (0, 1), 0.002))  # 0.2% < the 1% tolerance
    victim[field] = raw.tolist()
    result = RecordsJSON(str(_write_entries(tmp_path / "tensors.json", entries))).load(resolve_tasks([task]))
    assert result.label_skips.total == 0
    stored = {r.id: r for r in result.records}[victim["material_id"]].labels[task]
    assert stored.shape == (3, 3)
    assert np.array_equal(stored, stored.T)  # exactly, not approximately
    np.testing.assert_allclose(stored, (raw + raw.T) / 2, rtol=1e-6)  # precision: see the test below


def test_slightly_asymmetric_elastic_tensor_is_accepted_and_symmetrised_exactly(tmp_path, tiny):
    """The stored stiffness tensor must obey C_ijkl = C_jikl = C_ijlk = C_klij exactly (bit for bit), as a projection
    onto the symmetric subspace should; the least-squares projector leaves ~1e-14 GPa of asymmetry."""
    entries = _tensor_entries(tiny)
    victim = next(e for e in entries if e["elastic_tensor_voigt"] is not None)
    raw = np.array(_perturbed(victim["elastic_tensor_voigt"], (0, 1), 0.002))
    victim["elastic_tensor_voigt"] = raw.tolist()
    result = RecordsJSON(str(_write_entries(tmp_path / "tensors.json", entries))).load(
        resolve_tasks(["elastic_tensor"]))
    assert result.label_skips.total == 0
    stored = {r.id: r for r in result.records}[victim["material_id"]].labels["elastic_tensor"]
    assert stored.shape == (3, 3, 3, 3)
    np.testing.assert_allclose(stored[0, 0, 1, 1], (raw[0, 1] + raw[1, 0]) / 2, rtol=1e-6)
    for perm in ((1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)):
        assert np.array_equal(stored, stored.transpose(perm)), perm


@pytest.mark.parametrize("task, field", [("eps_electronic", "eps_electronic"), ("eps_total", "eps_total"),
                                         ("elastic_tensor", "elastic_tensor_voigt")])
def test_symmetric_tensor_label_is_stored_unchanged(tmp_path, tiny, task, field):
    """A label that already obeys its symmetry is a fixed point of the symmetrisation: it must be stored as given
    (to float64 precision), not rounded to float32 precision (~1e-7 relative) by the projector."""
    entries = copy.deepcopy(_with(tiny, field)[:3])
    for e in entries:  # make the real tensors exactly symmetric first
        arr = np.array(e[field])
        e[field] = ((arr + arr.T) / 2).tolist()
    result = RecordsJSON(str(_write_entries(tmp_path / "tensors.json", entries))).load(resolve_tasks([task]))
    spec = resolve_tasks([task])[task]
    for e, record in zip(entries, result.records):
        np.testing.assert_allclose(spec.to_user(record.labels[task]), np.array(e[field]), rtol=1e-12, atol=1e-12,
                                   err_msg=e["material_id"])


# -- configuration: missing files, unknown tasks -------------------------------------------------------------------
def test_cli_config_naming_a_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "no_such_recipe.yaml"
    assert main(["data", "summary", "-c", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert not (tmp_path / "cache").exists()


def test_cli_config_that_is_not_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("data:\n  tasks: [Ef\n  cutoff: 5\n")
    assert main(["data", "summary", "-c", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and "not valid YAML" in err


@pytest.mark.parametrize("source_class, file_name", [(RecordsJSON, "gone.json"),
                                                     (MatminerCSV, "dielectric_constant.csv.gz")])
def test_recipe_whose_source_file_is_missing(tmp_path, monkeypatch, capsys, source_class, file_name):
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "nowhere" / file_name
    dm = MultiTaskDataModule(sources=[source_class(str(missing))], tasks=["Ef", "Eg"])
    with pytest.raises(ConfigError) as info:
        dm.load_graphs()
    assert str(missing) in str(info.value) and "file not found" in str(info.value)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  sources:\n    - class_path: {source_class.__module__}.{source_class.__name__}\n"
                      f"      init_args:\n"
                      f"        path: {missing}\n  tasks: [Ef, Eg]\n")
    assert main(["data", "summary", "-c", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "file not found" in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unknown_task(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"unknown task 'bogus'; built-in tasks: Ef, Eg"):
        resolve_tasks(["bogus"])
    with pytest.raises(ConfigError, match="unknown task 'bogus'"):
        MultiTaskDataModule(tasks=["Ef", "bogus"], cache_dir=str(tmp_path / "cache"))

    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "cache"))
    assert main(["data", "summary", "--data.tasks=[Ef,bogus]"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'bogus'" in err
    assert not (tmp_path / "cache").exists()


def test_cli_summary_reports_every_counted_skip(tmp_path, monkeypatch, capsys, tiny):
    """End to end: one file with one entry of each bad kind; the summary names each reason with an example."""
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "cache"))
    entries = _with(tiny, "Ef")[:12]
    records = [_record(e, {"Ef": e["Ef"]}).to_dict() for e in entries]
    close = _with_close_atom(entries[0], "mp-close")
    close.labels = {"Ef": -1.0}
    unknown = _record(entries[1], {"Ef": -1.0}, id="mp-z0")
    unknown.numbers[0] = 0
    records += [close.to_dict(), _with_stray_atom(entries[2]).to_dict(),
                unknown.to_dict(),
                {**records[3], "id": "mp-nan", "labels": {"Ef": float("nan")}}]
    path = _write_records(tmp_path / "mixed.json", records)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  sources:\n    - class_path: equiprop.data.sources.records_json.RecordsJSON\n"
                      f"      init_args:\n        path: {path}\n  tasks: [Ef]\n")
    assert main(["data", "summary", "-c", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"{len(records)} entries read, {len(entries) + 1} records kept" in out
    assert "skipped entry: 1 x atoms closer than 0.5 Å (e.g. mixed.json:mp-close" in out
    assert "skipped entry: 1 x unknown element (e.g. mixed.json:mp-z0" in out
    assert "skipped entry: 1 x no label of the requested tasks (e.g. mixed.json:mp-nan)" in out
    assert "skipped graph: 1 x atom with no neighbour within the cutoff (e.g. mp-stray" in out
    assert f"graphs: {len(entries)} built" in out


# -- no unsafe deserialisation anywhere in the package -------------------------------------------------------------
def _code_tokens(path: Path) -> list[tokenize.TokenInfo]:
    """Tokens of a Python file, without comments and strings (so prose such as 'nothing is unpickled' is ignored)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE)
            and not (hasattr(tokenize, "FSTRING_MIDDLE") and t.type == tokenize.FSTRING_MIDDLE)]


def _unsafe_constructs(path: Path, name: str) -> list[str]:
    """Every use of eval/exec, pickle (or its kin), a torch.load not pinned to weights_only=True, or yaml.load."""
    text = path.read_text()
    tokens = _code_tokens(path)
    found = []
    for k, t in enumerate(tokens):
        if t.type != tokenize.NAME:
            continue
        before = tokens[k - 1].string if k else ""
        after = tokens[k + 1].string if k + 1 < len(tokens) else ""
        if t.string in ("eval", "exec") and before != "." and after == "(":  # the builtins; not model.eval()
            found.append(f"{name}:{t.start[0]}: {t.string}(")
        if "pickle" in t.string.lower() or t.string in ("dill", "marshal", "shelve", "unsafe_load"):
            found.append(f"{name}:{t.start[0]}: {t.string}")
        if t.string == "weights_only" and after == "=" and tokens[k + 2].string != "True":
            found.append(f"{name}:{t.start[0]}: weights_only={tokens[k + 2].string}")
    for m in re.finditer(r"\btorch\.load\(", text):  # every torch.load must refuse pickled objects explicitly
        call = text[m.start(): text.find(")", m.start()) + 1]
        if "weights_only=True" not in call:
            found.append(f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {call}")
    for m in re.finditer(r"\byaml\.load\(", text):
        found.append(f"{name}:{text.count(chr(10), 0, m.start()) + 1}: yaml.load( (use yaml.safe_load)")
    return found


def test_no_eval_pickle_or_unsafe_torch_load_in_the_package():
    package = Path(equiprop.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 10
    found = [f for path in files for f in _unsafe_constructs(path, str(path.relative_to(package.parent)))]
    assert found == []
    # and the plain grep of the brief: eval( (but not literal_eval( or .eval(), pickle, weights_only=False
    for path in files:
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert not re.search(r"(?<![\w.])eval\(|\bpickle\b|weights_only\s*=\s*False", code), path


def test_the_scan_fires_on_unsafe_code(tmp_path):
    """The scan above is only worth something if it fires on each construct it forbids, and only on those."""
    sample = tmp_path / "sample.py"
    sample.write_text('import pickle\nx = eval("1")\nimport torch\ntorch.load("p", weights_only=False)\n'
                      'torch.load("q")\nyaml.load(f)\nexec("y = 2")\nimport pandas as pd\npd.read_pickle("r")\n'
                      'y = ast.literal_eval("1")  # fine\nmodel.eval()  # fine\n'
                      '"""nothing is unpickled, eval("x") in prose is fine"""\n'
                      'torch.load("s", weights_only=True)  # fine\n')
    found = _unsafe_constructs(sample, "sample.py")
    assert sorted({int(f.split(":")[1]) for f in found}) == [1, 2, 4, 5, 6, 7, 9]
