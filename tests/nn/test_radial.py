"""Radial embeddings (``equiprop.nn.radial``) against their formulas: NequIP's Bessel basis and polynomial envelope,
which must reach zero at the cutoff with its first p-1 derivatives, so that an atom crossing the cutoff moves no
prediction discontinuously."""

import math

import pytest
import torch

from equiprop.nn.radial import BesselBasis, PolynomialCutoff, RadialEmbeddingBlock


def test_bessel_basis_is_its_formula():
    basis = BesselBasis(cutoff=5.0, num_basis=4, trainable=False)
    r = torch.tensor([0.5, 2.0, 4.9], dtype=torch.float64)
    expected = torch.stack([math.sqrt(2 / 5.0) * torch.sin(n * math.pi * r / 5.0) / r for n in range(1, 5)], dim=1)
    torch.testing.assert_close(basis.double()(r), expected)
    assert not any(p.requires_grad for p in basis.parameters())
    assert BesselBasis(5.0, 4).weights.requires_grad  # trainable frequencies by default (NequIP)


@pytest.mark.parametrize("p", [2, 6])
def test_envelope_is_one_at_zero_and_zero_at_the_cutoff_with_its_derivatives(p):
    envelope = PolynomialCutoff(cutoff=4.0, p=p)
    assert float(envelope(torch.tensor([0.0]))) == 1.0
    r = torch.tensor([4.0 - 1e-4], dtype=torch.float64, requires_grad=True)
    value = envelope(r)
    (first,) = torch.autograd.grad(value.sum(), r, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), r)
    assert abs(float(value)) < 1e-9 and abs(float(first)) < 1e-5 and abs(float(second)) < 1e-2
    beyond = torch.tensor([4.0, 4.5, 9.0])
    assert envelope(beyond).abs().max() == 0.0  # nothing beyond the cutoff, not a polynomial's wrong-signed tail


def test_the_block_is_the_basis_times_the_envelope_and_zero_past_the_cutoff():
    block = RadialEmbeddingBlock(cutoff=3.0, num_basis=6)
    lengths = torch.tensor([0.8, 1.5, 2.99, 3.2])
    out = block(lengths)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out, block.basis(lengths) * block.envelope(lengths)[:, None])
    assert out[-1].abs().max() == 0.0
