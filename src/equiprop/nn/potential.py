"""A pretrained potential on its own, below the physics (``PotentialPhysics``: zero-shot energies, stresses and
phonons for descriptors and priors): a frozen backbone (``equiprop.nn.backbones``) that has per-atom energies.
"""

from __future__ import annotations

import torch

from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors
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
        """(num_nodes,) eV of the graph ``data`` with these edge vectors (Å): every layer, then the readout."""
        b = self.backbone
        state, x = b.begin(data, vectors, species)
        b.run_layers(state, x, 0, b.num_layers)
        energies = b.atomic_energies(state)
        if energies is None:
            raise ConfigError(f"backbone {self.model_name} gives no per-atom energies")
        return energies

    def energy(self, data) -> torch.Tensor:  # -> (num_graphs,) total energy, eV: the potential's own prediction
        from torch_geometric.utils import scatter

        from equiprop.data import keys

        atomic = self.atomic_energies_of(data, edge_vectors(data), self.species_index(data))
        batch = data[keys.BATCH]
        return scatter(atomic, batch, dim=0, dim_size=int(batch.max()) + 1, reduce="sum")
