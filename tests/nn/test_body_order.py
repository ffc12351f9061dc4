"""Higher body order (``correlation``): exact O(3) equivariance on real crystals, the two-body layout unchanged at
correlation 1, and the product basis really being a product (polynomial in the aggregated messages)."""

import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder, build_encoder, describe
from equiprop.nn.blocks import ProductBasisBlock, _channelwise_product
from equiprop.testing import assert_encoder_symmetries

pytestmark = pytest.mark.usefixtures("float64")  # equivariance to rounding: build and run in float64

# state_dict of EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1) before correlation
# existed: checkpoints of the two-body model must keep loading.
TWO_BODY_LAYOUT = {
    "avg_num_neighbors": (), "species.embedding.weight": (119, 8), "radial.basis.weights": (8,),
    "layers.0.linear_in.weight": (64,), "layers.0.linear_in.bias": (0,), "layers.0.linear_in.output_mask": (8,),
    "layers.0.tp.coupling_0": (4, 8), "layers.0.radial.layer0.weight": (8, 64),
    "layers.0.radial.layer1.weight": (64, 64), "layers.0.radial.layer2.weight": (64, 16),
    "layers.0.gate.mul.weight": (0,), "layers.0.gate.mul.output_mask": (12,), "layers.0.linear_out.weight": (128,),
    "layers.0.linear_out.bias": (0,), "layers.0.linear_out.output_mask": (24,),
    "layers.0.self_interaction.weight": (64,), "layers.0.self_interaction.bias": (0,),
    "layers.0.self_interaction.output_mask": (20,)}


def _encoder(**kwargs):
    torch.manual_seed(0)
    encoder = EquivariantEncoder(**{"cutoff": 4.5, "max_ell": 2, "multiplicities": [8, 6, 4], "num_layers": 2,
                                    "product_channels": 4, **kwargs}).double().eval()
    encoder.set_avg_num_neighbors(20.0)
    for p in encoder.parameters():  # species-dependent weights start at zero: make them matter too
        p.data += 0.05 * torch.randn_like(p)
    return encoder


def _features(encoder, records):
    batch = Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])
    with torch.no_grad():
        return encoder(batch)


@pytest.mark.parametrize("correlation", [2, 3])
@pytest.mark.parametrize("parity", [True, False])
def test_product_basis_is_equivariant_on_real_crystals(structures, correlation, parity):  # noqa: F811
    encoder = _encoder(correlation=correlation, parity=parity)
    irreps = encoder.irreps_out
    assert {ir.l for _, ir in irreps} == {0, 1, 2}
    records = [from_pymatgen(s, str(i)) for i, s in enumerate(structures[:3])]
    reference = _features(encoder, records)
    for l in (0, 1, 2):  # invariants and l > 0 features are all non-trivial
        part = torch.cat([reference[:, s] for s, (_, ir) in zip(irreps.slices(), irreps) if ir.l == l], dim=1)
        assert float(part.abs().max()) > 1e-3, l
    # SO(3) only when parity is off
    assert_encoder_symmetries(encoder, records, rtol=1e-9, checks=("rotation", "inversion") if parity else ("rotation",))


def test_correlation_one_keeps_the_two_body_layout_and_old_checkpoints_load():
    kwargs = dict(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1)
    encoder = EquivariantEncoder(**kwargs)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == TWO_BODY_LAYOUT
    assert encoder.config["correlation"] == 1 and encoder.config["radial_layers"] == 2
    # metadata written before the new options existed rebuilds the same model
    rebuilt = build_encoder({"class_path": describe(encoder)["class_path"], "init_args": kwargs})
    rebuilt.load_state_dict(encoder.state_dict())
    higher = EquivariantEncoder(**kwargs, correlation=2).state_dict()
    assert set(TWO_BODY_LAYOUT) < set(higher) and all(k.split(".")[2] == "product" for k in set(higher) -
                                                       set(TWO_BODY_LAYOUT))


def test_radial_layers_sets_the_depth_of_the_radial_mlp():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1, radial_layers=3,
                                 radial_hidden=16)
    assert [k for k in encoder.state_dict() if ".radial.layer" in k] == [
        f"layers.0.radial.layer{i}.weight" for i in range(4)]


@pytest.mark.parametrize("option, value", [("correlation", 0), ("correlation", 4), ("radial_layers", 0),
                                           ("product_channels", 0)])
def test_options_are_validated(option, value):
    with pytest.raises(ValueError, match=option):
        EquivariantEncoder(cutoff=4.5, **{option: value})


def test_the_basis_is_a_polynomial_of_degree_correlation_in_the_messages():
    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("6x0e+4x1o+3x2e+2x1o"), o3.Irreps("5x0e+3x1o+2x2e")
    a = irreps_in.randn(7, -1)
    species = torch.tensor([1, 8, 8, 14, 26, 26, 79])
    pair = ProductBasisBlock(irreps_in, irreps_out, correlation=2, channels=4)
    assert torch.allclose(pair(2 * a, species), 4 * pair(a, species))  # B2 = A x A: twice A, four times B2
    triple = ProductBasisBlock(irreps_in, irreps_out, correlation=3, channels=4)
    with torch.no_grad():
        f1, f2, f3 = (triple(t * a, species) for t in (1.0, 2.0, 3.0))
    cubic = (f2 - 4 * f1) / 4  # f(t) = t^2 B2 + t^3 B3
    quadratic = f1 - cubic
    assert float(cubic.abs().max()) > 1e-3 and float(quadratic.abs().max()) > 1e-3
    assert torch.allclose(f3, 9 * quadratic + 27 * cubic)


def test_nondecreasing_factor_orders_span_what_all_orders_span():
    # a_i a_j a_k = a_j a_i a_k: the block forms only i <= j <= k; with every order formed, no new direction appears
    torch.manual_seed(0)
    irreps_a = o3.Irreps("1x0e+1x1o+1x2e")
    wanted, intermediate = [ir for _, ir in irreps_a], [o3.Irrep(l, p) for l in range(3) for p in (1, -1)]
    a = irreps_a.randn(40, -1)
    block = ProductBasisBlock(irreps_a, irreps_a, correlation=3, channels=1)
    contraction = block.contractions[1]
    ours = torch.stack([contraction(block.powers[0](a, a), a, w.expand(len(a), -1))  # one path at a time
                        for w in torch.eye(contraction.weight_numel)])  # (paths, samples, dim)
    pairs, _ = _channelwise_product(irreps_a, irreps_a, intermediate, [0, 0, 0], weighted=False)
    triples, _ = _channelwise_product(pairs.irreps_out, irreps_a, wanted, [0] * len(pairs.irreps_out), weighted=False)
    every = triples(pairs(a, a), a)
    assert contraction.weight_numel < len(triples.irreps_out)
    for ir, ours_l in zip(wanted, contraction.irreps_out.slices()):
        all_l = [every[:, s] for s, (_, ir_all) in zip(triples.irreps_out.slices(), triples.irreps_out) if ir_all == ir]
        rank = torch.linalg.matrix_rank(torch.stack([f.flatten() for f in all_l]))
        assert torch.linalg.matrix_rank(ours[:, :, ours_l].flatten(1)) == rank > 0, ir


def test_weights_depend_on_the_centre_species():
    torch.manual_seed(0)
    block = ProductBasisBlock("4x0e+4x1o", "4x0e+4x1o", correlation=2, channels=4).double()
    a = block.irreps_in.randn(1, -1).expand(2, -1)
    species = torch.tensor([8, 26])
    out = block(a, species)
    assert torch.allclose(out[0], out[1])  # species weights start at zero: one shared basis
    torch.nn.init.normal_(block.species_weights.weight)
    out = block(a, species)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.integration  # optimiser steps on a correlation-3 encoder (~8 s)
def test_the_product_adds_to_the_two_body_model_and_trains(structures):  # noqa: F811
    records = [from_pymatgen(s, str(i)) for i, s in enumerate(structures[:2])]
    two_body, higher = _encoder(correlation=1), _encoder(correlation=3)
    higher.load_state_dict(two_body.state_dict(), strict=False)  # shared two-body weights
    assert not torch.allclose(_features(higher, records), _features(two_body, records))
    for layer in higher.layers:
        layer.product.linear_up.weight.data.zero_()
    ours, theirs = _features(higher, records), _features(two_body, records)
    assert float((ours - theirs).abs().max()) <= 1e-12 * float(theirs.abs().max())
    # a few optimiser steps on a real batch: gradients reach every product parameter and the loss moves
    for layer in higher.layers:
        layer.product.linear_up.weight.data.normal_()
    encoder = higher.train()
    batch = Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    target = torch.linspace(-1.0, 1.0, batch.num_nodes)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = ((encoder(batch)[:, 0] - target) ** 2).mean()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for n, p in encoder.named_parameters()
                   if ".product." in n)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_runs_in_float64():  # the float64 fixture imported from test_equivariance is active here
    assert torch.get_default_dtype() == torch.float64
