"""Tensor algebra shared by data, model and scoreboard: isotropic/anisotropic parts, Mandel form, matrix log/exp.

Positive-definite tensors are mapped to log space (log-Euclidean): a dielectric tensor by ``L = logm(eps - I)``, a
stiffness tensor by ``L = logm(Mandel(C))``. Mandel's form of a rank-4 stiffness tensor is the 6x6 matrix on which
rotations act orthogonally (``Q M Q^T``), so matrix functions commute with rotations and ``L`` is again a tensor of the
same index symmetry: the model predicts it with the same irreps and the output ``I + expm(L)`` / ``expm(L)`` is
equivariant and positive definite by construction.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# weights of the Mandel form: 1 for normal components, sqrt(2) for shear ones (Voigt order xx yy zz yz xz xy)
MANDEL_WEIGHTS = np.array([1.0, 1.0, 1.0, 2**0.5, 2**0.5, 2**0.5])
PARAMETRIZATIONS = ("linear", "spd_log")
# Voigt order xx, yy, zz, yz, xz, xy (no factor 2 on shear components)
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
VOIGT_INDEX = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])  # (3, 3) Cartesian pair -> Voigt index


# -- Voigt form, index symmetries, irreps -----------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def cartesian_tensor(formula: str):
    from e3nn.io import CartesianTensor

    return CartesianTensor(formula)


def voigt_to_cartesian(voigt: np.ndarray) -> np.ndarray:
    """(6, 6) -> (3, 3, 3, 3) stiffness, (3, 6) -> (3, 3, 3) piezo stress tensor, or (6,) -> (3, 3) symmetric
    tensor (a stress as ase writes it) (Voigt order xx yy zz yz xz xy)."""
    voigt = np.asarray(voigt, dtype=np.float64)
    if voigt.shape == (6,):
        return voigt[VOIGT_INDEX]
    if voigt.shape == (6, 6):
        return voigt[VOIGT_INDEX[:, :, None, None], VOIGT_INDEX[None, None, :, :]]
    if voigt.shape == (3, 6):
        return voigt[:, VOIGT_INDEX]
    raise ValueError(f"no Voigt rule for shape {voigt.shape}")


def cartesian_to_voigt(t: np.ndarray, rank: int | None = None) -> np.ndarray:
    """Voigt form of a Cartesian tensor, or of a batch of them (leading axes kept): (..., 3, 3, 3, 3) -> (..., 6, 6),
    (..., 3, 3, 3) -> (..., 3, 6), (..., 3, 3) -> (..., 6); other ranks unchanged. ``rank``: the tensor's rank,
    needed for a batch (a batch of three 3x3 tensors has the shape of one piezo tensor); default: one tensor, its rank
    from its shape."""
    t = np.asarray(t, dtype=np.float64)
    rank = t.ndim if rank is None else rank
    rows, cols = (np.array(index) for index in zip(*VOIGT_PAIRS))
    if rank == 4:
        return t[..., rows[:, None], cols[:, None], rows[None, :], cols[None, :]]
    if rank == 3:
        return t[..., :, rows, cols]
    if rank == 2:
        return t[..., rows, cols]
    return t


def project_symmetric(arr: np.ndarray, formula: str) -> np.ndarray:
    """Closest tensor (least squares) obeying the index symmetries of ``formula``, exactly symmetric (an
    antisymmetric pair, "ij=-ji", exactly opposite; its diagonal exactly zero)."""
    projector, (canonical, sign) = _symmetric_projector(formula), _canonical_index(formula)
    flat = projector @ np.asarray(arr, dtype=np.float64).reshape(-1)
    return (sign * flat[canonical]).reshape(np.shape(arr))  # equal entries bit for bit, not only to rounding


@lru_cache(maxsize=None)
def change_of_basis(formula: str) -> np.ndarray:
    """(irreps dim, 3^rank) orthonormal map from a Cartesian tensor to its irreps, built once per formula in float64.

    e3nn recomputes it on every ``from_cartesian``/``to_cartesian`` call (seconds for rank 4); projection,
    normalisation and the tensor readouts all share this one copy.
    """
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds the basis in the default dtype
    try:
        q = cartesian_tensor(formula).reduced_tensor_products().change_of_basis.to(torch.float64)
    finally:
        torch.set_default_dtype(previous)
    return q.reshape(q.shape[0], -1).numpy()


@lru_cache(maxsize=None)
def _symmetric_projector(formula: str) -> np.ndarray:
    """(3^rank, 3^rank) orthogonal projector Q^T Q onto the tensors obeying the formula."""
    flat_q = change_of_basis(formula)
    return flat_q.T @ flat_q


@lru_cache(maxsize=None)
def _canonical_index(formula: str) -> tuple[np.ndarray, np.ndarray]:
    """For each flat index, the smallest flat index of its orbit under the formula's signed index permutations
    ("ij=-ji": T_ij = -T_ji), and the sign relating the two (0 where the orbit forces zero, as T_ii = -T_ii)."""
    first, *others = formula.split("=")
    rank = len(first)
    generators = [(tuple(first.index(c) for c in other.lstrip("-")), -1 if other.startswith("-") else 1)
                  for other in others]
    group, frontier = {(tuple(range(rank)), 1)}, list(generators)
    while frontier:  # closure of the generating permutations, each with its sign
        perm, sign = frontier.pop()
        if (perm, sign) not in group:
            group.add((perm, sign))
            frontier += [(tuple(perm[g[i]] for i in range(rank)), sign * s) for g, s in list(group)]
    indices = np.arange(3**rank).reshape((3,) * rank)
    images = np.stack([indices.transpose(perm).reshape(-1) for perm, _ in group])  # (group, 3^rank)
    signs = np.array([sign for _, sign in group])
    canonical = images.min(axis=0)
    reached = images == canonical  # (group, 3^rank): the elements that take each index to its representative
    plus, minus = (reached & (signs[:, None] > 0)).any(axis=0), (reached & (signs[:, None] < 0)).any(axis=0)
    return canonical, np.where(plus & minus, 0.0, np.where(plus, 1.0, -1.0))  # both signs: T = -T, zero


def invariant_mask(formula: str) -> np.ndarray:
    """(irreps dim,) True on the 0e (rotation-invariant) components of the formula's irreps."""
    return np.concatenate([np.full(mul * ir.dim, ir.l == 0 and ir.p == 1) for mul, ir in cartesian_tensor(formula)])


def isotropic_part(t, formula: str):
    """Projection of Cartesian tensors (..., 3, ..., 3) onto their 0e irreps: trace/3 * I for a symmetric rank-2
    tensor, the isotropic stiffness (from K_Voigt and G_Voigt) for an elastic tensor, zero for a piezo tensor."""
    rank = len(formula.split("=")[0])
    q = change_of_basis(formula)
    keep = invariant_mask(formula).astype(np.float64)
    projector = q.T @ (keep[:, None] * q)  # (3^rank, 3^rank), symmetric
    if isinstance(t, torch.Tensor):
        p = torch.as_tensor(projector, dtype=t.dtype, device=t.device)
        flat = t.reshape(*t.shape[:t.ndim - rank], -1)
        return (flat @ p).reshape(t.shape)
    t = np.asarray(t, dtype=np.float64)
    flat = t.reshape(*t.shape[:t.ndim - rank], -1)
    return (flat @ projector).reshape(t.shape)


def anisotropic_part(t, formula: str):
    """The tensor minus its isotropic part: the traceless part of a dielectric tensor."""
    return t - isotropic_part(t, formula)


# -- scalars of tensors (numpy or torch, the same formula for both) --------------------------------------------------
def _einsum(t):
    return torch.einsum if isinstance(t, torch.Tensor) else np.einsum


def voigt_bulk_modulus(c):
    """K_V = C_iijj / 9 of (n, 3, 3, 3, 3) Cartesian stiffness tensors."""
    return _einsum(c)("niijj->n", c) / 9.0


def voigt_shear_modulus(c):
    """G_V = (3 C_ijij - C_iijj) / 30 of (n, 3, 3, 3, 3) Cartesian stiffness tensors."""
    einsum = _einsum(c)
    return (3.0 * einsum("nijij->n", c) - einsum("niijj->n", c)) / 30.0


def cartesian_isotropic_scalar(t, rank: int):
    """The rotation-invariant scalar that summarises (n, 3, ..., 3) Cartesian tensors: trace/3 (rank 2), the Voigt
    bulk modulus (rank 4); None for odd ranks, which have none worth reporting."""
    if rank == 2:
        return _einsum(t)("nii->n", t) / 3.0
    if rank == 4:
        return voigt_bulk_modulus(t)
    return None


def hill_moduli(stiffness):
    """(n, 6, 6) Voigt stiffness (GPa) -> Voigt-Reuss-Hill bulk and shear moduli (n,), GPa (numpy or torch)."""
    c = stiffness
    compliance = torch.linalg.inv(c) if isinstance(c, torch.Tensor) else np.linalg.inv(c)
    diag, off = [0, 1, 2], [(0, 1), (0, 2), (1, 2)]
    c_d, c_o = c[:, diag, diag].sum(1), sum(c[:, i, j] for i, j in off)
    s_d, s_o = compliance[:, diag, diag].sum(1), sum(compliance[:, i, j] for i, j in off)
    c_s, s_s = c[:, [3, 4, 5], [3, 4, 5]].sum(1), compliance[:, [3, 4, 5], [3, 4, 5]].sum(1)
    k_voigt, k_reuss = (c_d + 2 * c_o) / 9, 1 / (s_d + 2 * s_o)
    g_voigt, g_reuss = (c_d - c_o + 3 * c_s) / 15, 15 / (4 * s_d - 4 * s_o + 3 * s_s)
    return (k_voigt + k_reuss) / 2, (g_voigt + g_reuss) / 2


# -- Mandel form --------------------------------------------------------------------------------------------------
def isotropic_weights(shape: tuple) -> np.ndarray:
    """Weights w with sum(w * T) = the isotropic scalar of a user-form tensor T: trace/3 of a 3x3, the Voigt bulk
    modulus (C11+C22+C33+2(C12+C13+C23))/9 of a symmetric 6x6 Voigt stiffness."""
    if tuple(shape) == (3, 3):
        return np.eye(3) / 3.0
    if tuple(shape) == (6, 6):
        weights = np.zeros((6, 6))
        weights[:3, :3] = 1.0 / 9.0
        return weights
    raise ValueError(f"no isotropic scalar of a {tuple(shape)} tensor (3x3 or 6x6 Voigt)")


def isotropic_scalar(values: np.ndarray) -> np.ndarray:
    """(..., 3, 3) or (..., 6, 6) user-form tensors -> (...) isotropic scalars (``isotropic_weights``)."""
    values = np.asarray(values, dtype=np.float64)
    return np.einsum("...ij,ij->...", values, isotropic_weights(values.shape[-2:]))


def to_mandel(c: np.ndarray) -> np.ndarray:
    """(..., 3, 3, 3, 3) stiffness -> (..., 6, 6) Mandel matrix."""
    c = np.asarray(c, dtype=np.float64)
    rows, cols = (np.array(x) for x in zip(*VOIGT_PAIRS))
    voigt = c[..., rows[:, None], cols[:, None], rows[None, :], cols[None, :]]
    return voigt * MANDEL_WEIGHTS[:, None] * MANDEL_WEIGHTS[None, :]


def from_mandel(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    voigt = m / (MANDEL_WEIGHTS[:, None] * MANDEL_WEIGHTS[None, :])
    if voigt.ndim == 2:
        return voigt_to_cartesian(voigt)
    return np.stack([voigt_to_cartesian(v) for v in voigt.reshape(-1, 6, 6)]).reshape(*m.shape[:-2], 3, 3, 3, 3)


def _mandel_index() -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices: Cartesian flat index of each Mandel entry, and Mandel flat index of each Cartesian entry."""
    rows, cols = zip(*VOIGT_PAIRS)
    to_m = [np.ravel_multi_index((rows[a], cols[a], rows[b], cols[b]), (3,) * 4) for a in range(6) for b in range(6)]
    voigt_index = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])
    to_c = [voigt_index[i, j] * 6 + voigt_index[k, l] for i in range(3) for j in range(3) for k in range(3)
            for l in range(3)]
    return torch.as_tensor(to_m), torch.as_tensor(to_c)


_TO_MANDEL, _TO_CARTESIAN = _mandel_index()
_WEIGHTS_66 = torch.as_tensor(np.outer(MANDEL_WEIGHTS, MANDEL_WEIGHTS).reshape(-1))


def to_mandel_torch(c: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3, 3, 3) -> (n, 6, 6), differentiable."""
    flat = c.reshape(len(c), 81)[:, _TO_MANDEL.to(c.device)]
    return (flat * _WEIGHTS_66.to(c)).reshape(len(c), 6, 6)


def from_mandel_torch(m: torch.Tensor) -> torch.Tensor:
    """(n, 6, 6) -> (n, 3, 3, 3, 3), differentiable."""
    voigt = m.reshape(len(m), 36) / _WEIGHTS_66.to(m)
    return voigt[:, _TO_CARTESIAN.to(m.device)].reshape(len(m), 3, 3, 3, 3)


# -- matrix functions of symmetric matrices --------------------------------------------------------------------------
def sym_logm(a: np.ndarray) -> np.ndarray:
    """Matrix log of symmetric positive-definite matrices (..., n, n), via the eigendecomposition (float64)."""
    w, v = np.linalg.eigh(np.asarray(a, dtype=np.float64))
    if (w <= 0).any():
        raise ValueError(f"matrix not positive definite (smallest eigenvalue {w.min():.4g})")
    return (v * np.log(w)[..., None, :]) @ np.swapaxes(v, -1, -2)


def sym_expm(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(np.asarray(a, dtype=np.float64))
    return (v * np.exp(w)[..., None, :]) @ np.swapaxes(v, -1, -2)


def smallest_eigenvalue(t: np.ndarray, formula: str) -> float:
    """Smallest eigenvalue of a rank-2 tensor, or of the Mandel matrix of a stiffness tensor."""
    return float(np.linalg.eigvalsh(to_mandel(t) if np.ndim(t) == 4 else np.asarray(t)).min())


def spd_log(t: np.ndarray, formula: str) -> np.ndarray:
    """Physical tensor -> log-space tensor of the same shape: logm(eps - I) (rank 2) or logm(Mandel(C)) (rank 4)."""
    if np.ndim(t) == 2:
        return sym_logm(np.asarray(t) - np.eye(3))
    if np.ndim(t) == 4:
        return from_mandel(sym_logm(to_mandel(t)))
    raise ValueError(f"spd_log needs a rank-2 or rank-4 tensor ({formula})")


def spd_exp(t: np.ndarray, formula: str) -> np.ndarray:
    """Inverse of ``spd_log`` (numpy, float64)."""
    if np.ndim(t) == 2:
        return np.eye(3) + sym_expm(t)
    return from_mandel(sym_expm(to_mandel(t)))


def spd_exp_torch(log_tensor: torch.Tensor, rank: int) -> torch.Tensor:
    """Batched inverse of ``spd_log``, differentiable: (n, 3, 3) -> I + expm, (n, 3, 3, 3, 3) -> expm in Mandel form.

    ``torch.linalg.matrix_exp`` (Padé with scaling and squaring) has well-defined gradients at repeated eigenvalues,
    where an eigendecomposition's backward divides by eigenvalue gaps (cubic crystals have three equal ones).
    """
    if rank == 2:
        return torch.eye(3, dtype=log_tensor.dtype, device=log_tensor.device) + torch.linalg.matrix_exp(log_tensor)
    if rank == 4:
        return from_mandel_torch(torch.linalg.matrix_exp(to_mandel_torch(log_tensor)))
    raise ValueError(f"spd_exp needs rank 2 or 4, got rank {rank}")
