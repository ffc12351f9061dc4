"""How ``FoundationEncoder`` computes one backbone's features: one pass over the crystal x, or, for a backbone
without parity, a pass over x and one over its inversion Ix, symmetrised into even and odd parts (the parity section
of ``equiprop.nn.foundation``). A mixin: it reads the encoder's backbones, layer choices and cache points."""

from __future__ import annotations

import torch

from equiprop.data import keys
from equiprop.data.graph import edge_vectors, graph_index
from equiprop.data.symmetry import inversion_partners


class PassesMixin:
    def _pass(self, i: int, data, vectors, species, prefix: list[torch.Tensor],
              record: bool = False) -> list[torch.Tensor]:
        """[scalars, l>0 features] of backbone i over one pass (edge vectors ``vectors``), the first layers given.
        ``record``: a whole pass over the crystal itself, whose energies ``record_energies`` may keep."""
        b = self.backbones[i]
        outputs, state = b.layer_features(data, vectors, species, prefix)
        scalars = [outputs[k][:, :b.scalar_count(k)] for k in self.scalar_layers[i]]
        keep = record and i == self.energy_backbone  # set for frozen encoders only: always a whole pass
        energies = b.atomic_energies(state) if keep or (self.energy_feature and i == 0) else None
        if keep:
            self.keep_energies(data, energies)
        if self.energy_feature and i == 0:
            scalars.append(energies.unsqueeze(-1))
        tensors = [outputs[k][:, b.scalar_count(k):] for k in self.tensor_layers[i]]
        rows = scalars[0].shape[0]
        return [torch.cat(scalars, dim=1),
                torch.cat(tensors, dim=1) if tensors else scalars[0].new_zeros((rows, 0))]

    def _features(self, i: int, data, prefixes: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Backbone i's rows [scalars, even l>0, odd l>0] (odd only when symmetrised)."""
        b = self.backbones[i]
        vectors, species = edge_vectors(data), b.species_index(data)
        plus = self._pass(i, data, vectors, species, prefixes[0] if prefixes else [], record=True)
        if not self._symmetrised(b):
            return torch.cat(plus, dim=1)
        if prefixes or not self.inversion_shortcut:
            minus = self._pass(i, data, -vectors, species, prefixes[1] if prefixes else [])
        else:
            minus = self._inverted_pass(i, data, vectors, species, *plus)
        (s_plus, t_plus), (s_minus, t_minus) = plus, minus
        return torch.cat([(s_plus + s_minus) / 2, (t_plus + t_minus) / 2, (t_plus - t_minus) / 2], dim=1)

    def _prefixes(self, i: int, data) -> torch.Tensor:  # -> (num_nodes, passes x prefix dims), frozen layers' outputs
        b = self.backbones[i]
        vectors, species = edge_vectors(data), b.species_index(data)
        signs = (1.0, -1.0) if self._symmetrised(b) else (1.0,)
        outputs = []
        for sign in signs:
            state, x = b.begin(data, sign * vectors, species)
            outputs += b.run_layers(state, x, 0, self.cache_points[i])
        return torch.cat(outputs, dim=1).detach()

    def _inverted_pass(self, i: int, data, vectors, species, scalars, tensors) -> list[torch.Tensor]:
        """[scalars, tensors] of backbone i on the inverted crystal. For a centrosymmetric crystal atom j of the
        inverted crystal sees exactly the neighbours atom p(j) sees in the crystal, so its features are f(x)[p]
        (no second pass); the backbone runs only on the structures without an inversion centre."""
        partner = inversion_partners(data)
        centred = partner >= 0
        out = [scalars[partner.clamp(min=0)], tensors[partner.clamp(min=0)]]
        if bool(centred.all()):
            return out
        keep = ~centred  # atoms of the structures that need the inverted pass
        index = torch.cumsum(keep.long(), 0) - 1  # old node -> new node among the kept atoms
        edges = keep[data[keys.EDGE_INDEX][0]]
        batch = graph_index(data)
        sub = {keys.EDGE_INDEX: index[data[keys.EDGE_INDEX][:, edges]],
               keys.ATOMIC_NUMBERS: data[keys.ATOMIC_NUMBERS][keep],
               keys.BATCH: torch.unique(batch[keep], return_inverse=True)[1]}
        minus = self._pass(i, sub, -vectors[edges], species[keep], [])
        for part, value in zip(out, minus):
            part[keep] = value
        return out
