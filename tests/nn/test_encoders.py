"""EquivariantEncoder options (parity off, max_ell 0 and 3, hidden irreps as a string): each builds, declares the irreps
it outputs, and its per-atom features transform with those irreps' D(R) on a real tiny crystal."""

import pytest
import torch
from e3nn import o3
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder
from equiprop.testing import assert_encoder_symmetries

pytestmark = pytest.mark.usefixtures("float64")  # equivariance to rounding: build and run in float64

CUTOFF = 4.5


@pytest.fixture(scope="module")
def records(tiny_entries):
    """Three real crystals with at least two species (a one-species cell would hide species mixing bugs)."""
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    picked = [s for s in structures if len(s.composition) >= 2 and len(s) >= 3][:3]
    assert len(picked) == 3
    return [from_pymatgen(s, str(i)) for i, s in enumerate(picked)]


def _features(encoder, records) -> torch.Tensor:
    batch = Batch.from_data_list([record_to_graph(r, {}, CUTOFF) for r in records])
    with torch.no_grad():
        return encoder(batch)


def _encoder(**kwargs) -> EquivariantEncoder:
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=CUTOFF, num_layers=2, radial_hidden=16, **kwargs)
    encoder.set_avg_num_neighbors(20.0)
    return encoder.double().eval()


CONFIGS = {
    "max_ell=0": (dict(max_ell=0, multiplicities=[8]), "8x0e", True),
    "max_ell=3": (dict(max_ell=3, multiplicities=[8, 6, 4, 2]), "8x0e+6x1o+4x2e+2x3o", True),
    "parity=False": (dict(max_ell=2, multiplicities=[8, 6, 4], parity=False), "8x0e+6x1e+4x2e", False),
    "parity=False,max_ell=3": (dict(max_ell=3, multiplicities=[6, 4, 4, 2], parity=False), "6x0e+4x1e+4x2e+2x3e",
                               False),
    "hidden_irreps string": (dict(hidden_irreps="16x0e+8x1o+4x2e"), "16x0e+8x1o+4x2e", True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_options_build_declare_their_irreps_and_are_equivariant(records, name):
    kwargs, declared, parity = CONFIGS[name]
    encoder = _encoder(**kwargs)
    assert encoder.irreps_out == o3.Irreps(declared)
    assert encoder.edge_sh.irreps_out.lmax == kwargs.get("max_ell", 2)
    if not parity:
        assert all(ir.p == 1 for _, ir in encoder.edge_sh.irreps_out)  # SO(3) labels only

    reference = _features(encoder, records)
    assert reference.shape == (sum(r.num_atoms for r in records), encoder.irreps_out.dim)
    for (mul, ir), sl in zip(encoder.irreps_out, encoder.irreps_out.slices()):
        assert float(reference[:, sl].abs().max()) > 1e-6, f"{mul}x{ir} is identically zero"

    # rotations for all; rotation + inversion only where the irreps carry parity (parity=False is SO(3) only)
    assert_encoder_symmetries(encoder, records, rtol=1e-8, checks=("rotation", "inversion") if parity else ("rotation",))

