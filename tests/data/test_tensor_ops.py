"""Voigt and Hill moduli of stiffness tensors (``data.tensor_ops``) against hand-computed values, from torch and
numpy alike; the isotropic scalar of rank-2 tensors."""

import numpy as np
import pytest
import torch
from e3nn import o3

from equiprop.data.symmetry import rotate_tensor
from equiprop.data.tensor_ops import cartesian_isotropic_scalar, cartesian_to_voigt, hill_moduli, voigt_bulk_modulus, \
    voigt_shear_modulus


def _isotropic_stiffness(k: float, g: float) -> torch.Tensor:
    """C_ijkl = lambda d_ij d_kl + G (d_ik d_jl + d_il d_jk) with lambda = K - 2G/3: (1, 3, 3, 3, 3)."""
    d = torch.eye(3, dtype=torch.float64)
    lam = k - 2.0 * g / 3.0
    c = lam * torch.einsum("ij,kl->ijkl", d, d) + g * (torch.einsum("ik,jl->ijkl", d, d)
                                                       + torch.einsum("il,jk->ijkl", d, d))
    return c[None]


def _cubic_stiffness(c11: float, c12: float, c44: float) -> torch.Tensor:
    """Cubic crystal in its cube frame, written component by component from the Voigt constants: (1, 3, 3, 3, 3)."""
    c = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            if i == j:
                c[i, i, i, i] = c11
            else:
                c[i, i, j, j] = c12
                c[i, j, i, j] = c[i, j, j, i] = c44
    return c[None]


@pytest.mark.parametrize("k, g", [(160.0, 80.0), (37.5, 12.25), (443.0, 535.0)])
def test_isotropic_stiffness_gives_back_its_moduli(k, g):
    c = _isotropic_stiffness(k, g)
    # the 6x6 Voigt matrix of this tensor: C11 = K + 4G/3, C12 = K - 2G/3, C44 = G (a check of the construction)
    assert float(c[0, 0, 0, 0, 0]) == pytest.approx(k + 4 * g / 3)
    assert float(c[0, 0, 0, 1, 1]) == pytest.approx(k - 2 * g / 3)
    assert float(c[0, 1, 2, 1, 2]) == pytest.approx(g)
    assert float(voigt_bulk_modulus(c)) == pytest.approx(k, rel=1e-12)
    assert float(voigt_shear_modulus(c)) == pytest.approx(g, rel=1e-12)


@pytest.mark.parametrize("c11, c12, c44", [
    (168.4, 121.4, 75.4),  # copper (GPa)
    (1079.0, 124.0, 578.0),  # diamond
    (100.0, 60.0, 10.0),  # strongly anisotropic: G_V far from (C11 - C12) / 2 and from C44
])
def test_cubic_crystal_voigt_moduli(c11, c12, c44):
    c = _cubic_stiffness(c11, c12, c44)
    k_v, g_v = (c11 + 2 * c12) / 3, (c11 - c12 + 3 * c44) / 5
    assert float(voigt_bulk_modulus(c)) == pytest.approx(k_v, rel=1e-12)
    assert float(voigt_shear_modulus(c)) == pytest.approx(g_v, rel=1e-12)
    # Voigt averages are rotation invariants: the same crystal in a random frame gives the same moduli
    torch.manual_seed(0)
    q = o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = torch.as_tensor(rotate_tensor(c[0].numpy(), q))[None]
    assert not torch.allclose(rotated, c)
    assert float(voigt_bulk_modulus(rotated)) == pytest.approx(k_v, rel=1e-10)
    assert float(voigt_shear_modulus(rotated)) == pytest.approx(g_v, rel=1e-10)


def test_moduli_of_a_batch_are_per_tensor():
    c = torch.cat([_cubic_stiffness(168.4, 121.4, 75.4), _isotropic_stiffness(160.0, 80.0)])
    np.testing.assert_allclose(voigt_bulk_modulus(c).numpy(), [(168.4 + 2 * 121.4) / 3, 160.0], rtol=1e-12)
    np.testing.assert_allclose(voigt_shear_modulus(c).numpy(), [(168.4 - 121.4 + 3 * 75.4) / 5, 80.0], rtol=1e-12)
    assert float(cartesian_isotropic_scalar(c, rank=4)[1]) == pytest.approx(160.0)


def test_isotropic_scalar_of_rank_two_is_the_mean_eigenvalue():
    eps = torch.tensor([[[2.0, 0.3, 0.0], [0.3, 4.0, 0.1], [0.0, 0.1, 9.0]]], dtype=torch.float64)
    assert float(cartesian_isotropic_scalar(eps, rank=2)) == pytest.approx(5.0)
    assert float(cartesian_isotropic_scalar(eps, rank=2)) == pytest.approx(float(torch.linalg.eigvalsh(eps[0]).mean()))
    assert cartesian_isotropic_scalar(torch.zeros(1, 3, 3, 3), rank=3) is None  # odd rank: no invariant summary


def test_numpy_and_torch_give_the_same_moduli():
    """One definition for both: the scoreboard (numpy) and the model (torch) report the same numbers."""
    c = torch.cat([_cubic_stiffness(168.4, 121.4, 75.4), _isotropic_stiffness(160.0, 80.0)])
    for fn in (voigt_bulk_modulus, voigt_shear_modulus):
        np.testing.assert_array_equal(fn(c).numpy(), fn(c.numpy()))
    voigt = torch.as_tensor(np.stack([cartesian_to_voigt(t) for t in c.numpy()]))
    for from_torch, from_numpy in zip(hill_moduli(voigt), hill_moduli(voigt.numpy())):
        np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-12)
    bulk, shear = hill_moduli(voigt)
    assert float(bulk[1]) == pytest.approx(160.0) and float(shear[1]) == pytest.approx(80.0)


@pytest.mark.parametrize("formula, irreps", [("ij=-ji", "1x1e"), ("ijk=-jik=-ikj", "1x0o"), ("ij=ji", "1x0e+1x2e"),
                                             ("ijkl=jikl=klij", "2x0e+2x2e+1x4e")])
def test_projection_obeys_signed_index_symmetries_exactly(formula, irreps):
    """An antisymmetric formula (an axial vector as "ij=-ji", the Levi-Civita symbol's "ijk=-jik=-ikj") projects to
    the least-squares closest tensor with opposite entries exactly opposite and forced zeros exactly zero."""
    from equiprop.data.tensor_ops import cartesian_tensor, change_of_basis, project_symmetric

    assert str(cartesian_tensor(formula)) == irreps
    rank = len(formula.split("=")[0])
    raw = np.random.default_rng(0).normal(size=(3,) * rank)
    projected = project_symmetric(raw, formula)
    q = change_of_basis(formula)
    np.testing.assert_allclose(projected.reshape(-1), q.T @ (q @ raw.reshape(-1)), atol=1e-12)  # least squares
    first, *others = formula.split("=")
    for other in others:
        sign = -1.0 if other.startswith("-") else 1.0
        permuted = np.einsum(f"{first}->{other.lstrip('-')}", projected)
        assert np.array_equal(projected, sign * permuted)  # bit for bit, not only to rounding
    if formula == "ij=-ji":
        assert np.array_equal(np.diag(projected), np.zeros(3)) and np.allclose(projected, (raw - raw.T) / 2)
