"""Fine-tuning that keeps the backbone a potential: its own energies and forces stay close to the pretrained
potential's on the training crystals while its layers learn the properties (``model.potential_replay``).

Plain property fine-tuning moves the backbone's weights wherever the property loss pulls them, and what made them a
good representation (a smooth, physical energy surface) can collapse. Training the properties jointly with the
potential's own energies and forces (a replay of its own labels, as MACE's multi-head fine-tuning replays its
pretraining data) is reported to prevent that collapse. The labels here are the frozen pretrained potential's, on a
rattled copy of each training crystal (Gaussian displacements of ``replay_rattle`` Å, drawn once per structure from
its content key: a relaxed crystal's forces are zero by symmetry and would constrain nothing), computed once and
kept in memory; each step replays a few of its structures (``replay_structures``). The fine-tuned backbone's
energy readout (frozen) and its moving layers give energy and forces (autograd) on the same rattled copies, and the
loss is

    ((E - E_0) / N / 10 meV)^2 averaged over structures + |F - F_0|^2 / mean |F_0|^2 over atoms,

each term O(1) when the drift is 10 meV/atom or as large as the rattle's forces.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import atoms_per_graph
from equiprop.nn.backbones import build_backbone
from equiprop.nn.backbones.base import Backbone
from equiprop.nn.feature_cache import structure_keys
from equiprop.nn.gradients import differentiable_geometry, energy_derivatives

ENERGY_SCALE = 0.01  # eV/atom: the energy drift that costs as much as forces off by their own size


class PotentialReplay(nn.Module):
    """The replay loss of a fine-tuned ``FoundationEncoder``'s first backbone against its frozen pretrained copy."""

    def __init__(self, encoder, rattle: float = 0.05, structures: int = 8):
        super().__init__()
        backbones = getattr(encoder, "backbones", None)
        if backbones is None or getattr(encoder, "transfer", None) != "finetune":
            raise ConfigError("model.potential_replay keeps a fine-tuned backbone close to its pretrained potential: "
                              "it needs model.encoder FoundationEncoder with transfer: finetune")
        backbone = backbones[0]
        if not backbone.uses_equiprop_graph or type(backbone).atomic_energies is Backbone.atomic_energies:
            raise ConfigError(f"model.potential_replay: backbone {backbone.info.name} gives no energies on "
                              "equiprop's graphs (the SevenNet models do)")
        if not rattle > 0:
            raise ConfigError(f"model.replay_rattle must be > 0 Å, got {rattle}")
        if structures < 1:
            raise ConfigError(f"model.replay_structures must be >= 1, got {structures}")
        self.rattle, self.name, self.structures = float(rattle), backbone.info.name, int(structures)
        self._reference: list = []  # the frozen pretrained backbone, outside the state dict: never trained, never saved
        self.targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # structure key -> (E_0 / N, F_0) on CPU

    def reference(self, like: torch.Tensor):
        if not self._reference:
            self._reference.append(build_backbone(self.name).requires_grad_(False).eval())
        return self._reference[0].to(device=like.device, dtype=like.dtype)

    def forward(self, backbone, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy term, forces term) of ``batch`` for the fine-tuned ``backbone``, differentiable in its weights:
        over its first ``structures`` structures (a shuffled training batch: different ones every step), since the
        forces' double backward through every layer of the backbone costs ~30x a step on cached features."""
        if batch.num_graphs > self.structures:
            batch = Batch.from_data_list(batch.index_select(list(range(self.structures))))
        names = structure_keys(batch)
        counts = atoms_per_graph(batch).tolist()
        displacement = torch.cat([self._displacement(name, n) for name, n in zip(names, counts)]).to(
            batch[keys.POSITIONS])
        missing = [g for g, name in enumerate(names) if name not in self.targets]
        if missing:
            energy, forces = self._energy_and_forces(self.reference(batch[keys.POSITIONS]), batch, displacement,
                                                     create_graph=False)
            per_atom = (energy / atoms_per_graph(batch)).detach().cpu()
            rows = forces.detach().cpu().split(counts)
            for g in missing:
                self.targets[names[g]] = (per_atom[g], rows[g])
        energy, forces = self._energy_and_forces(backbone, batch, displacement, create_graph=True)
        target_energy = torch.stack([self.targets[n][0] for n in names]).to(energy)
        target_forces = torch.cat([self.targets[n][1] for n in names]).to(forces)
        energy_term = (((energy / atoms_per_graph(batch) - target_energy) / ENERGY_SCALE) ** 2).mean()
        forces_term = ((forces - target_forces) ** 2).sum(-1).mean() / (target_forces ** 2).sum(-1).mean().clamp(
            min=1e-6)
        return energy_term, forces_term

    def _displacement(self, name: str, num_atoms: int) -> torch.Tensor:
        """(num_atoms, 3) Å, the same every epoch for a structure (seeded by its content key)."""
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        return self.rattle * torch.randn(num_atoms, 3, generator=generator, dtype=torch.float64)

    @staticmethod
    def _energy_and_forces(backbone, batch, displacement: torch.Tensor, create_graph: bool):
        """(num_graphs,) eV and (num_nodes, 3) eV/Å of ``backbone`` on the rattled copies (same edges and images)."""
        with torch.enable_grad():
            data, positions, _ = differentiable_geometry(batch, stress=False)
            data[keys.POSITIONS] = positions + displacement
            energy = backbone.energy(data)  # the potential's own total energy, through its readout
            forces, _ = energy_derivatives(energy, data, positions, None, create_graph)
        return energy, forces
