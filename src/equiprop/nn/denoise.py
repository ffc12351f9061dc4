"""Denoising as an auxiliary task: from a noised structure (``data.augment``: ``keys.NOISE``), predict the
displacement each atom was given, as in Noisy Nodes (Godwin et al. 2022) and denoising pretraining (Zaidi et al.
2023). The encoder then has to learn what an equilibrium environment looks like, from structures it has labels for
and from their rattled copies, which is what scarce tasks lack.

The displacement is a polar vector per atom (1x1o): the readout mixes the encoder's 1o channels with gates from its
invariant channels, as ``TensorReadoutBlock`` builds each l>0 output (``nn/heads.py``), so it is O(3)-equivariant.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.graph import graph_index
from equiprop.data.errors import ConfigError
from equiprop.data.precision import upcast
from equiprop.nn.heads import _channel_index

# what the encoder's last layer must carry for this readout (``EquivariantEncoder.fit_output``)
IRREPS_READ = {o3.Irrep("0e"), o3.Irrep("1o")}


class DenoisingReadoutBlock(nn.Module):
    """Node features -> each atom's displacement, Å: (num_nodes, 3) Cartesian (e3nn's 1o basis is x, y, z).

    ``sum_k g_k(h) W_k v``: ``v`` the atom's 1o channels, ``W_k`` channel mixings (plain ``nn.Linear``, no bias:
    a bias would be a fixed direction), ``g`` gates from an MLP of the atom's 0e channels.
    """

    def __init__(self, irreps_in: o3.Irreps, hidden: int = 64, num_gates: int = 4):
        super().__init__()
        self.irreps_in, self.irreps_out, self.num_gates = o3.Irreps(irreps_in), o3.Irreps("1x1o"), num_gates
        scalars, vectors = _channel_index(self.irreps_in, o3.Irrep("0e")), _channel_index(self.irreps_in,
                                                                                           o3.Irrep("1o"))
        if not len(scalars) or not len(vectors):
            raise ConfigError(f"model.denoise_weight: the denoising readout needs 0e and 1o features, the encoder "
                              f"gives {self.irreps_in} (an invariant encoder has no 1o; use an equivariant one)")
        self.register_buffer("scalar_index", scalars.reshape(-1), persistent=False)
        self.register_buffer("vector_index", vectors, persistent=False)  # (channels, 3)
        self.invariant = nn.Sequential(nn.Linear(len(scalars), hidden), nn.SiLU())
        self.gates = nn.Linear(hidden, num_gates)
        self.mix = nn.Linear(len(vectors), num_gates, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim) -> (num_nodes, 3) displacement, Å
        x = upcast(x)  # float32 under autocast, like every readout
        gates = self.gates(self.invariant(x[:, self.scalar_index])).unsqueeze(1)  # (num_nodes, 1, num_gates)
        candidates = self.mix(x[:, self.vector_index].transpose(1, 2))  # (num_nodes, 3, num_gates)
        return (candidates * gates).sum(-1)


def denoising_loss(prediction: torch.Tensor, data) -> torch.Tensor:
    """Mean squared error of the predicted displacements against the batch's ``keys.NOISE``, Å^2 (per Cartesian
    component and atom). Each structure's mean is removed from the prediction, as from the noise: a rigid
    translation of all atoms is invisible to the model (edges do not change), so it is not asked to predict one.
    Predicting no displacement costs about noise^2 (for noise std ``noise``, Å)."""
    noise, index = data[keys.NOISE], graph_index(data)
    num_graphs = int(data.num_graphs) if getattr(data, "num_graphs", None) else 1
    centred = prediction - scatter(prediction, index, dim=0, dim_size=num_graphs, reduce="mean")[index]
    return (upcast(centred) - noise.to(centred.dtype)).pow(2).mean()
