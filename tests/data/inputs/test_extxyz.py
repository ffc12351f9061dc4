"""Extended-XYZ inputs (``equiprop.data.inputs.extxyz``): frame counts known before parsing, ranges read exactly, the
plain-layout fast path equal to ase's reader, a frame cut short a failed last item."""

import ase.io
import numpy as np

from equiprop.data.inputs import InputFailure, InputPlan, expand
from equiprop.data.inputs.extxyz import ExtxyzFrames


def test_plain_extxyz_fast_path_equals_ase_and_other_layouts_fall_back(tmp_path, nacl_frames):
    plain, rich = tmp_path / "plain.extxyz", tmp_path / "rich.extxyz"
    items = nacl_frames(7)
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


def test_truncated_extxyz_is_a_failed_last_item_and_plan_ranges_cross_segments(tmp_path, nacl_frames):
    path = tmp_path / "cut.extxyz"
    ase.io.write(path, nacl_frames(3), format="extxyz")
    path.write_text(path.read_text() + "5\ncomment\nNa 0 0 0\n")  # a fourth frame cut short
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("x")
    plan = InputPlan(expand([str(path), str(tmp_path / "folder")]))
    assert len(plan) == 5
    items = dict(plan.read([2, 3, 4]))
    assert items[2].id == "nacl-2"
    assert isinstance(items[3], InputFailure) and "ends inside a frame" in items[3].error
    assert isinstance(items[4], InputFailure) and items[4].reason == "unknown file type"
