"""Forces and stress by autograd of a predicted energy: conservation (finite differences), equivariance and supercell
consistency (the shipped battery), inference mode, and the checks on task definitions."""

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_pymatgen
from equiprop.nn import EquivariantEncoder
from equiprop.testing import assert_model_symmetries
from equiprop.train.module import MultiTaskModel

pytestmark = pytest.mark.usefixtures("float64")

ENERGY = {"name": "energy", "key": "energy", "units": "eV", "pooling": "sum"}
FORCES = {"name": "forces", "key": "forces", "kind": "forces", "level": "atom", "units": "eV/Å", "energy": "energy"}
STRESS = {"name": "stress", "key": "stress", "kind": "stress", "units": "GPa", "energy": "energy"}
CUTOFF = 4.5


def _model(tasks=(ENERGY, FORCES, STRESS)):
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=CUTOFF, max_ell=2, multiplicities=[8, 6, 4], num_layers=2)
    encoder.set_avg_num_neighbors(20.0)
    model = MultiTaskModel(encoder, list(tasks)).double().eval()
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    return model


@pytest.fixture(scope="module")
def records(structures):
    return [from_pymatgen(s, f"s{i}") for i, s in enumerate(structures[:3])]


def _energy(model, record: CrystalRecord) -> float:
    batch = Batch.from_data_list([record_to_graph(record, {}, CUTOFF)])
    with torch.no_grad():
        return float(model.predict_physical(batch, ["energy"])["energy"][0])


def test_forces_and_stress_are_the_derivatives_of_the_energy(records):
    model = _model()
    record = records[0]
    with torch.no_grad():  # as in prediction: the model records its own graph for the derivatives
        out = model.predict_physical(Batch.from_data_list([record_to_graph(record, {}, CUTOFF)]))
    assert out["forces"].shape == (record.num_atoms, 3) and out["stress"].shape == (1, 3, 3)
    assert not out["forces"].requires_grad  # predictions outside training carry no graph
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (record.num_atoms - 1, 1)]:
        plus, minus = record.positions.copy(), record.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(_energy(model, CrystalRecord("p", record.cell, plus, record.numbers))
                    - _energy(model, CrystalRecord("m", record.cell, minus, record.numbers))) / (2 * h)
        assert abs(float(out["forces"][atom, axis]) - numeric) <= 1e-6 * max(abs(numeric), 1e-2)
    volume = abs(np.linalg.det(record.cell))
    for i, j in [(0, 0), (0, 2), (1, 2), (2, 2)]:
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h / (2 if i != j else 1)  # a symmetric strain of one component pair
        energies = []
        for sign in (1, -1):
            deformation = np.eye(3) + sign * eps
            energies.append(_energy(model, CrystalRecord("e", record.cell @ deformation,
                                                         record.positions @ deformation, record.numbers)))
        derivative = (energies[0] - energies[1]) / (2 * h)  # dE/d(eps_ij) along the symmetric pair, eV
        numeric = derivative / volume * 160.21766208  # GPa
        assert abs(float(out["stress"][0, i, j]) - numeric) <= 1e-6 * float(out["stress"].abs().max())


def test_forces_are_equivariant_and_supercell_consistent(records):
    # forces rotate as polar vectors, stress as a rank-2 tensor; in a 2x1x1 supercell every atom keeps its force,
    # the (sum-pooled) energy doubles and the stress (per volume) stays
    assert_model_symmetries(_model(), records, rtol=1e-9)


def test_a_batch_gives_each_structure_its_own_derivatives(records):
    model = _model()
    together = model.predict_physical(Batch.from_data_list([record_to_graph(r, {}, CUTOFF) for r in records]))
    start = 0
    for r in records:
        alone = model.predict_physical(Batch.from_data_list([record_to_graph(r, {}, CUTOFF)]))
        torch.testing.assert_close(together["forces"][start:start + r.num_atoms], alone["forces"])
        start += r.num_atoms
    # a crystal's forces sum to zero (Newton's third law holds for a translation-invariant energy)
    assert float(together["forces"].detach().sum(0).abs().max()) < 1e-9


def test_inference_mode_and_training_give_the_same_forces(records):
    model = _model()
    batch = Batch.from_data_list([record_to_graph(records[1], {}, CUTOFF)])
    with torch.inference_mode():
        evaluated = model.predict_physical(batch)["forces"]
    trained = model(batch)["forces"]  # grad on: a graph the loss can differentiate again
    assert trained.requires_grad
    trained.pow(2).sum().backward()  # second derivative reaches the weights (training on force labels)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    torch.testing.assert_close(model.normalizer.to_physical("forces", trained.detach()), evaluated)


@pytest.mark.parametrize("tasks,message", [
    ((FORCES,), "does not predict"),
    (({**ENERGY, "units": "eV/atom"}, FORCES), "pooling sum"),
    ((ENERGY, {**FORCES, "units": "kcal/mol/Å"}), "units must be one of"),
    ((ENERGY, {**FORCES, "level": "structure"}), "per atom"),
    (({**ENERGY, "energy": "x"},), "not of kind 'scalar'"),
])
def test_bad_definitions_are_refused(tasks, message):
    with pytest.raises(ConfigError, match=message):
        _model(tasks)
