"""FoundationEncoder (SevenNet-0 from the installed sevenn wheel) on real crystals: the potential runs as sevenn runs
it, features are O(3)-equivariant and invariant to translation, permutation and supercell, and the cache keys
change with the model and the structure."""

import numpy as np
import pytest
import torch
from e3nn import o3
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_pymatgen
from equiprop.nn.feature_cache import structure_keys

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn import FoundationEncoder  # noqa: E402

pytestmark = pytest.mark.integration  # SevenNet featurisation (pretrained potential forward passes, phonons)


@pytest.fixture(scope="module")
def records(tiny_entries):
    return [from_pymatgen(Structure.from_dict(e["structure"]), f"tiny-{i}") for i, e in enumerate(tiny_entries[:5])]


def _batch(records, cutoff=5.0):
    return Batch.from_data_list([record_to_graph(r, {}, cutoff) for r in records])


@pytest.fixture(scope="module")
def encoder64():
    return FoundationEncoder(cache_features=False).double()  # built in float32 as sevenn expects, run in float64


def test_energy_head_reproduces_sevenn_calculator(records):
    from sevenn.calculator import SevenNetCalculator

    encoder = FoundationEncoder(cache_features=False)
    calculator = SevenNetCalculator("7net-0", device="cpu")
    ours = encoder.energy(_batch(records[:3]))
    for record, energy in zip(records[:3], ours):
        atoms = record.to_ase()
        atoms.calc = calculator
        assert float(energy) == pytest.approx(atoms.get_potential_energy(), abs=2e-4)


def _transformed(record: CrystalRecord, matrix: np.ndarray, shift=np.zeros(3)) -> CrystalRecord:
    return CrystalRecord(record.id, record.cell @ matrix.T, record.positions @ matrix.T + shift, record.numbers)


def _features(encoder, records):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            return encoder(_batch(records))
    finally:
        torch.set_default_dtype(previous)


def test_equivariant_under_rotation_and_inversion(encoder64, records):
    torch.manual_seed(3)
    rotation = o3.rand_matrix().double()
    for matrix in (rotation, -rotation):  # proper rotation, then rotation composed with inversion
        before = _features(encoder64, records)
        after = _features(encoder64, [_transformed(r, matrix.numpy()) for r in records])
        expected = before @ encoder64.irreps_out.D_from_matrix(matrix).T
        assert torch.allclose(after, expected, atol=1e-6 * float(before.abs().max())), float((after - expected).abs().max())
    odd = [sl for (mul, ir), sl in zip(encoder64.irreps_out, encoder64.irreps_out.slices()) if ir.p == -1]
    assert odd and any(float(_features(encoder64, records)[:, sl].abs().max()) > 1e-4 for sl in odd)


def test_invariant_to_translation_permutation_and_supercell(encoder64, records):
    record = records[1]
    base = _features(encoder64, [record])
    shifted = _features(encoder64, [_transformed(record, np.eye(3), shift=np.array([0.3, -1.1, 2.0]))])
    assert torch.allclose(base, shifted, atol=1e-8)
    order = np.random.default_rng(0).permutation(record.num_atoms)
    permuted = CrystalRecord(record.id, record.cell, record.positions[order], record.numbers[order])
    assert torch.allclose(_features(encoder64, [permuted]), base[order], atol=1e-8)
    cell = record.cell
    supercell = CrystalRecord(record.id, np.vstack([2 * cell[0], cell[1], cell[2]]),
                              np.vstack([record.positions, record.positions + cell[0]]),
                              np.concatenate([record.numbers, record.numbers]))
    assert torch.allclose(_features(encoder64, [supercell]), torch.cat([base, base]), atol=1e-6)


def test_centrosymmetric_crystal_has_no_odd_features_after_pooling(encoder64):
    from pymatgen.core import Lattice

    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    features = _features(encoder64, [from_pymatgen(rocksalt, "NaCl")])
    odd = torch.cat([features[:, sl] for (mul, ir), sl in zip(encoder64.irreps_out, encoder64.irreps_out.slices())
                     if ir.p == -1], dim=1)
    assert float(odd.sum(0).abs().max()) < 1e-8


def test_unknown_species_and_wrong_cutoff_are_clear_errors(records):
    encoder = FoundationEncoder(cache_features=False)
    og = CrystalRecord("og-crystal", np.eye(3) * 3.0, np.zeros((1, 3)), np.array([118]))
    with pytest.raises(DataError, match=r"og-crystal.*\['Og'\].*7net-0"):
        encoder(_batch([og], cutoff=5.0))
    with pytest.raises(ConfigError, match="cutoff must be the potential's own 5.0"):
        FoundationEncoder(cutoff=4.5)
    with pytest.raises(ConfigError, match="unknown backbone .7net-unknown.; available: 7net-0"):
        FoundationEncoder(model="7net-unknown")


def test_transfer_modes_freeze_what_they_say(records):
    frozen = FoundationEncoder(transfer="frozen")
    assert frozen.frozen() and frozen.cache_points == [frozen.num_layers]
    partial = FoundationEncoder(transfer="finetune", trainable_layers=2)
    trainable = {n.split("_", 1)[0] for n, p in partial.potential.named_parameters() if p.requires_grad}
    assert trainable == {"3", "4"} and partial.cache_points == [3]
    scratch = FoundationEncoder(transfer="from_scratch", cache_features=False)
    assert not torch.equal(scratch.potential.state_dict()["0_convolution.weight_nn.layer0.weight"],
                           frozen.potential.state_dict()["0_convolution.weight_nn.layer0.weight"])
    with pytest.raises(ConfigError, match="trainable_layers"):
        FoundationEncoder(transfer="frozen", trainable_layers=1)


def test_partial_finetune_from_cache_equals_full_computation(records, tmp_path):
    batch = _batch(records)
    # the cached prefix path runs both passes: compare with both passes (the inversion shortcut agrees only to the
    # precision of the input's symmetry, ~1e-5 on these rounded coordinates: tests/nn/test_inversion_shortcut.py)
    reference = FoundationEncoder(transfer="finetune", cache_features=False, inversion_shortcut=False)(batch)
    partial = FoundationEncoder(transfer="finetune", trainable_layers=1, cache_dir=str(tmp_path))
    first, second = partial(batch), partial(batch)  # the second call reads the frozen layers from the cache
    assert partial.feature_cache().hits == len(records) and torch.allclose(first, reference, atol=1e-5)
    assert torch.allclose(second, reference, atol=1e-5)
    second.sum().backward()  # the trainable last layer gets gradients through the cached inputs
    assert any(p.grad is not None for p in partial.layer_modules()[-1].parameters())


def test_feature_cache_misses_on_new_model_or_structure(records, tmp_path):
    batch = _batch(records[:2])
    seven = FoundationEncoder(cache_dir=str(tmp_path))
    seven(batch)
    assert seven.feature_cache().misses == 2
    again = FoundationEncoder(cache_dir=str(tmp_path))  # a new process: reads the shards from disk
    features = again(batch)
    assert again.feature_cache().hits == 2 and again.feature_cache().misses == 0
    assert torch.equal(features, seven(batch))
    other = FoundationEncoder(model="7net-l3i5", cache_dir=str(tmp_path))
    assert other.feature_cache().directory != seven.feature_cache().directory
    # descriptors are appended after the cached rows: the same features, the same cache
    with_physics = FoundationEncoder(descriptors=["bulk_modulus"], cache_dir=str(tmp_path))
    assert with_physics.feature_cache().directory == seven.feature_cache().directory
    assert FoundationEncoder(energy_feature=True, cache_dir=str(tmp_path)).feature_cache().directory != (
        seven.feature_cache().directory)
    moved = CrystalRecord(records[0].id, records[0].cell, records[0].positions + np.array([0.0, 0.0, 0.05]) *
                          (np.arange(records[0].num_atoms) == 0)[:, None], records[0].numbers)
    assert structure_keys(_batch([moved]))[0] != structure_keys(batch)[0]
    assert structure_keys(_batch([records[0]], cutoff=4.0))[0] != structure_keys(batch)[0]


def test_descriptors_are_physical(records, tmp_path):
    from pymatgen.core import Lattice

    from equiprop.nn.potential_physics import PotentialPhysics

    physics = PotentialPhysics("7net-0", ["bulk_modulus", "gamma_phonons"], str(tmp_path))
    silicon = Structure(Lattice.cubic(5.43), ["Si"] * 8, Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]).frac_coords)
    log_k, _, w_max, _, w_min = physics.compute(record_to_graph(from_pymatgen(silicon, "Si"), {}, 5.0))
    bulk = 10 ** log_k - 1  # GPa; DFT-PBE ~88, experiment 98
    assert 60 < bulk < 120
    assert abs(w_min) < 0.02  # acoustic modes at Γ are zero
    # the same finite differences done the plain way, with sevenn's own ASE calculator
    from sevenn.calculator import SevenNetCalculator

    atoms = from_pymatgen(silicon, "Si").to_ase()
    atoms.calc = SevenNetCalculator("7net-0", device="cpu")
    constants = np.zeros((24, 24))
    for k in range(24):
        forces = []
        for step in (0.01, -0.01):
            displaced = atoms.copy()
            displaced.calc = atoms.calc
            positions = displaced.get_positions()
            positions[k // 3, k % 3] += step
            displaced.set_positions(positions)
            forces.append(displaced.get_forces().ravel())
        constants[k] = -(forces[0] - forces[1]) / 0.02
    masses = np.repeat(atoms.get_masses(), 3)
    eigenvalues = np.linalg.eigvalsh(0.5 * (constants + constants.T) / np.sqrt(np.outer(masses, masses)))
    reference = np.sqrt(eigenvalues.max()) * 521.4709 / 1000
    assert w_max == pytest.approx(reference, rel=2e-3)
    assert 0.35 < w_max < 0.56  # Si's optical Γ phonon: 520 cm^-1 measured; MPtrj potentials are softer

