"""ASE database inputs (``equiprop.data.inputs.ase_db``): rows read from SQLite directly, equal to ase's own reading."""

import numpy as np

from equiprop.data.record import from_ase


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
