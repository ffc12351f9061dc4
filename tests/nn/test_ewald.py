"""The long-range block: the Ewald sum against pymatgen's ``EwaldSummation`` on real crystals (energy, forces by
autograd, site potentials; a charged cell included), the Madelung energy of rocksalt, the cell derivative against
finite differences, batching and translation; the block's features under the shipped symmetry battery, the supercell
consistency of its physics, neutral charges that train, float32 under autocast, and one-line errors."""

import warnings

import numpy as np
import pytest
import torch
from e3nn import o3
from pymatgen.analysis.bond_valence import BVAnalyzer
from pymatgen.analysis.ewald import EwaldSummation
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.errors import DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_pymatgen
from equiprop.data.sources.records_json import bundled_path, read_json
from equiprop.nn import EquivariantEncoder
from equiprop.nn.base import Encoder
from equiprop.nn.ewald import COULOMB, LongRangeBlock, ewald_sum
from equiprop.testing import assert_encoder_symmetries, assert_model_symmetries, doubled, transformed

MADELUNG_ROCKSALT = 1.747565
RTOL = 1e-8  # against pymatgen; the goal is 1e-6, measured ~1e-15 (float64)


def rocksalt(a: float = 5.64, rattle: float = 0.0) -> CrystalRecord:
    """Conventional NaCl cell (Na at even, Cl at odd corners of the half-cell grid), atoms moved by ``rattle`` Å."""
    grid = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    moved = np.random.default_rng(0).normal(scale=rattle, size=grid.shape)
    return CrystalRecord("NaCl", np.eye(3) * a, grid * a / 2 + moved, np.where(grid.sum(1) % 2, 17, 11))


@pytest.fixture(scope="module")
def hafnia() -> CrystalRecord:
    """Monoclinic HfO2 (mp-352, P2_1/c, 12 atoms) from the bundled dataset."""
    entry = next(r for r in read_json(bundled_path("default"))["records"] if r["id"] == "mp-352")
    return CrystalRecord.from_dict(entry)


def formal_charges(record: CrystalRecord) -> np.ndarray:
    """Bond-valence oxidation states, as ``data/sources/ewald.py`` assigns them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = BVAnalyzer().get_oxi_state_decorated_structure(record.to_pymatgen())
    return np.array([site.specie.oxi_state for site in structure], dtype=np.float64)


def pymatgen_reference(record: CrystalRecord, charges: np.ndarray):
    """pymatgen's total energy (eV), forces (eV/Å) and site potentials (V: 2 sum_j M_ij / q_i from its energy matrix,
    plus the neutralising background's potential, which its matrix leaves out)."""
    structure = record.to_pymatgen()
    structure.add_oxidation_state_by_site([float(q) for q in charges])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # charged cells
        ewald = EwaldSummation(structure, compute_forces=True)
        background = -COULOMB * np.pi * charges.sum() / (structure.volume * ewald.eta)
        return ewald.total_energy, ewald.forces, 2.0 * ewald.total_energy_matrix.sum(1) / charges + background


def ours(record: CrystalRecord, charges: np.ndarray):
    positions = torch.tensor(record.positions, dtype=torch.float64, requires_grad=True)
    energy, potentials = ewald_sum(torch.tensor(charges), positions, torch.tensor(record.cell)[None],
                                   torch.zeros(len(charges), dtype=torch.long), 1)
    forces = -torch.autograd.grad(energy.sum(), positions)[0]
    return float(energy.detach()), forces.numpy(), potentials.detach().numpy()


def _relative(actual, expected) -> float:
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("crystal", ["NaCl", "HfO2", "charged"])
def test_energy_forces_and_potentials_match_pymatgen(crystal, hafnia):
    if crystal == "NaCl":  # rattled, so that the forces are not zero by symmetry
        record = rocksalt(rattle=0.05)
        charges = np.where(record.numbers == 11, 1.0, -1.0)
    elif crystal == "HfO2":
        record, charges = hafnia, formal_charges(hafnia)
    else:  # arbitrary charges, net +8.0 e: the neutralising-background term
        record, charges = hafnia, np.random.default_rng(1).uniform(-2.0, 3.0, hafnia.num_atoms)
        assert abs(charges.sum()) > 1.0
    assert charges.sum() == pytest.approx(0.0, abs=1e-12) or crystal == "charged"
    energy, forces, potentials = ours(record, charges)
    expected_energy, expected_forces, expected_potentials = pymatgen_reference(record, charges)
    assert abs(energy - expected_energy) <= RTOL * abs(expected_energy), (energy, expected_energy)
    assert _relative(forces, expected_forces) <= RTOL and np.abs(expected_forces).max() > 0.1
    assert _relative(potentials, expected_potentials) <= RTOL


def test_rocksalt_energy_is_the_madelung_energy():
    record = rocksalt()
    charges = np.where(record.numbers == 11, 1.0, -1.0)
    energy, forces, potentials = ours(record, charges)
    potential = MADELUNG_ROCKSALT * COULOMB / (5.64 / 2)  # 8.92 V at each ion, negative at the cation
    np.testing.assert_allclose(potentials, -charges * potential, rtol=1e-6)
    assert energy == pytest.approx(-8 * potential / 2, rel=1e-6)
    assert np.abs(forces).max() < 1e-9


def test_the_cell_derivative_matches_finite_differences(hafnia):
    """dE/d(deformation) at fixed fractional coordinates (the virial, i.e. the stress times the volume)."""
    charges = torch.tensor(formal_charges(hafnia))
    cell, positions = torch.tensor(hafnia.cell), torch.tensor(hafnia.positions)

    def energy(deformation):
        strain = torch.eye(3, dtype=torch.float64) + deformation
        batch = torch.zeros(len(charges), dtype=torch.long)
        return ewald_sum(charges, positions @ strain, (cell @ strain)[None], batch, 1)[0].sum()

    deformation = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    gradient = torch.autograd.grad(energy(deformation), deformation)[0]
    step = 1e-5
    for k, l in ((0, 0), (1, 1), (0, 2), (2, 1)):
        nudge = torch.zeros(3, 3, dtype=torch.float64)
        nudge[k, l] = step
        central = float(energy(nudge) - energy(-nudge)) / (2 * step)
        assert float(gradient[k, l]) == pytest.approx(central, rel=1e-6, abs=1e-6 * float(gradient.abs().max()))


def test_a_batch_gives_what_each_graph_gives_alone_and_translation_changes_nothing(hafnia):
    records = [rocksalt(rattle=0.05), hafnia]
    charges = [np.where(records[0].numbers == 11, 1.0, -1.0), np.random.default_rng(2).uniform(-2, 3, 12)]
    alone = [ours(r, q) for r, q in zip(records, charges)]
    batch = torch.cat([torch.full((r.num_atoms,), g) for g, r in enumerate(records)])
    energy, potentials = ewald_sum(torch.tensor(np.concatenate(charges)),
                                   torch.tensor(np.concatenate([r.positions for r in records])),
                                   torch.tensor(np.stack([r.cell for r in records])), batch, 2)
    for g, (e, _, phi) in enumerate(alone):
        assert float(energy[g]) == pytest.approx(e, rel=1e-12)
        np.testing.assert_allclose(potentials[batch == g].numpy(), phi, rtol=1e-12, atol=1e-12 * np.abs(phi).max())
    # a rigid translation, and one atom carried to another periodic image (the charged cell: the background too)
    moved = hafnia.positions + np.array([0.3, -1.7, 2.2])
    moved[3] += hafnia.cell[0] - 2 * hafnia.cell[2]
    energy, _, phi = ours(CrystalRecord("moved", hafnia.cell, moved, hafnia.numbers), charges[1])
    assert energy == pytest.approx(alone[1][0], rel=1e-12)
    np.testing.assert_allclose(phi, alone[1][2], rtol=1e-10)


# -- the block in a model ------------------------------------------------------------------------------------------
def electrostatic_encoder() -> Encoder:
    """An equivariant encoder with the long-range block on top, as an ``Encoder`` for the symmetry battery (defined
    here, not at module level, so that the registry battery never sees it)."""

    class ElectrostaticEncoder(Encoder):
        def __init__(self, cutoff: float = 4.5):
            super().__init__()
            self.cutoff = float(cutoff)
            self.local = EquivariantEncoder(cutoff=cutoff, max_ell=1, multiplicities=[8, 4], num_layers=2)
            self.local.set_avg_num_neighbors(20.0)
            self.long_range = LongRangeBlock(self.local.irreps_out)
            self.irreps_out = self.long_range.irreps_out

        def forward(self, data):  # -> (num_nodes, irreps_out.dim)
            return self.long_range(self.local(data), data)

    torch.manual_seed(0)
    encoder = ElectrostaticEncoder()
    for p in encoder.parameters():  # non-trivial weights everywhere: charges far from zero
        p.data += 0.1 * torch.randn_like(p)
    return encoder


@pytest.fixture(scope="module")
def records(tiny_entries):
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    picked = [s for s in structures if len(s.composition) >= 2 and 3 <= len(s) <= 8][:2]
    return [from_pymatgen(s, str(i)) for i, s in enumerate(picked)]


def _batch(records):
    return Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])


@pytest.mark.usefixtures("float64")
def test_the_block_passes_the_symmetry_battery(records):
    encoder = electrostatic_encoder().eval()
    assert str(encoder.irreps_out).endswith("+3x0e+1x1o")
    with torch.no_grad():
        appended = encoder(_batch(records))[:, -6:]  # q, phi, energy per atom, polarisation
    assert appended[:, :2].abs().min() > 1e-3 and appended[:, 3:].norm(dim=1).min() > 1e-3  # nothing checked is 0
    assert_encoder_symmetries(encoder, records, rtol=1e-6)


@pytest.mark.usefixtures("float64")
def test_supercell_doubles_the_energy_and_keeps_potentials_and_polarisation(records):
    encoder = electrostatic_encoder().eval()

    def terms(crystals):
        data = _batch(crystals)
        with torch.no_grad():
            return encoder.long_range.terms(encoder.local(data), data)

    before = terms(records)
    pairs = [doubled(r) for r in records]
    after = terms([p for p, _ in pairs])
    rows = torch.as_tensor(np.concatenate([offset + source for offset, (_, source) in
                                           zip(np.cumsum([0] + [r.num_atoms for r in records]), pairs)]))
    torch.testing.assert_close(after["energy"], 2 * before["energy"], rtol=1e-9, atol=0)
    for name in ("charges", "potentials"):
        torch.testing.assert_close(after[name], before[name][rows], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(after["polarisation"], before["polarisation"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(after["dipole"], 2 * before["dipole"], rtol=1e-9, atol=1e-12)
    # the origin: the same crystal translated keeps its dipole, as its cell is neutral
    moved = terms([transformed(r, np.eye(3), np.array([4.0, -3.0, 7.5])) for r in records])
    torch.testing.assert_close(moved["dipole"], before["dipole"], rtol=1e-9, atol=1e-12)


@pytest.mark.usefixtures("float64")
def test_charges_are_neutral_and_the_charge_mlp_learns_from_the_energy(records):
    encoder = electrostatic_encoder()
    data = _batch(records)
    terms = encoder.long_range.terms(encoder.local(data), data)
    per_cell = torch.zeros(data.num_graphs, dtype=torch.float64).index_add_(0, data[keys.BATCH], terms["charges"])
    assert per_cell.abs().max() < 1e-12 and terms["charges"].abs().max() > 0.1
    (terms["energy"].sum() + terms["polarisation"].norm()).backward()
    for name, p in encoder.long_range.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert all(p.grad is not None for p in encoder.local.parameters() if p.requires_grad)  # through the charges


def test_under_autocast_the_sum_runs_in_float32(records):
    data = _batch(records)  # float32 graphs
    charges = torch.randn(data.num_nodes, dtype=torch.bfloat16)
    charges = charges - charges.float().mean().to(torch.bfloat16)
    reference, _ = ewald_sum(charges.float(), data[keys.POSITIONS], data[keys.CELL], data[keys.BATCH],
                             data.num_graphs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        energy, potentials = ewald_sum(charges, data[keys.POSITIONS], data[keys.CELL], data[keys.BATCH],
                                       data.num_graphs)
        features = LongRangeBlock("4x0e+2x1o")(torch.randn(data.num_nodes, 10), data)
    assert energy.dtype == potentials.dtype == features.dtype == torch.float32
    torch.testing.assert_close(energy, reference, rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_one_line_error(records):
    data = _batch(records)
    with pytest.raises(DataError, match="cell volume 0 Å\\^3"):
        ewald_sum(torch.zeros(data.num_nodes), data[keys.POSITIONS], torch.zeros(2, 3, 3), data[keys.BATCH], 2)
    data[keys.PBC][1, 2] = False
    with pytest.raises(DataError, match="^1: the long-range block .* periodic in 3D"):
        LongRangeBlock("4x0e")(torch.zeros(data.num_nodes, 4), data)


@pytest.mark.usefixtures("float64")
def test_a_model_with_the_long_range_block_passes_the_battery(records):
    # wired into MultiTaskModel (model.long_range): every readout reads q, phi, the energy per atom and the
    # polarisation; the piezo head's 1o output now also reads the polarisation
    from equiprop.train.module import MultiTaskModel

    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 4], num_layers=2)
    encoder.set_avg_num_neighbors(20.0)
    model = MultiTaskModel(encoder, ["Ef", "eps_electronic", "piezo_tensor"], long_range=True).double()
    for p in model.parameters():
        p.data += 0.1 * torch.randn_like(p)
    one_o = o3.Irrep("1o")
    assert model.heads["piezo_tensor"].irreps_in.count(one_o) == encoder.irreps_out.count(one_o) + 1
    assert_model_symmetries(model, records, rtol=1e-6)
