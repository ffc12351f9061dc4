"""Every ordinary crystal forms a graph: the radius is extended for structures whose atoms lack neighbours.

Elemental Rb (bcc, nearest neighbour 5.05 Å) has no pair within the quickstart's 4.5 Å cutoff.
"""

import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import DataError
from equiprop.data.graph import (EXTENDED_RADIUS_FACTOR, edge_vectors, extended_radius, neighbour_list,
                                 radial_lengths, record_to_graph)
from equiprop.data.record import from_pymatgen
from equiprop.data.sources import BundledDataset, RecordsJSON
from equiprop.data.splits import IdListSplit
from equiprop.data.tasks import resolve_tasks
from equiprop.nn import EquivariantEncoder, InvariantEncoder

RB_NEAREST = 5.05  # Å


def rubidium():
    a = 2 * RB_NEAREST / np.sqrt(3)  # bcc: nearest neighbours at a sqrt(3)/2
    return from_pymatgen(Structure(Lattice.cubic(a), ["Rb", "Rb"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "Rb-bcc")


def test_rubidium_has_no_neighbour_within_the_cutoff_but_gets_a_graph():
    record = rubidium()
    with pytest.raises(DataError, match="no neighbour within the 4.5 Å cutoff"):
        neighbour_list(record, 4.5)
    radius = extended_radius(record, 4.5, min_neighbors=1)
    assert radius == pytest.approx(EXTENDED_RADIUS_FACTOR * RB_NEAREST)
    graph = record_to_graph(record, {}, 4.5)
    assert set(graph[keys.EDGE_INDEX][0].tolist()) == {0, 1}  # every atom has neighbours
    lengths = edge_vectors(graph).norm(dim=-1)
    assert float(lengths.min()) == pytest.approx(RB_NEAREST, abs=1e-6)
    assert int((lengths < RB_NEAREST + 0.01).sum()) == 16  # 8 nearest neighbours per atom
    scale = float(graph[keys.EDGE_LENGTH_SCALE])
    assert scale == pytest.approx(4.5 / radius)
    scaled = radial_lengths(graph, edge_vectors(graph))
    assert float(scaled.max()) < 4.5  # inside the radial envelope, where it is not zero
    assert float(scaled.min()) == pytest.approx(4.5 / EXTENDED_RADIUS_FACTOR, abs=1e-6)


def test_ordinary_crystals_keep_their_graph_exactly(tiny_entries):
    for entry in tiny_entries[:8]:
        record = from_pymatgen(Structure.from_dict(entry["structure"]), entry["material_id"])
        graph = record_to_graph(record, {}, 4.5)
        edges, shifts = neighbour_list(record, 4.5)
        assert torch.equal(graph[keys.EDGE_INDEX], torch.as_tensor(edges))
        assert float(graph[keys.EDGE_LENGTH_SCALE]) == 1.0


def test_min_neighbors_zero_keeps_the_old_refusal_and_a_larger_minimum_extends():
    record = rubidium()
    with pytest.raises(DataError, match="no neighbour"):
        record_to_graph(record, {}, 4.5, min_neighbors=0)
    many = record_to_graph(record, {}, 5.5, min_neighbors=14)  # 8 at 5.05 Å + 6 at 5.83 Å
    assert torch.bincount(many[keys.EDGE_INDEX][0]).min() >= 14


def test_encoders_give_finite_rotation_invariant_scalars_on_the_extended_graph(float64):
    torch.manual_seed(0)
    record = rubidium()
    angle = 0.7  # a rotation about z
    rot = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                       dtype=torch.get_default_dtype())
    graph = Batch.from_data_list([record_to_graph(record, {}, 4.5)])
    rotated = graph.clone()
    rotated[keys.POSITIONS] = graph[keys.POSITIONS] @ rot.T
    rotated[keys.CELL] = graph[keys.CELL] @ rot.T
    for encoder in (EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1),
                    InvariantEncoder(cutoff=4.5, num_features=8, num_layers=1)):
        encoder.eval()  # batch norm over two identical atoms would hide what the edges bring
        if isinstance(encoder, EquivariantEncoder):
            encoder.set_avg_num_neighbors(7.0)
        out, out_rot = encoder(graph), encoder(rotated)
        assert torch.isfinite(out).all()
        scalars = encoder.irreps_out.count("0e")
        torch.testing.assert_close(out[:, :scalars], out_rot[:, :scalars], atol=1e-10, rtol=1e-10)
        # the extended shell is seen: unscaled, every edge would lie beyond the cutoff, where the envelope is zero
        unscaled = graph.clone()
        unscaled[keys.EDGE_LENGTH_SCALE] = torch.ones(1)
        assert torch.equal(encoder.radial(radial_lengths(unscaled, edge_vectors(unscaled))),
                           torch.zeros(graph.num_edges, 8))
        assert not torch.allclose(encoder(unscaled), out)


def test_rubidium_is_trained_on_and_predicted(tmp_path, quiet_trainer):

    from equiprop import Predictor
    from equiprop.train.module import MultiTaskModel

    tiny = BundledDataset("tiny").load(resolve_tasks(["Ef"]))
    rb = rubidium()
    rb.labels = {"Ef": 0.0}
    records = [r.to_dict() for r in tiny.records[:10]] + [rb.to_dict()]
    path = tmp_path / "with_rb.json"
    path.write_text(json.dumps({"meta": {"provenance": "test"}, "records": records}))
    ids = [r["id"] for r in records]
    dm = MultiTaskDataModule(sources=[RecordsJSON(str(path))], tasks=["Ef"], cutoff=4.5, batch_size=4,
                             split=IdListSplit(train=ids[:8] + ["Rb-bcc"], val=ids[8:10]),
                             cache_dir=str(tmp_path / "cache"))
    summary = dm.summary()
    assert dm.report["graph_skipped"] == {}  # nothing refused for want of neighbours
    assert dm.report["extended_radius"] == {"count": 1, "examples": ["Rb-bcc"]}
    assert "radius extended for 1 structures with an atom of fewer than 1 neighbours" in summary
    assert 37 in dm.train_statistics["species"]  # Rb, Z = 37
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1), ["Ef"])
    trainer = quiet_trainer(default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    checkpoint = tmp_path / "rb.ckpt"
    trainer.save_checkpoint(checkpoint)
    predictor = Predictor.from_checkpoint(checkpoint)
    (prediction,) = predictor.predict([rubidium().to_pymatgen()])
    assert np.isfinite(prediction["Ef"])
