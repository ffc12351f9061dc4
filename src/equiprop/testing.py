"""The symmetry test battery, shipped so that every encoder and head (ours and a user's) is checked by the same code
(as nequip's ``assert_AtomicData_equivariant``):

    from equiprop.testing import assert_encoder_symmetries, assert_model_symmetries
    assert_encoder_symmetries(MyEncoder(cutoff=4.5), records)          # per-atom features, irreps_out declared
    assert_model_symmetries(MultiTaskModel(MyEncoder(cutoff=4.5), ["Ef", "eps_electronic"]), records)

Each check transforms real crystals and compares outputs with what the declared irreps say they must be:

- rotation (proper) and inversion (improper rotations Q): per-atom features by ``irreps_out.D_from_matrix(Q)``;
  model outputs: scalars unchanged, Cartesian tensors rotated by Q on every index (``data.symmetry.rotate_tensor``;
  the tensors we predict are polar, so an improper Q acts on them as on positions); an output whose kind has
  ``parity = -1`` (a pseudoscalar: a handedness) is also multiplied by det Q, so it flips under inversion only;
- translation of every atom: nothing changes;
- permutation of the atoms: per-atom rows (features, per-atom task outputs) permute, structure outputs are unchanged;
- supercell (2x1x1): every atom keeps its features and per-atom outputs; extensive (sum-pooled) outputs double,
  intensive ones stay.

Run them in float64 (``torch.set_default_dtype(torch.float64)`` before building the module) to check to rounding;
``rtol`` is relative to each output's largest magnitude.
"""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import per_atom_tasks
from equiprop.data.symmetry import rotate_tensor

CHECKS = ("rotation", "inversion", "translation", "permutation", "supercell")


def transformed(record: CrystalRecord, q: np.ndarray, shift=np.zeros(3)) -> CrystalRecord:
    """The crystal with cell and positions mapped by x -> q x + shift (q orthogonal)."""
    return CrystalRecord(record.id, record.cell @ q.T, record.positions @ q.T + shift, record.numbers)


def permuted(record: CrystalRecord, order: np.ndarray) -> CrystalRecord:
    return CrystalRecord(record.id, record.cell, record.positions[order], record.numbers[order])


def doubled(record: CrystalRecord) -> tuple[CrystalRecord, np.ndarray]:
    """The 2x1x1 supercell and, for each of its atoms, the index of the atom it repeats."""
    shift = record.cell[0]
    positions = np.concatenate([record.positions, record.positions + shift])
    cell = record.cell * np.array([[2.0], [1.0], [1.0]])
    return (CrystalRecord(record.id, cell, positions, np.concatenate([record.numbers, record.numbers])),
            np.concatenate([np.arange(record.num_atoms)] * 2))


def _batch(records: list[CrystalRecord], cutoff: float) -> Batch:
    return Batch.from_data_list([record_to_graph(r, {}, cutoff) for r in records])


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    scale = max(float(expected.abs().max()), 1e-8)
    error = float((actual - expected).abs().max())
    assert error <= rtol * scale, f"{what}: max deviation {error:.3g} = {error / scale:.3g} of the output's scale"


def _rotations(seed: int, inversion: bool) -> list[np.ndarray]:
    """Two random proper rotations (Haar, by QR of Gaussian matrices), times -1 for the inversion check."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(2):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        out.append((q if np.linalg.det(q) > 0 else -q) * (-1.0 if inversion else 1.0))
    return out


def assert_encoder_symmetries(encoder, records: list[CrystalRecord], cutoff: float | None = None,
                              rtol: float = 1e-6, checks=CHECKS, seed: int = 0) -> None:
    """Per-atom features (num_nodes, irreps_out.dim) transform as ``encoder.irreps_out`` declares."""
    cutoff = float(cutoff or encoder.cutoff)
    encoder = encoder.eval()

    def features(variant):
        with torch.no_grad():
            return encoder(_batch(variant, cutoff)).double()

    reference = features(records)
    irreps = o3.Irreps(encoder.irreps_out)
    for check in [c for c in checks if c in ("rotation", "inversion")]:
        for q in _rotations(seed, check == "inversion"):
            d = irreps.D_from_matrix(torch.as_tensor(q))
            _assert_close(features([transformed(r, q) for r in records]), reference @ d.T, rtol, f"encoder {check}")
    if "translation" in checks:
        moved = [transformed(r, np.eye(3), np.array([0.3, -1.7, 2.2])) for r in records]
        _assert_close(features(moved), reference, rtol, "encoder translation")
    offsets = np.cumsum([0] + [r.num_atoms for r in records])
    if "permutation" in checks:
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(r.num_atoms) for r in records]
        rows = np.concatenate([offset + order for offset, order in zip(offsets, orders)])
        _assert_close(features([permuted(r, o) for r, o in zip(records, orders)]), reference[rows], rtol,
                      "encoder permutation")
    if "supercell" in checks:
        pairs = [doubled(r) for r in records]
        rows = np.concatenate([offset + source for offset, (_, source) in zip(offsets, pairs)])
        _assert_close(features([p for p, _ in pairs]), reference[rows], rtol, "encoder supercell")


def assert_backbone_contract(backbone, records: list[CrystalRecord]) -> None:
    """A backbone (``equiprop.nn.backbones``) is what it says: registered under its name, its info filled in, the
    sha256 it records is its weights file's, and every layer gives one row per atom of its declared width."""
    import hashlib

    from equiprop.data.graph import edge_vectors
    from equiprop.nn.backbones import backbone_class

    info = backbone.info
    assert backbone_class(info.name) is type(backbone), info.name
    assert all([info.title, info.package, info.licence, info.citation, info.pretrained_on]), info
    source = backbone.pretrained_source()
    assert source["sha256"] == hashlib.sha256(backbone.weights_path().read_bytes()).hexdigest(), source
    assert len(backbone.layer_irreps) == backbone.num_layers == len(backbone.layer_modules())
    assert all(isinstance(ir, o3.Irreps) and ir[0].ir == o3.Irrep("0e") for ir in backbone.layer_irreps)
    batch = _batch(records, backbone.cutoff)
    with torch.no_grad():
        outputs, _ = backbone.layer_features(batch, edge_vectors(batch), backbone.species_index(batch), [])
    assert [tuple(o.shape) for o in outputs] == [(batch.num_nodes, ir.dim) for ir in backbone.layer_irreps]
    assert all(bool(torch.isfinite(o).all()) for o in outputs)


def assert_model_symmetries(model, records: list[CrystalRecord], cutoff: float | None = None,
                            rtol: float = 1e-5, checks=CHECKS, seed: int = 0) -> None:
    """Physical outputs of a ``MultiTaskModel`` (``predict_physical``): scalars invariant, Cartesian tensors rotate
    with the crystal, pseudo quantities (``TaskKind.parity`` -1) also change sign under improper rotations, nothing
    depends on translation or atom order, sum-pooled outputs double in a 2x1x1 supercell."""
    cutoff = float(cutoff or model.encoder.cutoff)
    model = model.eval()

    def outputs(variant):
        with torch.no_grad():
            return {k: v.double() for k, v in model.predict_physical(_batch(variant, cutoff)).items()}

    reference = outputs(records)
    tensors = {name for name, spec in model.tasks.items() if spec.rank}
    for check in [c for c in checks if c in ("rotation", "inversion")]:
        for q in _rotations(seed, check == "inversion"):
            out = outputs([transformed(r, q) for r in records])
            for name, value in reference.items():
                expected = torch.stack([torch.as_tensor(rotate_tensor(t.numpy(), q)) for t in value]) \
                    if name in tensors else value
                if model.tasks[name].kind_def.parity == -1:  # pseudo: one more factor det Q (-1 when improper)
                    expected = expected * float(np.linalg.det(q))
                _assert_close(out[name], expected, rtol, f"{name} {check}")
    per_atom = per_atom_tasks(model.tasks)
    if "translation" in checks:
        moved = [transformed(r, np.eye(3), np.array([0.3, -1.7, 2.2])) for r in records]
        for name, value in outputs(moved).items():
            _assert_close(value, reference[name], rtol, f"{name} translation")
    if "permutation" in checks:
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(r.num_atoms) for r in records]
        _check_atom_rows(outputs([permuted(r, o) for r, o in zip(records, orders)]), reference, records, orders,
                         per_atom, rtol, "permutation")
    if "supercell" in checks:
        pairs = [doubled(r) for r in records]
        expected = {name: value * (2.0 if name in model.tasks and model.tasks[name].pooling == "sum" else 1.0)
                    for name, value in reference.items()}
        _check_atom_rows(outputs([p for p, _ in pairs]), expected, records, [rows for _, rows in pairs], per_atom,
                         rtol, "supercell")


def _check_atom_rows(out: dict, reference: dict, records: list[CrystalRecord], sources: list[np.ndarray],
                     per_atom: set[str], rtol: float, check: str) -> None:
    """Outputs of transformed crystals whose atom ``k`` of structure ``n`` is atom ``sources[n][k]`` of the original:
    per-atom outputs are the reference rows of those atoms, structure outputs the reference itself."""
    offsets = np.cumsum([0] + [r.num_atoms for r in records])[:-1]
    rows = torch.as_tensor(np.concatenate([offset + source for offset, source in zip(offsets, sources)]))
    for name, value in out.items():
        _assert_close(value, reference[name][rows] if name in per_atom else reference[name], rtol, f"{name} {check}")
