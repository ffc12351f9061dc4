"""Physics priors: the moduli of a stiffness, the eigenvalue floor, the valence table and plasma energy, task checks,
and (with the potential) a prior added so that an untrained head predicts the estimate itself, equivariantly."""

import numpy as np
import pytest
import torch

from equiprop.data.errors import ConfigError
from equiprop.data.tasks import resolve_task, resolve_tasks
from equiprop.data.tensor_ops import hill_moduli
from equiprop.nn.priors import PLASMA_EV, PhysicsPriors, check_prior, floored_stiffness, valence_electrons


def _isotropic(bulk, shear):
    lam = bulk - 2 * shear / 3
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[[0, 1, 2], [0, 1, 2]] += 2 * shear
    c[[3, 4, 5], [3, 4, 5]] = shear
    return torch.as_tensor(c).unsqueeze(0)


def test_hill_moduli_of_an_isotropic_stiffness():
    bulk, shear = hill_moduli(_isotropic(160.0, 80.0))
    assert float(bulk) == pytest.approx(160.0) and float(shear) == pytest.approx(80.0)


def test_hill_moduli_of_silicon_match_pymatgen():
    from pymatgen.analysis.elasticity import ElasticTensor

    voigt = np.array([[166, 64, 64, 0, 0, 0], [64, 166, 64, 0, 0, 0], [64, 64, 166, 0, 0, 0],
                      [0, 0, 0, 80, 0, 0], [0, 0, 0, 0, 80, 0], [0, 0, 0, 0, 0, 80]], dtype=float)
    bulk, shear = hill_moduli(torch.as_tensor(voigt).unsqueeze(0))
    reference = ElasticTensor.from_voigt(voigt)
    assert float(bulk) == pytest.approx(reference.k_vrh) and float(shear) == pytest.approx(reference.g_vrh)


def test_floor_keeps_a_stable_stiffness_and_lifts_an_unstable_one():
    stable = _isotropic(160.0, 80.0)
    assert torch.allclose(floored_stiffness(stable), stable)
    unstable = _isotropic(160.0, -5.0)  # negative shear: not positive definite
    floored = floored_stiffness(unstable)
    from equiprop.data.tensor_ops import to_mandel
    from equiprop.data.tensor_ops import voigt_to_cartesian

    assert np.linalg.eigvalsh(to_mandel(voigt_to_cartesian(floored[0].numpy()))).min() == pytest.approx(1.0)


def test_valence_electrons_and_plasma_energy():
    valence = valence_electrons()
    assert [int(valence[z]) for z in (1, 8, 11, 14, 26, 29, 31, 57)] == [1, 6, 1, 4, 8, 11, 3, 3]
    # silicon, 8 atoms x 4 electrons in 5.43^3 Å^3: hbar w_p = 16.6 eV (the textbook value)
    assert PLASMA_EV * np.sqrt(32 / 5.43**3) == pytest.approx(16.6, abs=0.1)


def test_priors_reject_tasks_they_cannot_serve():
    check_prior(resolve_task("Ef"), "potential_energy")
    check_prior(resolve_task("log_kvrh"), "potential_bulk_modulus")
    check_prior(resolve_task("refractive_index"), "penn")
    for task, prior in (("Eg", "potential_energy"), ("K_VRH", "potential_stiffness"), ("Ef", "penn"),
                        ("Ef", "potential_magic")):
        with pytest.raises(ConfigError, match="model.priors"):
            check_prior(resolve_task(task), prior)
    with pytest.raises(ConfigError, match="does not have"):
        PhysicsPriors(resolve_tasks(["Ef"]), {"Eg": "penn"})


def test_penn_prior_is_isotropic_and_follows_the_formula(tiny_entries):
    from pymatgen.core import Structure
    from torch_geometric.data import Batch

    from equiprop.data.graph import record_to_graph
    from equiprop.data.record import from_pymatgen
    from equiprop.train.normalizer import TaskNormalizer

    tasks = resolve_tasks([{"name": "eps_electronic", "parametrization": "spd_log"}, "Eg"])
    priors = PhysicsPriors(tasks, {"eps_electronic": "penn"})
    structure = Structure.from_dict(tiny_entries[0]["structure"])
    graph = record_to_graph(from_pymatgen(structure, "t0"), {}, 5.0)
    batch = Batch.from_data_list([graph] * 3)  # one crystal, three predicted gaps
    gap = torch.tensor([0.0, 1.0, 3.0])  # normalised = physical with identity statistics
    with torch.no_grad():
        prior = priors.estimate("eps_electronic", batch, torch.ones(3, dtype=torch.bool), {"Eg": gap},
                                TaskNormalizer(tasks))
    assert torch.allclose(prior, prior[:, :1, :1] * torch.eye(3, dtype=prior.dtype))
    electrons = sum(int(valence_electrons()[site.specie.Z]) for site in structure)
    plasma = PLASMA_EV * np.sqrt(electrons / structure.volume)
    expected = 2 * np.log(plasma / (gap.double().numpy() + 4.0))  # log(eps - 1), E_0 starts at 4 eV
    assert prior[:, 0, 0].numpy() == pytest.approx(expected, rel=1e-6)
