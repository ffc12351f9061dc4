"""``bundled:NAME`` inputs (``equiprop.data.inputs.bundled``) and labels read only on request, for bundled data and
extxyz alike; names that match nothing are refused by name."""

import ase.io
import numpy as np
import pytest

from equiprop.data.errors import ConfigError
from equiprop.data.inputs import read_structures
from equiprop.data.tasks import resolve_tasks


def test_labels_are_read_only_on_request_and_bundled_items_are_the_same_either_way(tmp_path, nacl_frames):
    path = tmp_path / "labelled.extxyz"
    items = nacl_frames(2)
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
