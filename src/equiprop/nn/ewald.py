"""Long-range electrostatics: learned per-atom charges, a differentiable Ewald sum over the periodic crystal, and the
node features it hands to the readouts (charge, site potential, electrostatic energy, the cell's polarisation).

A message-passing encoder sees a few cutoff radii; the Coulomb interaction of the charges it assigns reaches the
whole crystal. ``ewald_sum`` follows pymatgen's ``EwaldSummation`` term by term (splitting parameter, real- and
reciprocal-space cutoffs from the accuracy, self and charged-cell terms), so for fixed charges it gives pymatgen's
energy, forces and site potentials to rounding (``tests/nn/test_ewald.py``); unlike pymatgen it is pure torch,
batched over graphs, and differentiable with respect to charges, positions and cell (forces, stress, and the
gradient that trains the charges). As MACE's ``MACELES`` (latent charges + Ewald), written from the physics.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.errors import DataError
from equiprop.data.graph import graph_index
from equiprop.data.precision import full_precision, upcast

COULOMB = 14.399645468667815  # e^2 / (4 pi eps0), eV Å: pymatgen's EwaldSummation.CONV_FACT (CODATA 2022)
SPLITTING_WEIGHT = 0.5 ** 0.5  # pymatgen's w: cost of a real- relative to a reciprocal-space term (GULP's choice)
PAIRS_PER_CHUNK = 1 << 20  # candidate (pair, image) distances held at once while enumerating: ~25 MB in float64
E_PER_A2_IN_C_PER_M2 = 16.02176634  # 1 e/Å^2 = 1.602176634e-19 C / 1e-20 m^2

# Scales of the appended channels, chosen so that they are O(1) for typical oxides (formal charges +-1..+-5): the
# Madelung site potentials there are 10-50 V (NaCl 8.9 V, MgO 24 V, Al2O3 ~ 30-45 V), the electrostatic energies
# 5-40 eV per atom (NaCl 4.5, MgO 24), and cell polarisations of point charges 0.1-2 C/m^2 (the unit ferroelectric
# polarisations are quoted in; 1 e/Å^2 = 16 C/m^2). Charges in e are O(1) already. Scalar readouts take their
# inputs unnormalised, so a channel 30x larger than the encoder's would dominate their first layer.
POTENTIAL_SCALE = 10.0  # V
ENERGY_SCALE = 10.0  # eV per atom


def splitting(num_atoms: torch.Tensor, volume: torch.Tensor, accuracy: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pymatgen's Ewald parameters per graph: the splitting eta (Å^-2, from the atom count and volume Å^3), and the
    real- (Å) and reciprocal-space (Å^-1) cutoffs that converge each sum to ``accuracy`` significant figures."""
    eta = math.pi * (num_atoms * SPLITTING_WEIGHT / volume ** 2) ** (1.0 / 3.0)
    figures = math.sqrt(accuracy * math.log(10.0))  # erfc and the Gaussian reach 10^-accuracy there
    return eta, figures / eta.sqrt(), 2.0 * eta.sqrt() * figures


def _lattice_box(reach: torch.Tensor) -> torch.Tensor:
    """(S, 3) integer-valued lattice indices n with |n_k| <= ceil(reach_k)."""
    ranges = [torch.arange(-k, k + 1, dtype=reach.dtype, device=reach.device)
              for k in reach.ceil().long().tolist()]
    return torch.cartesian_prod(*ranges).reshape(-1, 3)


def _image_pairs(positions: torch.Tensor, cell: torch.Tensor, cutoff: float):
    """Every (i, j, image n) of one crystal with 0 < |r_j + n cell - r_i| <= cutoff: center (T,), neighbour (T,),
    image (T,) index into the returned (S, 3) lattice indices. Positions need not lie inside the cell."""
    inverse = torch.linalg.inv(cell)  # its columns are the crystallographic reciprocal vectors b*_k
    fractional = positions @ inverse
    extent = fractional.max(0).values - fractional.min(0).values
    images = _lattice_box(cutoff * inverse.norm(dim=0) + extent)  # |(f_j - f_i + n)_k| <= cutoff |b*_k|
    offsets = images @ cell  # (S, 3) Å
    displacement = positions[None, :, :] - positions[:, None, :]  # (N, N, 3) [i, j] = r_j - r_i
    spread = float(displacement.norm(dim=-1).max())
    near = offsets.norm(dim=1) <= cutoff + spread  # the others lie beyond the cutoff for every pair
    images, offsets = images[near], offsets[near]
    num_atoms = len(positions)
    found = []
    chunk = max(1, PAIRS_PER_CHUNK // num_atoms ** 2)
    for start in range(0, len(offsets), chunk):
        distance = (displacement[None] + offsets[start:start + chunk, None, None]).norm(dim=-1)  # (c, N, N)
        image, center, neighbour = ((distance <= cutoff) & (distance > 1e-8)).nonzero(as_tuple=True)
        found.append((center, neighbour, image + start))
    center, neighbour, image = (torch.cat(parts) for parts in zip(*found))
    return center, neighbour, image, images


def _reciprocal_indices(cell: torch.Tensor, cutoff: float) -> torch.Tensor:
    """(K, 3) integer-valued indices m of the reciprocal vectors G = m (2 pi cell^-T) with 0 < |G| <= cutoff."""
    reciprocal = 2.0 * math.pi * torch.linalg.inv(cell).T
    indices = _lattice_box(cutoff * cell.norm(dim=1) / (2.0 * math.pi))  # G . a_k = 2 pi m_k
    length = (indices @ reciprocal).norm(dim=1)
    return indices[(length > 0) & (length <= cutoff)]


@torch.no_grad()
def _enumerate(positions: torch.Tensor, cell: torch.Tensor, counts: list[int], real_cutoff: list[float],
               reciprocal_cutoff: list[float]) -> dict[str, torch.Tensor]:
    """The terms the sum runs over, per graph, concatenated (integer indices only: the geometry the terms are
    computed from stays differentiable). Keys: center, neighbour, image (real-space pair terms), images,
    image_graph (lattice indices and their graph), waves, wave_graph (reciprocal indices and their graph),
    wave_atom, wave (atom-wave terms)."""
    parts = {name: [] for name in ("center", "neighbour", "image", "images", "image_graph", "waves", "wave_graph",
                                   "wave_atom", "wave")}
    first_atom = num_images = num_waves = 0
    for graph, count in enumerate(counts):
        pos, lattice = positions[first_atom:first_atom + count], cell[graph]
        center, neighbour, image, images = _image_pairs(pos, lattice, real_cutoff[graph])
        waves = _reciprocal_indices(lattice, reciprocal_cutoff[graph])
        atom_wave = torch.cartesian_prod(torch.arange(count, device=pos.device),
                                         torch.arange(len(waves), device=pos.device)).reshape(-1, 2)
        for name, value in (("center", center + first_atom), ("neighbour", neighbour + first_atom),
                            ("image", image + num_images), ("images", images), ("waves", waves),
                            ("image_graph", torch.full((len(images),), graph, device=pos.device)),
                            ("wave_graph", torch.full((len(waves),), graph, device=pos.device)),
                            ("wave_atom", atom_wave[:, 0] + first_atom), ("wave", atom_wave[:, 1] + num_waves)):
            parts[name].append(value)
        first_atom, num_images, num_waves = first_atom + count, num_images + len(images), num_waves + len(waves)
    return {name: torch.cat(values) for name, values in parts.items()}


@full_precision  # float32 at least under autocast: 1/r sums over thousands of images lose bf16's 3 digits at once
def ewald_sum(charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor,
              num_graphs: int, accuracy: float = 12.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Electrostatic energy of periodic point charges by Ewald summation, with pymatgen's conventions.

    charges: (num_nodes,) e; positions: (num_nodes, 3) Å; cell: (num_graphs, 3, 3) lattice vectors as rows, Å;
    batch: (num_nodes,) graph of each atom (contiguous, as PyG batches are); accuracy: significant figures each sum
    is converged to (pymatgen's ``acc_factor``). Returns the energy per graph (num_graphs,) eV, and the site
    potential (num_nodes,) V = eV/e, with energy = 1/2 sum_i q_i phi_i. phi_i sums the real-space (erfc-screened,
    all images but the atom itself), reciprocal-space, self (-2 q_i sqrt(eta/pi)) and, for a charged cell, the
    neutralising background's (-pi Q / (V eta)) potentials, so a non-neutral cell matches pymatgen's total energy.
    """
    if positions.shape != (len(charges), 3) or batch.shape != charges.shape or cell.shape != (num_graphs, 3, 3):
        raise DataError("ewald_sum", f"expected charges (N,), positions (N, 3), batch (N,) and cell ({num_graphs}, "
                                     f"3, 3); got {tuple(charges.shape)}, {tuple(positions.shape)}, "
                                     f"{tuple(batch.shape)}, {tuple(cell.shape)}")
    charges = charges.to(positions.dtype)
    volume = torch.linalg.det(cell).abs()  # (num_graphs,) Å^3
    if not bool((volume > 1e-6).all()):
        graph = int((volume <= 1e-6).nonzero()[0])
        raise DataError(f"graph {graph} of the batch", f"cell volume {float(volume[graph]):.3g} Å^3: the Ewald sum "
                                                       "needs a 3D-periodic cell", "degenerate cell")
    counts = torch.bincount(batch, minlength=num_graphs)
    eta, real_cutoff, reciprocal_cutoff = splitting(counts.to(positions.dtype), volume, accuracy)
    terms = _enumerate(positions.detach(), cell.detach(), counts.tolist(), real_cutoff.tolist(),
                       reciprocal_cutoff.tolist())
    num_nodes, sqrt_eta = len(charges), eta.sqrt()

    # real space: sum over images of q_j erfc(sqrt(eta) r) / r
    offsets = torch.einsum("sk,skl->sl", terms["images"].to(cell.dtype), cell[terms["image_graph"]])  # (S, 3) Å
    center, neighbour = terms["center"], terms["neighbour"]
    distance = (positions[neighbour] + offsets[terms["image"]] - positions[center]).norm(dim=-1)  # (T,)
    screened = charges[neighbour] * torch.erfc(sqrt_eta[batch[center]] * distance) / distance
    real = scatter(screened, center, dim=0, dim_size=num_nodes, reduce="sum")

    # reciprocal space: (4 pi / V) sum_G exp(-G^2 / 4 eta) / G^2 Re[S(G) exp(-i G r_i)], S(G) = sum_j q_j e^{iG r_j}
    reciprocal_cells = 2.0 * math.pi * torch.linalg.inv(cell).transpose(1, 2)  # rows: reciprocal vectors, Å^-1
    wave_graph, atom, wave = terms["wave_graph"], terms["wave_atom"], terms["wave"]
    waves = torch.einsum("gk,gkl->gl", terms["waves"].to(cell.dtype), reciprocal_cells[wave_graph])  # (K, 3)
    squared = (waves * waves).sum(-1)
    weight = torch.exp(-squared / (4.0 * eta[wave_graph])) / squared  # (K,) Å^2
    phase = (positions[atom] * waves[wave]).sum(-1)  # (P,) over the atom-wave pairs of each graph
    cos, sin = torch.cos(phase), torch.sin(phase)
    structure_cos = scatter(charges[atom] * cos, wave, dim=0, dim_size=len(waves), reduce="sum")  # (K,)
    structure_sin = scatter(charges[atom] * sin, wave, dim=0, dim_size=len(waves), reduce="sum")
    per_pair = weight[wave] * (cos * structure_cos[wave] + sin * structure_sin[wave])
    reciprocal = scatter(per_pair, atom, dim=0, dim_size=num_nodes, reduce="sum") * (4.0 * math.pi / volume)[batch]

    # the atom's own Gaussian, and the uniform background that neutralises a charged cell
    own = -2.0 * charges * (eta / math.pi).sqrt()[batch]
    total_charge = scatter(charges, batch, dim=0, dim_size=num_graphs, reduce="sum")
    background = (-math.pi * total_charge / (volume * eta))[batch]

    potentials = COULOMB * (real + reciprocal + own + background)  # (num_nodes,) V
    energy = 0.5 * scatter(charges * potentials, batch, dim=0, dim_size=num_graphs, reduce="sum")  # (num_graphs,)
    return energy, potentials


class ChargeBlock(nn.Module):
    """Invariant (0e) features -> one charge per atom (e) by a small MLP, made exactly neutral per cell by subtracting
    each graph's mean: the cell's dipole is then independent of the origin, and the Ewald sum has no background."""

    def __init__(self, irreps_in: o3.Irreps, hidden: int = 32):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps("1x0e")
        scalars = [i for (_, ir), sl in zip(self.irreps_in, self.irreps_in.slices()) if ir == o3.Irrep("0e")
                   for i in range(sl.start, sl.stop)]
        if not scalars:
            raise ValueError(f"ChargeBlock needs 0e features, node irreps are {self.irreps_in}")
        self.register_buffer("scalar_index", torch.as_tensor(scalars, dtype=torch.long), persistent=False)
        # no bias on the last layer: a constant charge is removed by the neutrality, it would never learn
        self.mlp = nn.Sequential(nn.Linear(len(scalars), hidden), nn.SiLU(), nn.Linear(hidden, 1, bias=False))

    def forward(self, x: torch.Tensor, data) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); data: the PyG batch -> (num_nodes,) charges, e, summing to 0 per graph
        raw = upcast(self.mlp(x[:, self.scalar_index]).squeeze(-1))
        batch = graph_index(data)
        mean = scatter(raw, batch, dim=0, dim_size=data.num_graphs, reduce="mean")
        return raw - mean[batch]


class LongRangeBlock(nn.Module):
    """Node features -> the same features with the crystal's electrostatics appended for the readouts.

    Charges from the invariant channels (``ChargeBlock``), their Ewald sum over the periodic crystal, and appended
    per atom, in ``irreps_out = irreps_in + 3x0e + 1x1o``: the charge q_i (e), the site potential phi_i / 10 V, the
    cell's electrostatic energy per atom / 10 eV (0e, broadcast to its atoms), and the cell's polarisation
    sum_i q_i r_i / V in C/m^2 (1o, broadcast to its atoms). The polarisation is origin-independent (the cell is
    neutral) and supercell-consistent (per volume); like any point-charge dipole of a periodic crystal it is defined
    up to the polarisation quantum q_i R / V: it follows the periodic images the input positions name.

    Args:
        irreps_in: the encoder's ``irreps_out`` (only its 0e channels are read).
        hidden: width of the charge MLP.
        accuracy: significant figures of the Ewald sum (pymatgen's ``acc_factor``; the real-space terms, the cost,
            grow as accuracy^1.5).
    """

    def __init__(self, irreps_in: o3.Irreps, hidden: int = 32, accuracy: float = 12.0):
        super().__init__()
        self.irreps_in, self.accuracy = o3.Irreps(irreps_in), float(accuracy)
        self.charges = ChargeBlock(self.irreps_in, hidden)
        self.irreps_out = self.irreps_in + o3.Irreps("3x0e+1x1o")

    def terms(self, x: torch.Tensor, data) -> dict[str, torch.Tensor]:
        """The electrostatics in physical units: charges (num_nodes,) e, potentials (num_nodes,) V, energy
        (num_graphs,) eV, dipole (num_graphs, 3) e Å, polarisation (num_graphs, 3) e/Å^2."""
        pbc = data[keys.PBC] if keys.PBC in data else None
        if pbc is not None and not bool(pbc.all()):
            graph = int((~pbc.all(dim=-1)).nonzero()[0])
            ids = data[keys.STRUCTURE_ID] if keys.STRUCTURE_ID in data else None
            where = (ids[graph] if isinstance(ids, list) else ids) if ids is not None else f"graph {graph}"
            raise DataError(str(where), "the long-range block (Ewald sum) needs a crystal periodic in 3D",
                            "not 3D-periodic")
        batch, positions, cell = graph_index(data), data[keys.POSITIONS], data[keys.CELL]
        charges = self.charges(x, data)  # (num_nodes,)
        energy, potentials = ewald_sum(charges, positions, cell, batch, data.num_graphs, self.accuracy)
        charges = charges.to(potentials.dtype)
        dipole = scatter(charges[:, None] * positions.to(potentials.dtype), batch, dim=0, dim_size=data.num_graphs,
                         reduce="sum")  # (num_graphs, 3) e Å
        volume = torch.linalg.det(cell.to(potentials.dtype)).abs()
        return {"charges": charges, "potentials": potentials, "energy": energy, "dipole": dipole,
                "polarisation": dipole / volume[:, None]}

    def forward(self, x: torch.Tensor, data) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); data: the PyG batch (positions, cell, batch) -> (num_nodes, irreps_out.dim)
        x = upcast(x)
        terms = self.terms(x, data)
        batch = graph_index(data)
        atoms = torch.bincount(batch, minlength=data.num_graphs).to(terms["energy"].dtype)
        appended = torch.cat([terms["charges"][:, None], terms["potentials"][:, None] / POTENTIAL_SCALE,
                              (terms["energy"] / atoms / ENERGY_SCALE)[batch][:, None],
                              E_PER_A2_IN_C_PER_M2 * terms["polarisation"][batch]], dim=1)  # (num_nodes, 6)
        return torch.cat([x, appended.to(x.dtype)], dim=1)
