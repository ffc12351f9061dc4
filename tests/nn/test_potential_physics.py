"""The pretrained potential (``equiprop.nn.potential``) and its quantities against sevenn's own ASE calculator (energy; clamped- and relaxed-ion
stiffness by finite differences of its stress, the way matcalc does it), computed in inference mode as prediction
runs them, rotating with the crystal, and cached per structure."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn.feature_cache import structure_keys

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn.potential_physics import PotentialPhysics  # noqa: E402

pytestmark = pytest.mark.integration  # runs the pretrained potential

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _silicon():
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def _zno():  # wurtzite: internal coordinate u, so relaxed- and clamped-ion stiffness differ
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.2), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


@pytest.fixture(scope="module")
def physics(tmp_path_factory):
    return PotentialPhysics("7net-0", [], str(tmp_path_factory.mktemp("physics")))


@pytest.fixture(scope="module")
def calculator():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def _batch(structures):
    return Batch.from_data_list([record_to_graph(from_pymatgen(s, f"s{i}"), {}, 5.0)
                                 for i, s in enumerate(structures)])


def _ase_stiffness(atoms, calculator, relax: bool, step=0.005):
    from ase.optimize import BFGS

    stiffness = np.zeros((6, 6))
    for k, (i, j) in enumerate(VOIGT):
        stresses = []
        for sign in (1, -1):
            strain = np.zeros((3, 3))
            strain[i, j] += sign * step * (1 if i == j else 0.5)
            if i != j:
                strain[j, i] += sign * step * 0.5
            strained = atoms.copy()
            strained.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
            strained.calc = calculator
            if relax:
                BFGS(strained, logfile=None).run(fmax=1e-4, steps=500)
            stresses.append(strained.get_stress(voigt=True))
        stiffness[:, k] = (stresses[0] - stresses[1]) / (2 * step) * 160.21766208
    return 0.5 * (stiffness + stiffness.T)


def test_energy_per_atom_is_sevenn_calculator(physics, calculator):
    structures = [_silicon(), _zno()]
    energies = physics.quantity(_batch(structures), "energy")[:, 0]
    for structure, energy in zip(structures, energies):
        atoms = from_pymatgen(structure, "x").to_ase()
        atoms.calc = calculator
        assert float(energy) == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=2e-5)


def test_clamped_ion_stiffness_is_ase_finite_differences(physics, calculator):
    with torch.inference_mode():  # as in validation and prediction: stresses by autograd still work
        stiffness = physics.quantity(_batch([_silicon(), _zno()]), "stiffness").reshape(-1, 6, 6)
    for structure, computed in zip([_silicon(), _zno()], stiffness):
        reference = _ase_stiffness(from_pymatgen(structure, "x").to_ase(), calculator, relax=False)
        assert np.abs(computed.numpy() - reference).max() < 0.2  # GPa, of entries up to ~310
    si = stiffness[0].numpy()
    assert 120 < si[0, 0] < 200 and 50 < si[0, 1] < 110 and 60 < si[3, 3] < 100  # PBE: 153, 57, 75 (clamped ~100)


def test_relaxed_ion_stiffness_is_ase_with_relaxation(physics, calculator):
    zno = _zno()
    relaxed = physics.quantity(_batch([zno]), "stiffness_relaxed").reshape(6, 6).numpy()
    clamped = physics.quantity(_batch([zno]), "stiffness").reshape(6, 6).numpy()
    reference = _ase_stiffness(from_pymatgen(zno, "x").to_ase(), calculator, relax=True)
    # harmonic (linear-response) relaxation against relaxing each ±0.5 % strained cell: within 1.5 % of the largest entry
    assert np.abs(relaxed - reference).max() < 0.015 * np.abs(reference).max()
    assert relaxed[3, 3] < 0.8 * clamped[3, 3]  # internal relaxation softens shear: 31.9 vs 52.7 GPa


def test_stiffness_rotates_with_the_crystal(physics):
    from scipy.spatial.transform import Rotation

    from equiprop.data.tensor_ops import cartesian_to_voigt, voigt_to_cartesian

    zno = _zno()
    rotation = Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    rotated = Structure(Lattice(zno.lattice.matrix @ rotation.T), zno.species, zno.frac_coords)
    both = physics.quantity(_batch([zno, rotated]), "stiffness").reshape(-1, 6, 6).numpy()
    expected = cartesian_to_voigt(np.einsum("ia,jb,kc,ld,abcd->ijkl", *[rotation] * 4, voigt_to_cartesian(both[0])))
    assert np.abs(both[1] - expected).max() < 0.2  # GPa: float32 potential, ±0.5 % finite differences


def test_rows_and_cache(physics):
    batch = _batch([_silicon(), _zno()])
    only_second = physics.quantity(batch, "energy", torch.tensor([False, True]))
    assert only_second[0, 0] == 0.0 and only_second[1, 0] < -1.0
    cache = physics.quantity_caches["energy"]
    hits = cache.hits
    again = physics.quantity(batch, "energy")
    assert cache.hits >= hits + 1 and again[1, 0] == only_second[1, 0]


def test_ensemble_members_share_one_potential_per_process(tmp_path):
    """The members of an ensemble read the same frozen potential: one instance (and cache) per potential,
    descriptors and cache folder, so it is loaded once and each structure's quantities are computed once."""
    from equiprop.nn.potential_physics import shared_physics
    from equiprop.nn.priors import PhysicsPriors
    from equiprop.data.tasks import resolve_tasks

    tasks = resolve_tasks(["Ef"])
    members = [PhysicsPriors(tasks, {"Ef": "potential_energy"}, cache_dir=str(tmp_path)) for _ in range(3)]
    assert members[0].physics is members[1].physics is members[2].physics
    assert shared_physics("7net-0", [], str(tmp_path)) is members[0].physics
    assert shared_physics("7net-0", [], str(tmp_path / "other")) is not members[0].physics


def test_energy_prior_takes_the_frozen_encoders_own_pass(tmp_path, physics):
    """A frozen encoder on the prior's potential hands over the energies of the pass that computed its features
    (``equiprop predict`` then runs the potential once per structure, not twice): the same energies as the
    potential's own pass, and none when the encoder's weights are not the potential's."""
    from equiprop.data.tasks import resolve_tasks
    from equiprop.nn import FoundationEncoder
    from equiprop.nn.priors import PhysicsPriors

    encoder = FoundationEncoder(cache_dir=str(tmp_path / "features"))
    priors = PhysicsPriors(resolve_tasks(["Ef"]), {"Ef": "potential_energy"}, cache_dir=str(tmp_path / "physics"),
                           encoder=encoder)
    assert encoder.energy_backbone == 0
    passes = []
    run = priors.physics._compute_quantity
    priors.physics._compute_quantity = lambda name, graphs: passes.append(len(graphs)) or run(name, graphs)
    batch, rows = _batch([_silicon(), _zno()]), torch.ones(2, dtype=torch.bool)
    reference = physics.quantity(batch, "energy")[:, 0]  # the potential's own pass (module fixture, its own cache)
    with torch.inference_mode():  # as prediction runs
        encoder(batch)
        handed_over = priors.estimate("Ef", batch, rows, {}, None, encoder)  # references are zero: the energies
    assert passes == [] and handed_over.numpy() == pytest.approx(reference.numpy(), rel=1e-6, abs=1e-6)
    cached = priors.physics.quantity_caches["energy"].get_many(structure_keys(batch))
    assert all(row is not None for row in cached)  # the other members of an ensemble read them from the cache

    with torch.no_grad():  # the same frozen encoder, its weights no longer the potential's
        next(encoder.backbones[0].parameters()).mul_(1.01)
    other = _batch([_silicon().copy().perturb(0.02), _zno()])  # a new structure: the physics must run for it
    with torch.inference_mode():
        encoder(other)
        assert encoder.pretrained_energies(priors.physics.runner.backbone) == {}
        priors.estimate("Ef", other, torch.ones(2, dtype=torch.bool), {}, None, encoder)
    assert passes == [1]  # only the perturbed silicon: zinc oxide's energy was cached from the potential's pass
    finetuned = FoundationEncoder(transfer="finetune", trainable_layers=1, cache_features=False)
    finetuned.record_energies("7net-0")  # its weights move: never handed over
    assert finetuned.energy_backbone is None
