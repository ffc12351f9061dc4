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
