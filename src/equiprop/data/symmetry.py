"""Crystal point-group checks of tensor labels: is a tensor invariant under the symmetry of its structure's frame?"""

from __future__ import annotations

import warnings

import numpy as np

from equiprop.data.errors import DataError

FIT_TOL = 0.05  # largest change under symmetrisation, relative to the largest component
SYMPREC = 0.1  # Å, spglib tolerance (MP's own value for these datasets)


def point_group_rotations(structure, symprec: float = SYMPREC) -> np.ndarray:
    """(num_ops, 3, 3) Cartesian rotations of the structure's point group, in the structure's own frame."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ops = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations(cartesian=True)
    return np.unique(np.round([op.rotation_matrix for op in ops], 8), axis=0)


def rotate_tensor(t: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """R applied to every index of a Cartesian tensor: T'_{ij..} = R_ia R_jb .. T_{ab..}."""
    out = np.asarray(t, dtype=np.float64)
    for axis in range(out.ndim):
        out = np.moveaxis(np.tensordot(rotation, out, axes=([1], [axis])), 0, axis)
    return out


def symmetrise(t: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Group average of the tensor: the closest tensor invariant under all rotations."""
    return np.mean([rotate_tensor(t, r) for r in rotations], axis=0)


def fit_to_symmetry(t: np.ndarray, rotations: np.ndarray, where: str, tol: float = FIT_TOL) -> np.ndarray:
    """The symmetrised tensor, or DataError if the tensor is not (close to) invariant in this frame."""
    fitted = symmetrise(t, rotations)
    misfit = float(np.abs(t - fitted).max()) / max(float(np.abs(t).max()), 1e-12)
    if misfit > tol:
        raise DataError(where, f"tensor is not invariant under the structure's point group in this frame "
                               f"(relative misfit {misfit:.3g} > {tol})", "tensor does not fit the structure frame")
    return fitted


def ieee_rotation(structure) -> np.ndarray:
    """Rotation from the structure's Cartesian frame to the IEEE-176 standard frame (pymatgen's convention)."""
    from pymatgen.core.tensors import Tensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(Tensor(np.eye(3)).get_ieee_rotation(structure))


INVERSION_TOL = 1e-4  # Å: an inverted atom must land on a partner this closely (labels' coordinates carry 1e-6)


def inversion_permutation(cell: np.ndarray, fractional: np.ndarray, numbers: np.ndarray,
                          tol: float = INVERSION_TOL) -> np.ndarray | None:
    """For a centrosymmetric crystal, ``p`` with atom ``p[i]`` at the inversion image of atom ``i`` (-x_i + t, modulo
    the lattice, same element); None when the crystal has no inversion centre within ``tol`` Å. The neighbours of
    atom i in the inverted crystal are then exactly those of atom p[i] in the crystal, which lets an encoder skip
    the inverted pass (``FoundationEncoder``).

    Direct search, no symmetry library (spglib's full analysis costs ~10 ms a crystal, a third of a SevenNet pass):
    an inversion maps an atom a of the rarest element onto an atom b of that element, so t = x_a + x_b for some b;
    each candidate t is kept if it maps every atom onto an atom of its element."""
    cell, fractional = np.asarray(cell, dtype=float), np.asarray(fractional, dtype=float)
    numbers = np.asarray(numbers)
    elements, counts = np.unique(numbers, return_counts=True)
    anchors = np.flatnonzero(numbers == elements[counts.argmin()])
    same = numbers[:, None] == numbers[None, :]
    for b in anchors:
        delta = (fractional[anchors[0]] + fractional[b] - fractional)[:, None, :] - fractional[None, :, :]
        distance = np.linalg.norm((delta - np.round(delta)) @ cell, axis=-1)  # (i, j): |image of i - atom j|
        distance[~same] = np.inf
        partner = distance.argmin(axis=1)
        if (distance[np.arange(len(partner)), partner] < tol).all() and \
                len(np.unique(partner)) == len(partner):
            return partner
    return None


def inversion_partners(data) -> "torch.Tensor":
    """(num_nodes,) for a PyG batch: the global index of each atom's inversion partner (``inversion_permutation``),
    -1 for every atom of a structure without an inversion centre."""
    import torch

    from equiprop.data import keys

    positions, cells = data[keys.POSITIONS].detach().double().cpu().numpy(), data[keys.CELL].double().cpu().numpy()
    numbers = data[keys.ATOMIC_NUMBERS].cpu().numpy()
    batch = data[keys.BATCH].cpu().numpy() if keys.BATCH in data and data[keys.BATCH] is not None else \
        np.zeros(len(numbers), dtype=int)
    partners = np.full(len(numbers), -1, dtype=np.int64)
    starts = np.searchsorted(batch, np.arange(len(cells)))
    for g, start in enumerate(starts):
        stop = starts[g + 1] if g + 1 < len(starts) else len(numbers)
        if stop <= start:
            continue
        fractional = np.linalg.solve(cells[g].T, positions[start:stop].T).T
        local = inversion_permutation(cells[g], fractional, numbers[start:stop])
        if local is not None:
            partners[start:stop] = local + start
    return torch.as_tensor(partners, device=data[keys.POSITIONS].device)
