"""Symmetry of the whole model (encoder + readouts) on real structures, for random weights."""

import pytest
import torch
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder, InvariantEncoder
from equiprop.testing import assert_model_symmetries
from equiprop.train.module import MultiTaskModel

pytestmark = pytest.mark.usefixtures("float64")  # equivariance to rounding: build and run in float64

TASKS = ["Ef", "Eg", "eps_electronic", "elastic_tensor", "piezo_tensor"]
# the same tasks with positive-definite outputs through the log-Euclidean map (matrix exponentials)
SPD_TASKS = ["Ef", "Eg", {"name": "eps_electronic", "parametrization": "spd_log"},
             {"name": "elastic_tensor", "parametrization": "spd_log"}, "piezo_tensor"]


def _model(encoder_cls=EquivariantEncoder, tasks=TASKS, environment_channels=0, **kwargs):
    torch.manual_seed(0)
    encoder = encoder_cls(cutoff=4.5, **kwargs) if encoder_cls is InvariantEncoder else encoder_cls(
        cutoff=4.5, max_ell=2, multiplicities=[8, 6, 4], num_layers=2, **kwargs)
    encoder.set_avg_num_neighbors(20.0)
    model = MultiTaskModel(encoder, tasks, environment_channels=environment_channels).double().eval()
    for p in model.parameters():  # non-trivial outputs everywhere (default init zeroes nothing, but be sure)
        p.data += 0.05 * torch.randn_like(p)
    return model


def _predict(model, records):
    batch = Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])
    with torch.no_grad():
        return model.predict_physical(batch)


@pytest.mark.parametrize("tasks,environment", [(TASKS, 0), (SPD_TASKS, 0), (SPD_TASKS, 3), (TASKS, 3)],
                         ids=["linear", "spd_log", "spd_log+environment", "linear+environment"])
def test_the_model_passes_the_symmetry_battery(structures, tasks, environment):
    """Rotations, inversion, translation, permutation and supercell (``equiprop.testing``)."""
    model = _model(tasks=tasks, environment_channels=environment)
    records = [from_pymatgen(s, str(i)) for i, s in enumerate(structures)]
    assert_model_symmetries(model, records, cutoff=4.5)
    assert float(_predict(model, records)["piezo_tensor"].abs().max()) > 0  # the odd output is not trivially zero


@pytest.mark.parametrize("tasks,environment", [(TASKS, 0), (SPD_TASKS, 0), (SPD_TASKS, 3)],
                         ids=["linear", "spd_log", "spd_log+environment"])
def test_cubic_crystal_gets_an_isotropic_dielectric_tensor(tiny_entries, tasks, environment):
    cubic = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    cubic = [s for s in cubic if SpacegroupAnalyzer(s, symprec=1e-3).get_crystal_system() == "cubic"][:3]
    assert cubic, "tiny set has cubic crystals"
    for seed in range(2):
        torch.manual_seed(seed)
        model = _model(tasks=tasks, environment_channels=environment)
        eps = _predict(model, [from_pymatgen(s, "c") for s in cubic])["eps_electronic"]
        for t in eps:
            iso = torch.eye(3) * torch.trace(t) / 3
            assert float((t - iso).abs().max()) <= 1e-6 * float(t.abs().max())
            assert float(torch.trace(t).abs()) > 0


def test_invariant_baseline_passes_the_symmetry_battery(structures):
    with pytest.warns(UserWarning, match="cannot be produced from node irreps 16x0e"):  # tensors: isotropic part only
        model = _model(InvariantEncoder, num_features=16, num_layers=2)
    assert_model_symmetries(model, [from_pymatgen(s, str(i)) for i, s in enumerate(structures)], cutoff=4.5)
