"""The symmetry battery (``equiprop.testing``) over every registered encoder class, found in the registry at
collection: an encoder added to the package (one file: a subclass of ``Encoder`` registers itself, imported by
``equiprop.nn.registry``) is checked here with its default arguments, with no edit to this file. Backbones have the
same automatic battery in ``tests/nn/backbones/test_base.py``."""

import importlib.util

import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn.base import assert_encoder_contract
from equiprop.nn.registry import ENCODER_REGISTRY
from equiprop.testing import assert_encoder_symmetries

REGISTERED = sorted(ENCODER_REGISTRY)  # the package's own encoders (tests that define one run later, if at all)
NEEDS = {"equiprop.nn.foundation.FoundationEncoder": "sevenn"}  # the foundation extra
QUIET = {"equiprop.nn.foundation.FoundationEncoder": {"cache_features": False}}  # writes nothing outside the test


@pytest.fixture(scope="module")
def records(tiny_entries):
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    picked = [s for s in structures if len(s.composition) >= 2 and 3 <= len(s) <= 8][:2]
    assert len(picked) == 2
    return [from_pymatgen(s, str(i)) for i, s in enumerate(picked)]


def test_the_registry_holds_the_built_in_encoders():
    assert {"equiprop.nn.encoders.EquivariantEncoder", "equiprop.nn.encoders.InvariantEncoder",
            "equiprop.nn.foundation.FoundationEncoder"} <= set(REGISTERED)


@pytest.mark.parametrize("path", REGISTERED)
def test_every_registered_encoder_passes_the_symmetry_battery_with_its_defaults(path, records):
    if path in NEEDS and importlib.util.find_spec(NEEDS[path]) is None:
        pytest.skip(f"{path} needs {NEEDS[path]} (pip install -e '.[foundation]')")
    torch.manual_seed(0)
    # built as a user builds it (float32; a pretrained potential loads so), run in float64 so the checks hold to rounding
    encoder = ENCODER_REGISTRY[path](**QUIET.get(path, {})).double().eval()
    encoder.set_avg_num_neighbors(20.0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        batch = Batch.from_data_list([record_to_graph(r, {}, encoder.cutoff) for r in records])
        assert_encoder_contract(encoder, batch)  # declared irreps_out, one row per atom
        assert_encoder_symmetries(encoder, records, rtol=1e-6)  # rotation, inversion, translation, permutation, supercell
    finally:
        torch.set_default_dtype(previous)
