"""Catalogue of single-purpose blocks, named Role+Block (MACE style). Each declares ``irreps_in``/``irreps_out``."""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import Dropout, FullyConnectedNet, Gate
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.graph import edge_vectors, radial_lengths
from equiprop.data.precision import full_precision

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


class EdgeTensorProductBlock(nn.Module):
    """Channel-wise ("uvu") tensor product of neighbour features with edge spherical harmonics, per-edge weights,
    summed over each atom's edges.

    m_i[u, path] = sum_j w_ij[u, path] CG(l_in, l_sh -> l_out) x_j[u] Y_ij, component-normalised: the maths of e3nn's
    ``TensorProduct(..., "uvu", internal_weights=False)`` followed by a scatter-sum. Written for speed on edges: all
    paths that read one input irrep share one coupling tensor K_ij = sum_sh Y_ij CG (one matmul) and one batched
    matmul; outputs are scattered to atoms per input irrep and laid out as ``irreps_out`` only on atoms. (e3nn's
    generated code slices the (num_edges, dim) tensors once per path; each slice costs a full zero-filled gradient
    in backward: a third of the training time in benchmarks/speed.py.)

    Input irreps with l > 0 (d_in > 1) take the path-diagonal route instead: the coupling above is block-diagonal
    over paths, so its matmul multiplies mostly zeros (P - 1 of every P blocks). There each output column k reads
    one path p(k): m[u, k] = w[u, p(k)] sum_a x_j[u, a] Kd[a, k], with Kd the diagonal blocks only (d_in x D per
    edge instead of P d_in x D) and the weights expanded to the columns. Same sums less the zero terms (equal up to
    float rounding): this product 1.2-1.9x faster on layers with l > 0 inputs, an encoder training step 1.04-1.34x
    (issue 19, docs/benchmarks.md). Scalar inputs (d_in = 1) keep the matmul, faster there. The derived tensors are
    not saved (persistent=False): checkpoints hold ``coupling_i`` as before.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: set):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        paths = []  # (input block, sh block, output irrep)
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                paths += [(i, j, ir_out) for ir_out in ir_in * ir_sh if ir_out in wanted]
        mid = o3.Irreps([(self.irreps_in[i].mul, ir) for i, _, ir in paths])
        self.irreps_out, permutation, _ = mid.sort()
        self.blocks = sorted({i for i, _, _ in paths})
        self.weight_sizes, self.layout = [], []
        sh_offsets = [0] + list(np.cumsum([m.dim for m in self.irreps_sh]))
        for i in self.blocks:
            block_paths = [(k, j, ir) for k, (b, j, ir) in enumerate(paths) if b == i]
            d_in, mul = self.irreps_in[i].ir.dim, self.irreps_in[i].mul
            width = sum(ir.dim for _, _, ir in block_paths)
            # block-diagonal over paths: row (path, d_in) feeds only that path's d_out columns
            coupling = torch.zeros(self.irreps_sh.dim, len(block_paths) * d_in, width)
            diagonal = torch.zeros(self.irreps_sh.dim, d_in, width)  # path-diagonal blocks only (d_in > 1)
            path_of = torch.zeros(width, dtype=torch.long)  # path of each output column
            offset = 0
            for p, (k, j, ir) in enumerate(block_paths):
                cg = o3.wigner_3j(self.irreps_in[i].ir.l, self.irreps_sh[j].ir.l, ir.l) * ir.dim**0.5
                coupling[sh_offsets[j]:sh_offsets[j + 1], p * d_in:(p + 1) * d_in, offset:offset + ir.dim] = (
                    cg.permute(1, 0, 2))
                diagonal[sh_offsets[j]:sh_offsets[j + 1], :, offset:offset + ir.dim] = cg.permute(1, 0, 2)
                path_of[offset:offset + ir.dim] = p
                self.layout.append((permutation[k], i, offset, ir.dim, mul))
                offset += ir.dim
            self.register_buffer(f"coupling_{i}", coupling.reshape(self.irreps_sh.dim, -1))
            if d_in > 1:
                self.register_buffer(f"diagonal_{i}", diagonal.reshape(self.irreps_sh.dim, -1), persistent=False)
                self.register_buffer(f"path_of_{i}", path_of, persistent=False)
            self.weight_sizes.append(mul * len(block_paths))
        self.layout.sort()  # by position in the sorted output irreps
        self.weight_numel = sum(self.weight_sizes)

    def forward(self, x: torch.Tensor, edge_sh: torch.Tensor, weights: torch.Tensor, edge_index: torch.Tensor,
                num_nodes: int) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); edge_sh: (num_edges, sh.dim); weights: (num_edges, weight_numel)
        center, neighbour = edge_index
        num_edges = edge_sh.shape[0]
        x_blocks = dict(zip(range(len(self.irreps_in)), x.split([m.dim for m in self.irreps_in], dim=1)))
        aggregated = {}
        for i, w in zip(self.blocks, weights.split(self.weight_sizes, dim=1)):
            mul, ir = self.irreps_in[i]
            if ir.dim > 1:  # path-diagonal: couple with the diagonal blocks, then weight each column by its path
                x_j = x_blocks[i].reshape(-1, mul, ir.dim)[neighbour]  # (E, mul, d_in)
                coupling = (edge_sh @ getattr(self, f"diagonal_{i}")).reshape(num_edges, ir.dim, -1)  # (E, d_in, D)
                columns = w.reshape(num_edges, mul, -1).index_select(2, getattr(self, f"path_of_{i}"))  # (E, mul, D)
                messages = torch.bmm(x_j, coupling) * columns  # (E, mul, D)
            else:  # scalars: weight the inputs (smaller than the outputs), then one matmul couples all paths
                x_j = x_blocks[i].reshape(-1, mul, 1)[neighbour]  # (E, mul, 1)
                weighted = x_j * w.reshape(num_edges, mul, -1)  # (E, mul, P)
                coupling = (edge_sh @ getattr(self, f"coupling_{i}")).reshape(num_edges, weighted.shape[2], -1)
                messages = torch.bmm(weighted, coupling)  # (E, mul, D)
            aggregated[i] = scatter(messages, center, dim=0, dim_size=num_nodes, reduce="sum")  # (N, mul, D)
        return torch.cat([aggregated[i][:, :, offset:offset + dim].reshape(num_nodes, mul * dim)
                          for _, i, offset, dim, mul in self.layout], dim=1)  # (num_nodes, irreps_out.dim)


def _channelwise_product(irreps1: o3.Irreps, irreps2: o3.Irreps, keep: list, first: list | None,
                         weighted: bool) -> tuple[o3.TensorProduct, list]:
    """e3nn "uuu" tensor product (channel u only meets channel u) of powers of A (irreps1) with A (irreps2), outputs
    in ``keep``. Unweighted: one output block per path (a basis to multiply further). Weighted: per-sample weights
    per (path, channel), the paths summed into one block per irrep of ``keep`` (a contraction of the basis).

    All factors are the same A and a_i a_j = a_j a_i, so only nondecreasing factor indices are formed: block i of
    irreps1, whose last factor is A's block ``first[i]``, meets A's blocks j >= first[i] (at max_ell <= 2 this spans
    what all orders span: tests/nn/test_body_order.py). For A x A (``first`` None), a_l x a_l -> L with L odd is
    antisymmetric, i.e. zero (a x a = 0), and left out. Returns the product and, per output block, its last factor's
    index in A.
    """
    square = first is None
    first = list(range(len(irreps1))) if square else first
    out = [(irreps1[0].mul, ir) for ir in keep] if weighted else []  # weighted: paths summed per irrep of keep
    instructions, last = [], []
    for i, (mul, ir1) in enumerate(irreps1):
        for j in range(first[i], len(irreps2)):
            for ir in ir1 * irreps2[j].ir:
                if ir in keep and not (square and i == j and ir.l % 2):
                    instructions.append((i, j, keep.index(ir) if weighted else len(out), "uuu", weighted))
                    if not weighted:
                        out.append((mul, ir))
                    last.append(j)
    tp = o3.TensorProduct(irreps1, irreps2, o3.Irreps(out), instructions, internal_weights=False,
                          shared_weights=False)
    return tp, last


class ProductBasisBlock(nn.Module):
    """Higher body order (MACE's product basis): channel-wise powers of the atomic basis A, contracted with weights
    that depend on the centre's species, then mixed.

    A = linear(aggregated messages): ``channels`` copies of every irrep of ``irreps_out``. P2 = A (x) A,
    P3 = P2 (x) A, ... ("uuu" products): P_nu of atom i sums over nu-tuples of its neighbours, a (nu+1)-body feature,
    at per-atom (not per-edge) cost. Intermediate irreps are any l <= lmax (2o from 1o x 2e feeds P3). For each
    nu = 2..``correlation``, B_nu[u, L] = sum_paths w_path,u(z) P_nu[path, u, L] (the paths are MACE's basis, w its
    contraction weights) with w(z) = w_shared + emb(z) W: a rank-``species_rank`` version of MACE's one-hot x W
    (shares strength between rare elements; W = 0 at start). Then a linear from all B_nu to ``irreps_out``.
    The nu = 1 term is not here: it is the caller's linear on A.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, correlation: int, channels: int = 16,
                 species_rank: int = 8):
        super().__init__()
        if correlation < 2:
            raise ValueError(f"correlation must be >= 2 for a product basis, got {correlation}")
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        wanted = sorted({ir for _, ir in self.irreps_out})
        parities = (1, -1) if any(ir.p == -1 for ir in wanted) else (1,)  # parity off: all irreps even
        intermediate = [o3.Irrep(l, p) for l in range(self.irreps_out.lmax + 1) for p in parities]
        self.irreps_a = o3.Irreps([(channels, ir) for ir in wanted])
        self.linear_down = o3.Linear(self.irreps_in, self.irreps_a)
        powers, contractions, irreps, first = [], [], self.irreps_a, None
        for nu in range(2, correlation + 1):
            contractions.append(_channelwise_product(irreps, self.irreps_a, wanted, first, weighted=True)[0])
            if nu < correlation:  # P_nu itself is only needed as a factor of P_nu+1
                power, first = _channelwise_product(irreps, self.irreps_a, intermediate, first, weighted=False)
                powers.append(power)
                irreps = power.irreps_out
        self.powers, self.contractions = nn.ModuleList(powers), nn.ModuleList(contractions)
        self.weight_sizes = [tp.weight_numel for tp in contractions]
        self.species_embedding = nn.Embedding(MAX_Z + 1, species_rank)
        self.species_weights = nn.Linear(species_rank, sum(self.weight_sizes))  # bias: the shared weights
        nn.init.zeros_(self.species_weights.weight)
        nn.init.normal_(self.species_weights.bias)
        self.linear_up = o3.Linear(o3.Irreps(sum((tp.irreps_out for tp in contractions), o3.Irreps(""))),
                                   self.irreps_out)

    def forward(self, aggregated: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        # aggregated: (num_nodes, irreps_in.dim); species: (num_nodes,) atomic numbers
        a = self.linear_down(aggregated)  # (num_nodes, irreps_a.dim)
        weights = self.species_weights(self.species_embedding(species)).split(self.weight_sizes, dim=1)
        basis, p = [], a
        for nu, (contract, w) in enumerate(zip(self.contractions, weights)):
            basis.append(contract(p, a, w))  # B_nu+2: (num_nodes, channels x wanted irreps)
            if nu < len(self.powers):
                p = self.powers[nu](p, a)  # P_nu+2: (num_nodes, one block per path)
        return self.linear_up(torch.cat(basis, dim=1))  # (num_nodes, irreps_out.dim)


class InteractionBlock(nn.Module):
    """NequIP/MACE-style equivariant convolution with gated nonlinearity and a linear self-interaction residual.

    message_ij = TP_uvu(linear(x_j), Y(r_ij); w = MLP(radial_ij)); A_i = sum_j message_ij / sqrt(n);
    x_i' = gate(linear(A_i) + product(A_i, z_i)) + linear_self(x_i). The "uvu" tensor product keeps channels separate
    (no dense mixing on edges): the cost that makes equivariant models slow is the per-edge work, so channel mixing
    happens on nodes in the linears. ``correlation`` > 1 adds the ``ProductBasisBlock`` (body order correlation + 1);
    1 is the two-body model, with no product parameters at all.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, num_basis: int,
                 radial_hidden: int = 64, radial_layers: int = 2, correlation: int = 1, product_channels: int = 16):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = EdgeTensorProductBlock(self.irreps_in, irreps_sh, {ir for _, ir in self.irreps_out})
        self.radial = FullyConnectedNet([num_basis] + [radial_hidden] * radial_layers + [self.tp.weight_numel],
                                        torch.nn.functional.silu)
        self.gate = _gate_for(self.irreps_out)
        self.linear_out = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.product = (ProductBasisBlock(self.tp.irreps_out, self.gate.irreps_in, correlation, product_channels)
                        if correlation > 1 else None)
        self.self_interaction = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, x: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor, edge_index: torch.Tensor,
                neighbour_norm: torch.Tensor, species: torch.Tensor | None = None) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); edge_sh: (num_edges, sh.dim); edge_radial: (num_edges, num_basis);
        # neighbour_norm: () sqrt of the average number of neighbours; species: (num_nodes,) atomic numbers.
        # The radial MLP is invariant (lengths -> weights): under autocast its matmuls run in reduced precision.
        return self.equivariant(x, edge_sh, self.radial(edge_radial), edge_index, neighbour_norm, species)

    @full_precision  # e3nn's linears, gate and products: float32 (data.precision)
    def equivariant(self, x: torch.Tensor, edge_sh: torch.Tensor, weights: torch.Tensor, edge_index: torch.Tensor,
                    neighbour_norm: torch.Tensor, species: torch.Tensor | None) -> torch.Tensor:
        # weights: (num_edges, tp.weight_numel) per-edge tensor-product weights; the rest as in forward
        aggregated = self.tp(self.linear_in(x), edge_sh, weights, edge_index, x.shape[0])
        aggregated = aggregated / neighbour_norm
        h = self.linear_out(aggregated)  # (num_nodes, gate.irreps_in.dim)
        if self.product is not None:
            h = h + self.product(aggregated, species)
        return self.gate(h) + self.self_interaction(x)  # (num_nodes, irreps_out.dim)


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


class EnvironmentHarmonicsBlock(nn.Module):
    """Edges -> per-atom geometric features ``channels x l`` for each requested l (natural parity (-1)^l):
    the neighbour directions' spherical harmonics Y^l(r_ij), weighted by learned radial functions, averaged over each
    atom's neighbours. The harmonics come from ``EdgeGeometryBlock`` (computed once per forward for every readout).

    Tensor readouts use them for irreps the encoder's features do not carry well: an atom at a cubic site has no
    l=2 feature at all, so products of l<=2 features cannot give the 4e (cubic) part of its elastic tensor, while the
    l=4 harmonics of its neighbour shell can.
    """

    def __init__(self, ells: list[int], cutoff: float, channels: int = 8, num_basis: int = 8):
        super().__init__()
        from equiprop.nn.radial import RadialEmbeddingBlock

        self.ells, self.channels = sorted(set(ells)), channels
        self.irreps_out = o3.Irreps([(channels, (l, (-1) ** l)) for l in self.ells])
        self.radial = RadialEmbeddingBlock(cutoff, num_basis)
        self.weights = nn.Linear(num_basis, channels * len(self.ells))

    def forward(self, edges: dict, num_nodes: int) -> torch.Tensor:
        # edges: EdgeGeometryBlock's output ({"lengths", "center", "sh": {l: (num_edges, 2l+1)}}) -> (num_nodes,
        # irreps_out.dim)
        lengths, center = edges["lengths"], edges["center"]
        weights = self.weights(self.radial(lengths)).reshape(len(lengths), len(self.ells), -1)
        parts = []
        for k, l in enumerate(self.ells):
            per_edge = weights[:, k, :, None] * edges["sh"][l][:, None, :]  # (num_edges, channels, 2l+1)
            parts.append(scatter(per_edge, center, dim=0, dim_size=num_nodes, reduce="mean").flatten(1))
        return torch.cat(parts, dim=1)


class EdgeGeometryBlock(nn.Module):
    """Edge vectors, lengths in cutoff units and their spherical harmonics for every l some readout needs, computed
    once per forward and shared by the tensor readouts (each applies its own radial weights): four tensor heads
    otherwise recompute the same edge work four times. No parameters."""

    def __init__(self, ells: list[int]):
        super().__init__()
        self.ells = sorted(set(ells))
        self.irreps_sh = o3.Irreps([(1, (l, (-1) ** l)) for l in self.ells])
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")

    def forward(self, data, dtype: torch.dtype) -> dict:
        # -> {"lengths": (num_edges,), "center": (num_edges,), "sh": {l: (num_edges, 2l+1)}}
        vectors = edge_vectors(data).to(dtype)
        sh = self.sh(vectors)
        return {"lengths": radial_lengths(data, vectors), "center": data[keys.EDGE_INDEX][0],
                "sh": {l: sh[:, sl] for l, sl in zip(self.ells, self.irreps_sh.slices())}}


class FeatureDropoutBlock(nn.Module):
    """Drops whole irreps of each atom's features (e3nn ``Dropout``: a dropped 1o vector is zeroed as a whole, so the
    block stays equivariant) before the readouts. Trained with it, a model gives Monte-Carlo-dropout uncertainty
    (Gal & Ghahramani 2016): ``sampling`` keeps it active in eval mode, each forward one draw of the thinned network."""

    def __init__(self, irreps: o3.Irreps, p: float):
        super().__init__()
        self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.p, self.sampling = float(p), False
        self.dropout = Dropout(self.irreps_in, self.p) if self.p > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (num_nodes, irreps.dim) -> same
        if self.dropout is None:
            return x
        self.dropout.train(self.training or self.sampling)
        return self.dropout(x)
