"""Streaming inputs: item counts known before parsing, ranges read exactly, the plain extxyz fast path equal to ase."""

import ase.io
import numpy as np
from ase import Atoms

from equiprop.data.record import from_ase
from equiprop.data.inputs import InputFailure, InputPlan, expand
from equiprop.data.inputs.extxyz import ExtxyzFrames


def frames(count: int):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        atoms = Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 4 + rng.normal(0, .1,
                                                                                                          (3, 3)),
                      pbc=True)
        atoms.info["id"] = f"nacl-{i}"
        out.append(atoms)
    return out


def test_plain_extxyz_fast_path_equals_ase_and_other_layouts_fall_back(tmp_path):
    plain, rich = tmp_path / "plain.extxyz", tmp_path / "rich.extxyz"
    items = frames(7)
    with plain.open("w") as f:  # the plain layout, as the screening benchmark writes it
        for a in items:
            lattice = " ".join(f"{x:.10f}" for x in a.cell.array.reshape(-1))
            f.write(f'{len(a)}\nLattice="{lattice}" Properties=species:S:1:pos:R:3 id={a.info["id"]} pbc="T T T"\n')
            f.writelines(f"{s} {x:.10f} {y:.10f} {z:.10f}\n" for s, (x, y, z) in zip(a.get_chemical_symbols(),
                                                                                       a.positions))
    for a in items:
        a.info["energy_per_atom"] = 1.5  # extra keys and arrays: ase's reader
        a.set_initial_magnetic_moments([1.0, 0.0])
    ase.io.write(rich, items, format="extxyz")
    for path in (plain, rich):
        segment = ExtxyzFrames(path)
        assert len(segment) == 7
        got = list(segment.read(2, 5))
        expected = ase.io.read(path, index="2:5")
        assert [r.id for r in got] == ["nacl-2", "nacl-3", "nacl-4"]
        for record, atoms in zip(got, expected):
            np.testing.assert_allclose(record.cell, atoms.cell.array, atol=1e-9)
            np.testing.assert_allclose(record.positions, atoms.positions, atol=1e-9)
            assert record.numbers.tolist() == atoms.numbers.tolist() and record.pbc.all()


def test_truncated_extxyz_is_a_failed_last_item_and_plan_ranges_cross_segments(tmp_path):
    path = tmp_path / "cut.extxyz"
    ase.io.write(path, frames(3), format="extxyz")
    path.write_text(path.read_text() + "5\ncomment\nNa 0 0 0\n")  # a fourth frame cut short
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("x")
    plan = InputPlan(expand([str(path), str(tmp_path / "folder")]))
    assert len(plan) == 5
    items = dict(plan.read([2, 3, 4]))
    assert items[2].id == "nacl-2"
    assert isinstance(items[3], InputFailure) and "ends inside a frame" in items[3].error
    assert isinstance(items[4], InputFailure) and items[4].reason == "unknown file type"


def test_ase_database_rows_read_raw_equal_ase_own_reading(tmp_path):
    import ase.db
    from ase.build import bulk

    from equiprop.data.inputs.ase_db import AseDatabase, raw_layout

    path = tmp_path / "rows.db"
    with ase.db.connect(path) as db:
        db.write(bulk("NaCl", "rocksalt", a=5.64), material_id="nacl")
        db.write(bulk("Si", "diamond", a=5.43).repeat((2, 1, 1)))  # no material_id: "<stem>:<row id>"
        slab = bulk("Cu", "fcc", a=3.6).repeat((1, 1, 2))
        slab.pbc = [True, True, False]  # not periodic: a failed row downstream, read alike here
        db.write(slab, material_id="cu-slab", energy_label=1.5)
        db.write(bulk("MgO", "rocksalt", a=4.2), material_id="mgo")
    assert raw_layout(path)
    source = AseDatabase(path)
    raw = list(source.read(1, 4))  # an offset and a limit, as chunks ask
    expected = [from_ase(row.toatoms(), str(row.key_value_pairs.get("material_id", f"rows:{row.id}")), str(path))
                for row in ase.db.connect(path).select(sort="id", offset=1, limit=3)]
    assert [r.id for r in raw] == ["rows:2", "cu-slab", "mgo"] == [r.id for r in expected]
    for a, b in zip(raw, expected):
        assert a.source == b.source
        for field in ("cell", "positions", "numbers", "pbc"):
            assert getattr(a, field).dtype == getattr(b, field).dtype, field
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_labels_are_read_only_on_request_and_bundled_items_are_the_same_either_way(tmp_path):
    import pytest

    from equiprop.data.errors import ConfigError
    from equiprop.data.inputs import read_structures
    from equiprop.data.tasks import resolve_tasks

    path = tmp_path / "labelled.extxyz"
    items = frames(2)
    for a in items:
        a.info["Ef"], a.info["note"] = -1.25, "not a task"
    ase.io.write(path, items, format="extxyz")
    assert all(r.labels == {} for r in read_structures([str(path)]))
    labelled = list(read_structures([str(path)], tasks=resolve_tasks(["Ef"])))
    assert [r.labels for r in labelled] == [{"Ef": -1.25}] * 2  # only the tasks asked for

    plain, with_labels = list(read_structures(["bundled:tiny"])), read_structures(["bundled:tiny"],
                                                                                  tasks=resolve_tasks(["Ef"]))
    assert [r.id for r in plain] == [r.id for r in with_labels] and len(plain) == 58
    assert all(r.labels == {} for r in plain) and sum("Ef" in r.labels for r in with_labels) == 41
    for a, b in zip(plain, with_labels):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    assert with_labels.notices == []  # nothing the source skipped
    with pytest.raises(ConfigError, match="matches no file"):
        read_structures([str(tmp_path / "*.cif")])
    with pytest.raises(ConfigError, match="unknown bundled dataset"):
        read_structures(["bundled:nope"])
