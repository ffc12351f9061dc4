"""Every registered backbone (``equiprop.nn.backbones``) passes the same battery, run automatically over the registry:
its contract (name, licence, citation, the sha256 of its weights file, one row per atom per layer of the declared
width), the encoder's symmetries with it (rotation, inversion, translation, permutation, supercell), its own energy
and several backbones at once give the concatenation of each one's features. Each backbone's own checks (its energy
against its package's calculator) are in its own file beside this one."""

import pytest
import torch
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.testing import assert_backbone_contract, assert_encoder_symmetries

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn import FoundationEncoder  # noqa: E402
from equiprop.nn.backbones import BACKBONES, build_backbone  # noqa: E402

pytestmark = pytest.mark.integration  # pretrained potentials' forward passes


def test_the_registry_holds_the_backbones_the_wheels_ship():
    assert {"7net-0", "7net-l3i5", "7net-mf-0", "chgnet-0.3.0"} <= set(BACKBONES)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_contract(name, records):
    assert_backbone_contract(build_backbone(name), records)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_encoder_is_o3_equivariant_on_every_backbone(name, records):
    # built in float32 as the potentials load, run in float64 so that the checks hold to rounding
    encoder = FoundationEncoder(model=name, cache_features=False, inversion_shortcut=False).double()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert_encoder_symmetries(encoder, records[:2], rtol=1e-6)
    finally:
        torch.set_default_dtype(previous)


def test_several_backbones_give_each_ones_features_side_by_side(records, tmp_path):
    names = ["7net-0", "7net-mf-0"]
    both = FoundationEncoder(model=names, cache_dir=str(tmp_path))
    alone = [FoundationEncoder(model=n, cache_features=False) for n in names]
    batch = Batch.from_data_list([record_to_graph(r, {}, 5.0) for r in records])
    with torch.no_grad():
        features, parts = both(batch), [a(batch) for a in alone]
    assert both.irreps_out.dim == sum(a.irreps_out.dim for a in alone) == features.shape[1]
    scalars = [a.irreps_out[0].mul for a in alone]
    tensors = [(a.irreps_out.dim - s) // 2 for a, s in zip(alone, scalars)]  # even then odd, equal widths
    expected = torch.cat([p[:, :s] for p, s in zip(parts, scalars)]
                         + [p[:, s:s + t] for p, s, t in zip(parts, scalars, tensors)]
                         + [p[:, s + t:] for p, s, t in zip(parts, scalars, tensors)], dim=1)
    assert torch.allclose(features, expected, atol=1e-5)
    caches = [both.feature_cache(i) for i in range(2)]
    assert caches[0].directory != caches[1].directory and all(c.misses == len(records) for c in caches)
    source = both.pretrained_source()
    assert source["model"] == "7net-0+7net-mf-0" and [p["model"] for p in source["parts"]] == names
