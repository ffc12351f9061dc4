"""The shipped symmetry battery (``equiprop.testing``) on every registered encoder (the heads: tests/nn/
test_equivariance.py), and a check that it fails a module that breaks a symmetry."""

import pytest
import torch
from e3nn import o3
from pymatgen.core import Structure

from equiprop.data import keys
from equiprop.data.graph import edge_vectors
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder, InvariantEncoder
from equiprop.nn.base import Encoder
from equiprop.testing import assert_encoder_symmetries, assert_model_symmetries


@pytest.fixture(scope="module")
def records(tiny_entries):
    return [from_pymatgen(Structure.from_dict(e["structure"]), str(i)) for i, e in enumerate(tiny_entries[:4])]


def _equivariant():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 6, 4], num_layers=2)
    encoder.set_avg_num_neighbors(20.0)
    for p in encoder.parameters():  # non-trivial weights everywhere
        p.data += 0.05 * torch.randn_like(p)
    return encoder


@pytest.mark.usefixtures("float64")
def test_built_in_encoders_pass(records):
    torch.manual_seed(0)
    assert_encoder_symmetries(_equivariant(), records)
    assert_encoder_symmetries(InvariantEncoder(cutoff=4.5, num_features=16, num_layers=2), records)


def test_foundation_encoder_passes(records):
    pytest.importorskip("sevenn")
    from equiprop.nn import FoundationEncoder

    encoder = FoundationEncoder("7net-0", "frozen", parity=True, cache_features=False)
    assert_encoder_symmetries(encoder, records, rtol=1e-4)  # the potential runs in float32


class ShiftedScalars(Encoder):
    """Breaks translation invariance: its scalar is an atom's absolute x coordinate."""

    def __init__(self, cutoff: float = 4.5):
        super().__init__()
        self.cutoff, self.irreps_out = float(cutoff), o3.Irreps("1x0e")

    def forward(self, data):
        return data[keys.POSITIONS][:, :1].double()


class MislabelledVectors(Encoder):
    """Declares 1o but returns each atom's summed edge vectors with y and z swapped: not a vector."""

    def __init__(self, cutoff: float = 4.5):
        super().__init__()
        self.cutoff, self.irreps_out = float(cutoff), o3.Irreps("1x1o")

    def forward(self, data):
        vectors = edge_vectors(data).double()
        summed = torch.zeros(data.num_nodes, 3, dtype=vectors.dtype).index_add_(0, data[keys.EDGE_INDEX][0], vectors)
        return summed[:, [0, 2, 1]]


@pytest.mark.usefixtures("float64")
def test_the_battery_fails_modules_that_break_a_symmetry(records):
    with pytest.raises(AssertionError, match="encoder translation"):
        assert_encoder_symmetries(ShiftedScalars(), records, checks=("translation",))
    with pytest.raises(AssertionError, match="encoder rotation"):
        assert_encoder_symmetries(MislabelledVectors(), records, checks=("rotation",))
    assert_encoder_symmetries(MislabelledVectors(), records, checks=("translation", "permutation", "supercell"))
