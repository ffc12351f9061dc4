"""The SevenNet backbones (``equiprop.nn.backbones.sevennet`` and its three checkpoints
``equiprop.nn.backbones.sevennet_0``, ``equiprop.nn.backbones.sevennet_l3i5``, ``equiprop.nn.backbones.sevennet_mf0``): each one's energy through equiprop's graphs equals sevenn's own calculator on the
same crystals, which checks that the weights, the cutoff, the species map and (for MF-0) the fidelity are the ones
sevenn uses."""

import pytest
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn import FoundationEncoder  # noqa: E402

pytestmark = pytest.mark.integration  # pretrained potentials' forward passes
SEVENNET = {"7net-0": None, "7net-l3i5": None, "7net-mf-0": "PBE"}  # name: the fidelity sevenn's calculator runs


@pytest.mark.parametrize("name", sorted(SEVENNET))
def test_a_sevennet_backbones_energy_is_sevenns_own(name, records):
    from sevenn.calculator import SevenNetCalculator

    encoder = FoundationEncoder(model=name, cache_features=False)
    calculator = SevenNetCalculator(name, device="cpu", **({"modal": SEVENNET[name]} if SEVENNET[name] else {}))
    ours = encoder.energy(Batch.from_data_list([record_to_graph(r, {}, 5.0) for r in records]))
    for record, energy in zip(records, ours):
        atoms = record.to_ase()
        atoms.calc = calculator
        assert float(energy) == pytest.approx(atoms.get_potential_energy(), abs=2e-4)
