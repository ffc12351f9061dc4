"""Single-structure files and folders (``equiprop.data.inputs.files``) and the one failure shape of a refused input
(``equiprop.data.inputs.failure``): a folder read one level deep in name order, dotfiles left out, everything else an
item (a record, or a failure naming the file and why), and a file list's signature that changes with its files."""

from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from equiprop.data.inputs import InputFailure, read_structures
from equiprop.data.inputs.files import FileList


def test_a_folder_is_one_level_of_items_in_name_order_with_each_refusal_named(tmp_path, tiny_entries):
    folder = tmp_path / "in"
    (folder / "deeper").mkdir(parents=True)
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries[:2]]
    structures[0].to(filename=str(folder / "b.cif"))
    structures[1].to(filename=str(folder / "a.vasp"), fmt="poscar")
    (folder / "deeper" / "c.cif").write_text((folder / "b.cif").read_text())  # not searched: named instead
    (folder / "notes.txt").write_text("not a structure")
    (folder / "broken.cif").write_text("data_x\n_cell_length_a 4\n")
    (folder / ".hidden.cif").write_text("never read")

    items = list(read_structures([str(folder), str(tmp_path / "missing.cif")]))
    files = [item.file if isinstance(item, InputFailure) else item.source for item in items]
    assert files == [str(folder / n) for n in ("a.vasp", "b.cif", "broken.cif", "deeper", "notes.txt")] \
        + [str(tmp_path / "missing.cif")]
    poscar, cif = items[0], items[1]
    for record, structure in zip((cif, poscar), structures):
        assert not isinstance(record, InputFailure)
        assert sorted(record.numbers.tolist()) == sorted(structure.atomic_numbers)
        np.testing.assert_allclose(np.abs(np.linalg.det(record.cell)), structure.volume, rtol=1e-6)
    reasons = {Path(item.file).name: item.reason for item in items[2:]}
    assert reasons["deeper"] == "folder not searched" and reasons["notes.txt"] == "unknown file type"
    assert reasons["missing.cif"] == "missing file" and reasons["broken.cif"]  # a parse error, named by its file
    for failure in items[2:]:
        row = failure.row()
        assert list(row) == ["id", "file", "formula", "status", "reason", "error"] and row["status"] == "failed"
        assert failure.file in failure.error  # the message names the file


def test_a_file_lists_signature_changes_when_a_file_is_replaced(tmp_path, tiny_entries):
    path = tmp_path / "x.cif"
    Structure.from_dict(tiny_entries[0]["structure"]).to(filename=str(path))
    before = FileList([path]).signature()
    assert FileList([path]).signature() == before  # stable while nothing changes
    path.write_text(path.read_text() + "\n")
    after = FileList([path]).signature()
    assert after["files_sha256"] != before["files_sha256"] and after["count"] == before["count"] == 1
