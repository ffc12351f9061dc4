"""The CHGNet 0.3.0 backbone (``equiprop.nn.backbones.chgnet``) on real crystals, with the real weights from the
installed ``chgnet`` wheel: registration and provenance, per-layer shapes, invariance (rotation, permutation, batching),
per-atom energies that sum to CHGNet's own energy, the structures it refuses, and the from-scratch control."""

import hashlib
from importlib.metadata import metadata

import numpy as np
import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from equiprop.data.errors import DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_pymatgen_dict

pytest.importorskip("chgnet", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn.backbones import backbone_class  # noqa: E402
from equiprop.nn.backbones.chgnet import CHGNet030  # noqa: E402

NAME = "chgnet-0.3.0"


@pytest.fixture(scope="module")
def records(tiny_entries):
    return [from_pymatgen_dict(e["structure"], e["material_id"]) for e in tiny_entries[:3]]


@pytest.fixture(scope="module")
def backbone():
    return CHGNet030()


@pytest.fixture(scope="module")
def backbone64():
    return CHGNet030().double()


def _batch(records, dtype=torch.float32):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # record_to_graph stores positions and cell in the default dtype
    try:
        return Batch.from_data_list([record_to_graph(r, {}, 5.0) for r in records])
    finally:
        torch.set_default_dtype(previous)


def _features(backbone, records, grad=False):
    data = _batch(records, backbone.dtype)
    with torch.set_grad_enabled(grad):
        return backbone.layer_features(data, None, backbone.species_index(data), [])


def test_registered_with_its_provenance(backbone):
    assert backbone_class(NAME) is CHGNet030
    info = CHGNet030.info
    assert all(getattr(info, f) for f in ("name", "title", "package", "weights", "licence", "citation",
                                          "pretrained_on", "note"))
    assert metadata("chgnet")["License"] in info.licence  # "Modified BSD"
    assert (CHGNet030.parity, CHGNet030.splittable, CHGNet030.uses_equiprop_graph) == (True, False, False)
    source = backbone.pretrained_source()
    path = CHGNet030.weights_path()
    assert path.name == "chgnet_0.3.0_e29f68s314m37.pth.tar" and source["file"] == str(path)
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (backbone.cutoff, backbone.num_layers) == (6.0, 4)
    assert backbone.layer_irreps == [o3.Irreps("64x0e")] * 4 and not backbone.has_tensors
    assert len(backbone.layer_modules()) == 4 and len(backbone.readout_modules()) == 2


def test_layer_shapes_dtype_and_gradients(backbone, records):
    features, state = _features(backbone, records, grad=True)
    num_nodes = sum(r.num_atoms for r in records)
    assert [tuple(f.shape) for f in features] == [(num_nodes, ir.dim) for ir in backbone.layer_irreps]
    assert all(f.dtype == backbone.dtype for f in features)
    assert backbone.atomic_energies(state).shape == (num_nodes,)
    features[-1].square().sum().backward()  # fine-tuning: every exposed layer's weights receive a gradient
    for module in backbone.layer_modules():
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())
    backbone.zero_grad(set_to_none=True)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")  # inside predict_structure
def test_atomic_energies_sum_to_chgnet_energy(backbone, records):
    _, state = _features(backbone, records)
    data = _batch(records)
    ours = torch.zeros(len(records), dtype=torch.float64).index_add_(
        0, data.batch, backbone.atomic_energies(state).double())
    theirs = backbone.model.predict_structure([r.to_pymatgen() for r in records], task="e")
    for record, energy, prediction in zip(records, ours, theirs):
        assert float(energy) == pytest.approx(float(prediction["e"]) * record.num_atoms, abs=1e-4)


def _transformed(record: CrystalRecord, matrix: np.ndarray, order=None) -> CrystalRecord:
    order = np.arange(record.num_atoms) if order is None else order
    return CrystalRecord(record.id, record.cell @ matrix.T, record.positions[order] @ matrix.T,
                         record.numbers[order])


@pytest.mark.integration  # float64 passes over rotated, permuted and single structures
def test_invariant_to_rotation_permutation_and_batching(backbone64, records):
    torch.manual_seed(5)
    base, _ = _features(backbone64, records)
    scale = max(float(f.abs().max()) for f in base)
    rotation = o3.rand_matrix(dtype=torch.float64).numpy()  # orthogonal to 1e-16
    rotated, _ = _features(backbone64, [_transformed(r, rotation) for r in records])
    for before, after in zip(base, rotated):
        assert torch.allclose(before, after, atol=1e-10 * scale), float((before - after).abs().max())
    record, order = records[0], np.random.default_rng(0).permutation(records[0].num_atoms)
    permuted, _ = _features(backbone64, [_transformed(record, np.eye(3), order)] + records[1:])
    n = record.num_atoms
    for before, after in zip(base, permuted):  # rows follow the atoms (our node order, not CHGNet's)
        assert torch.allclose(before[:n][order], after[:n], atol=1e-10 * scale)
        assert torch.allclose(before[n:], after[n:], atol=1e-10 * scale)
    alone, _ = _features(backbone64, [records[1]])
    start = records[0].num_atoms
    for batched, single in zip(base, alone):
        assert torch.allclose(batched[start:start + records[1].num_atoms], single, atol=1e-10 * scale)


def test_refuses_what_chgnet_cannot_run(backbone, records):
    americium = records[1]
    record = CrystalRecord("am-test", americium.cell, americium.positions,
                           np.where(np.arange(americium.num_atoms) == 0, 95, americium.numbers))
    with pytest.raises(DataError, match="Am.*not among the elements chgnet-0.3.0") as err:
        _features(backbone, [records[0], record])
    assert err.value.where == "am-test" and err.value.kind == "element unknown to the potential"
    # one atom in a 7 Å cube: equiprop extends its radius; CHGNet's 6 Å atom graph has no edge
    lonely = CrystalRecord("lonely", 7.0 * np.eye(3), np.zeros((1, 3)), np.array([14]))
    with pytest.raises(DataError, match="without a neighbour within chgnet-0.3.0's 6 Å") as err:
        _features(backbone, [records[0], lonely])
    assert err.value.where == "lonely"
    slab = CrystalRecord("slab", records[1].cell, records[1].positions, records[1].numbers, pbc=[True, True, False])
    with pytest.raises(DataError, match="not periodic"):
        _features(backbone, [slab])


def test_one_unbatched_graph(backbone, records):
    data = record_to_graph(records[1], {}, 5.0)  # no batch vector
    with torch.no_grad():
        alone, state = backbone.layer_features(data, None, backbone.species_index(data), [])
    batched, _ = _features(backbone, [records[1]])
    assert all(torch.equal(a, b) for a, b in zip(alone, batched)) and state["atomic_energies"].shape == (6,)


def test_from_scratch_is_the_same_architecture_with_other_weights(backbone, records):
    torch.manual_seed(0)
    scratch = CHGNet030(pretrained=False)
    assert [p.shape for p in scratch.parameters()] == [p.shape for p in backbone.parameters()]
    pretrained, _ = _features(backbone, records[:1])
    random, _ = _features(scratch, records[:1])
    assert all(a.shape == b.shape and not torch.allclose(a, b, atol=1e-3) for a, b in zip(pretrained, random))
