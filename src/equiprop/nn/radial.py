"""Radial embeddings of edge lengths: Bessel functions times a smooth polynomial cutoff envelope (NequIP)."""

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(n pi r / c) / r for n = 1..num_basis, with trainable frequencies (NequIP, DimeNet)."""

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff, self.prefactor = cutoff, math.sqrt(2.0 / cutoff)
        weights = torch.linspace(1.0, num_basis, num_basis) * math.pi
        self.weights = nn.Parameter(weights) if trainable else nn.Buffer(weights)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (num_edges,) -> (num_edges, num_basis)
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.weights * r / self.cutoff) / r


class PolynomialCutoff(nn.Module):
    """Envelope that goes smoothly (p-times differentiable) from 1 at r=0 to 0 at r=cutoff."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = cutoff, float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (num_edges,) -> (num_edges,)
        x, p = r / self.cutoff, self.p
        out = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x**p + p * (p + 2.0) * x ** (p + 1.0)
               - p * (p + 1.0) / 2.0 * x ** (p + 2.0))
        return out * (x < 1.0)


class RadialEmbeddingBlock(nn.Module):
    """Edge lengths -> (num_edges, num_basis) Bessel basis times the cutoff envelope (zero beyond the cutoff)."""

    def __init__(self, cutoff: float, num_basis: int = 8, polynomial_p: int = 6):
        super().__init__()
        self.basis = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, polynomial_p)
        self.num_basis = num_basis

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.basis(lengths) * self.envelope(lengths).unsqueeze(-1)
