"""Catalogue of single-purpose blocks, named Role+Block (MACE style). Each declares ``irreps_in``/``irreps_out``."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch_geometric.utils import scatter

MAX_Z = 118


class SpeciesEmbeddingBlock(nn.Module):
    """Atomic number -> (num_nodes, mul) learned scalars ``mul x 0e``."""

    def __init__(self, num_features: int):
        super().__init__()
        self.embedding = nn.Embedding(MAX_Z + 1, num_features)
        self.irreps_out = o3.Irreps(f"{num_features}x0e")

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:  # (num_nodes,) -> (num_nodes, mul)
        return self.embedding(atomic_numbers)


class EdgeShBlock(nn.Module):
    """Edge vectors -> (num_edges, sh.dim) spherical harmonics up to ``max_ell`` (component-normalised)."""

    def __init__(self, max_ell: int, parity: bool = True):
        super().__init__()
        self.irreps_out = o3.Irreps.spherical_harmonics(max_ell, p=-1 if parity else 1)
        self.sh = o3.SphericalHarmonics(self.irreps_out, normalize=True, normalization="component")

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.sh(vectors)


def _gate_for(irreps_out: o3.Irreps) -> Gate:
    """Gate nonlinearity producing ``irreps_out``: scalars through SiLU/tanh, l>0 features gated by sigmoid scalars."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] * len(gates), gated)


class InteractionBlock(nn.Module):
    """NequIP/MACE-style equivariant convolution with gated nonlinearity and a linear self-interaction residual.

    message_ij = TP_uvu(linear(x_j), Y(r_ij); w = MLP(radial_ij)); x_i' = gate(linear(sum_j message_ij / sqrt(n)))
    + linear_self(x_i). The "uvu" tensor product keeps channels separate (no dense mixing on edges): the cost that
    makes equivariant models slow is the per-edge work, so channel mixing happens on nodes in the linears.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, num_basis: int,
                 radial_hidden: int = 64):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        wanted = {ir for _, ir in self.irreps_out}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        irreps_mid, permutation, _ = o3.Irreps(mid).sort()
        instructions = [(a, b, permutation[k], mode, train) for a, b, k, mode, train in instructions]
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, irreps_mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis, radial_hidden, radial_hidden, self.tp.weight_numel],
                                        torch.nn.functional.silu)
        self.gate = _gate_for(self.irreps_out)
        self.linear_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, x: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor, edge_index: torch.Tensor,
                neighbour_norm: torch.Tensor) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); edge_sh: (num_edges, sh.dim); edge_radial: (num_edges, num_basis);
        # neighbour_norm: () sqrt of the average number of neighbours
        center, neighbour = edge_index
        messages = self.tp(self.linear_in(x)[neighbour], edge_sh, self.radial(edge_radial))
        aggregated = scatter(messages, center, dim=0, dim_size=x.shape[0], reduce="sum") / neighbour_norm
        return self.gate(self.linear_out(aggregated)) + self.self_interaction(x)  # (num_nodes, irreps_out.dim)


class CGConvBlock(nn.Module):
    """CGCNN gated graph convolution on invariant features (distance-only): invariant by construction.

    x_i' = softplus(x_i + BN(sum_j sigmoid(z_ij W_f) * softplus(z_ij W_s))), z_ij = [x_i, x_j, e_ij].
    """

    def __init__(self, num_features: int, num_edge_features: int):
        super().__init__()
        self.irreps_in = self.irreps_out = o3.Irreps(f"{num_features}x0e")
        self.linear = nn.Linear(2 * num_features + num_edge_features, 2 * num_features)
        self.norm_edges = nn.BatchNorm1d(2 * num_features)
        self.norm_nodes = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor, edge_features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        center, neighbour = edge_index
        z = self.norm_edges(self.linear(torch.cat([x[center], x[neighbour], edge_features], dim=-1)))
        gate, core = z.chunk(2, dim=-1)
        messages = torch.sigmoid(gate) * nn.functional.softplus(core)
        aggregated = scatter(messages, center, dim=0, dim_size=x.shape[0], reduce="sum")
        return nn.functional.softplus(x + self.norm_nodes(aggregated))
