"""A pretrained potential on its own, below the physics (``PotentialPhysics``: zero-shot energies, stresses and
phonons for descriptors and priors): a frozen backbone (``equiprop.nn.backbones``) that has per-atom energies.
"""

from __future__ import annotations

import torch

from equiprop.data.errors import ConfigError
from equiprop.nn.backbones import build_backbone


class PretrainedPotential(torch.nn.Module):
    """A frozen pretrained backbone as a potential: never trained, always in eval mode. Its per-atom energies run
    on our graphs (edge vectors in Å), so the backbone must use equiprop's graph and give energies."""

    def __init__(self, name: str):
        super().__init__()
        self.backbone = build_backbone(name)
        if not self.backbone.uses_equiprop_graph or not self.backbone.splittable:
            raise ConfigError(f"backbone {name}: the potential's physics needs a backbone that runs on equiprop's "
                              "graphs layer by layer (the SevenNet models)")
        self.model_name, self.cutoff = name, self.backbone.cutoff
        self.requires_grad_(False)
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    def species_index(self, data) -> torch.Tensor:
        return self.backbone.species_index(data)

    def atomic_energies_of(self, data, vectors: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.backbone.atomic_energies_of(data, vectors, species)

    def energy(self, data) -> torch.Tensor:  # -> (num_graphs,) total energy, eV: the potential's own prediction
        return self.backbone.energy(data)
