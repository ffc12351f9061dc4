"""Blocks against independent references: EdgeTensorProductBlock is e3nn's "uvu" TensorProduct plus a scatter-sum."""

import pytest
import torch
from e3nn import o3
from torch_geometric.utils import scatter

from equiprop.nn.blocks import EdgeTensorProductBlock

pytestmark = pytest.mark.usefixtures("float64")  # equivariance to rounding: build and run in float64


def _reference(block: EdgeTensorProductBlock, wanted: set):
    """e3nn's own TensorProduct with the same paths, one output block per path (unsorted), per-edge weights.

    Returns the product, a function mapping the block's weight layout to e3nn's, and the order (old block indices)
    in which e3nn's output blocks appear in the block's sorted ``irreps_out``.
    """
    irreps_in, irreps_sh = block.irreps_in, block.irreps_sh
    paths = [(i, j, ir_out) for i, (_, ir_in) in enumerate(irreps_in) for j, (_, ir_sh) in enumerate(irreps_sh)
             for ir_out in ir_in * ir_sh if ir_out in wanted]
    mid = o3.Irreps([(irreps_in[i].mul, ir) for i, _, ir in paths])
    tp = o3.TensorProduct(irreps_in, irreps_sh, mid, [(i, j, k, "uvu", True) for k, (i, j, _) in enumerate(paths)],
                          internal_weights=False, shared_weights=False)
    sorted_irreps, _, inv = mid.sort()
    assert block.irreps_out == sorted_irreps

    def to_e3nn(weights: torch.Tensor) -> torch.Tensor:
        # block layout: per input block i (ascending), (mul, paths of i); e3nn: per path (instruction order), (mul,)
        chunks = []
        for i, w in zip(block.blocks, weights.split(block.weight_sizes, dim=1)):
            num_paths = sum(1 for b, _, _ in paths if b == i)
            chunks.append(w.reshape(len(w), irreps_in[i].mul, num_paths).transpose(1, 2).reshape(len(w), -1))
        return torch.cat(chunks, dim=1)

    return tp, to_e3nn, mid, list(inv)


CASES = [
    ("4x0e+3x1o+2x2e", 2, {o3.Irrep(ir) for ir in ("0e", "1o", "2e")}),  # the encoder's default shape
    ("4x0e+3x1o+2x2e", 2, {o3.Irrep(ir) for ir in ("0e", "1o", "1e", "2e", "2o", "3o")}),  # every parity
    ("5x0e", 3, {o3.Irrep(ir) for ir in ("0e", "1o", "2e", "3o")}),  # first layer: scalars in, l up to 3 out
    ("2x0e+2x1e+2x2e+1x3e", 3, {o3.Irrep(l, 1) for l in range(4)}),  # parity off: everything even
]


@pytest.mark.parametrize("irreps_in, max_ell, wanted", CASES, ids=["natural", "all-parities", "l3-from-scalars",
                                                                   "no-parity-l3"])
def test_edge_tensor_product_is_e3nn_uvu_then_scatter_sum(irreps_in, max_ell, wanted):
    torch.manual_seed(0)
    dtype = torch.float64
    irreps_sh = o3.Irreps.spherical_harmonics(max_ell, p=1 if all(ir.p == 1 for ir in wanted) else -1)
    block = EdgeTensorProductBlock(o3.Irreps(irreps_in), irreps_sh, wanted)
    tp, to_e3nn, mid, order = _reference(block, wanted)

    num_nodes, num_edges = 5, 17
    edge_index = torch.randint(0, num_nodes, (2, num_edges))
    edge_index[0, :num_nodes] = torch.arange(num_nodes)  # every atom receives messages
    x = torch.randn(num_nodes, block.irreps_in.dim, dtype=dtype, requires_grad=True)
    sh = torch.randn(num_edges, irreps_sh.dim, dtype=dtype, requires_grad=True)
    w = torch.randn(num_edges, block.weight_numel, dtype=dtype, requires_grad=True)
    assert block.weight_numel == tp.weight_numel

    out = block(x, sh, w, edge_index, num_nodes)

    center, neighbour = edge_index
    per_edge = tp(x[neighbour], sh, to_e3nn(w))  # (num_edges, mid.dim)
    blocks = per_edge.split([m.dim for m in mid], dim=1)
    expected = scatter(torch.cat([blocks[k] for k in order], dim=1), center, dim=0, dim_size=num_nodes, reduce="sum")

    assert out.shape == (num_nodes, block.irreps_out.dim)
    assert float(expected.detach().abs().max()) > 0.1  # non-trivial outputs
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)

    upstream = torch.randn_like(out)
    grads = torch.autograd.grad((out * upstream).sum(), (x, sh, w))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (x, sh, w))
    for name, g, e in zip(("x", "edge_sh", "weights"), grads, expected_grads):
        assert float(e.abs().max()) > 0, name
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10, msg=name)


def test_only_wanted_irreps_come_out_and_unused_inputs_are_skipped():
    irreps_sh = o3.Irreps.spherical_harmonics(1)  # 0e + 1o
    block = EdgeTensorProductBlock(o3.Irreps("3x0e+2x2e"), irreps_sh, {o3.Irrep("1o")})
    # 0e x 1o -> 1o (3 channels); 2e x 1o -> 1o (2 channels); 2e x 0e -> 2e is not wanted
    assert block.irreps_out == o3.Irreps("3x1o+2x1o").sort().irreps
    assert block.weight_numel == 3 + 2


def test_path_diagonal_tensors_stay_out_of_checkpoints():
    """l > 0 inputs run on path-diagonal couplings derived at init: the state_dict keeps only ``coupling_i``, so
    checkpoints written before (and after) load either way."""
    block = EdgeTensorProductBlock(o3.Irreps("4x0e+3x1o+2x2e"), o3.Irreps.spherical_harmonics(2),
                                   {o3.Irrep(ir) for ir in ("0e", "1o", "2e")})
    assert set(block.state_dict()) == {"coupling_0", "coupling_1", "coupling_2"}
    assert hasattr(block, "diagonal_1") and hasattr(block, "path_of_2") and not hasattr(block, "diagonal_0")
