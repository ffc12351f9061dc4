"""Loading and running a pretrained universal interatomic potential (SevenNet, e3nn), below its two users:
``FoundationEncoder`` (its layers as the shared encoder) and ``PotentialPhysics`` (its zero-shot energies, stresses and
phonons for descriptors and priors).

``PotentialRunner`` is a mixin for an ``nn.Module`` that holds the loaded model as ``self.potential`` (so the encoder's
state-dict keys stay ``potential.*``); ``PretrainedPotential`` is the frozen module the physics runs.
"""

from __future__ import annotations

import copy
import os
import warnings
from functools import lru_cache
from typing import Literal, get_args

import torch

from equiprop.data import keys
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import edge_vectors

FoundationModel = Literal["7net-0", "7net-l3i5"]
FOUNDATION_MODELS = get_args(FoundationModel)
READOUT_MODULES = ("reduce_input_to_hidden", "reduce_hidden_to_energy", "rescale_atomic_energy")


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    from equiprop.data.dataset import file_digest

    return file_digest(path)


def file_sha256(path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    stat = os.stat(path)
    return _file_sha256(str(path), stat.st_size, stat.st_mtime)


def load_potential(name: str, pretrained: bool = True):
    """A SevenNet model from the installed ``sevenn`` package (its checkpoint ships in the wheel: no download)."""
    if name not in FOUNDATION_MODELS:
        raise ConfigError(f"FoundationEncoder: model must be one of {FOUNDATION_MODELS}, got {name!r}")
    try:
        from sevenn.util import load_checkpoint, pretrained_name_to_path
    except ImportError:
        raise ConfigError("FoundationEncoder needs the optional 'sevenn' package: pip install 'equiprop[foundation]'"
                          ) from None
    from pathlib import Path

    path = pretrained_name_to_path(name)  # resolves inside the installed package before any download is tried
    if not Path(path).is_file():
        raise ConfigError(f"FoundationEncoder: sevenn has no local checkpoint for {name!r} at {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = load_checkpoint(path)
        if pretrained:
            model = checkpoint.build_model()
        else:
            from sevenn.model_build import build_E3_equivariant_model

            model = build_E3_equivariant_model(copy.deepcopy(checkpoint.config))
    return model, checkpoint.config


class PotentialRunner:
    """Runs the SevenNet model ``self.potential`` of an ``nn.Module``: species, edge embedding, layers, energies.
    ``load`` sets ``potential``, ``model_name``, ``cutoff``, ``num_layers`` and ``layer_names``."""

    def load(self, name: str, pretrained: bool = True, cutoff: float | None = None) -> dict:
        """Loads ``name`` (checking ``cutoff`` against the potential's own when given); returns sevenn's config."""
        self.potential, config = load_potential(name, pretrained=pretrained)
        if cutoff is not None and abs(float(cutoff) - float(config["cutoff"])) > 1e-9:
            raise ConfigError(f"FoundationEncoder {name}: cutoff must be the potential's own {config['cutoff']} Å, "
                              f"got {cutoff} (set data.cutoff: {config['cutoff']})")
        self.model_name, self.cutoff = name, float(config["cutoff"] if cutoff is None else cutoff)
        self.num_layers = int(config["num_convolution_layer"])
        self.layer_names = [[n for n in self.potential._modules if n.startswith(f"{k}_")]
                            for k in range(self.num_layers)]
        return config

    # -- running the potential (after ``load``) --------------------------------------------------------------------------------------
    def species_index(self, data) -> torch.Tensor:
        numbers = data[keys.ATOMIC_NUMBERS]
        index = self.potential.z_to_onehot_tensor.to(numbers.device)[numbers]
        if bool((index < 0).any()):
            from ase.data import chemical_symbols

            unseen = sorted({chemical_symbols[int(z)] for z in numbers[index < 0]})
            graphs = data[keys.BATCH][index < 0] if keys.BATCH in data and data[keys.BATCH] is not None else [0]
            ids = data[keys.STRUCTURE_ID]
            ids = [ids[int(g)] for g in graphs] if isinstance(ids, (list, tuple)) else [ids]
            raise DataError(", ".join(sorted(set(map(str, ids)))), f"elements {unseen} are not among the "
                            f"{len(self.potential.type_map)} species {self.model_name} was trained on",
                            "element unknown to the potential")
        return index

    def graph_dict(self, data, vectors: torch.Tensor) -> dict:
        import sevenn._keys as KEY

        # a graph whose radius was extended (graph.extended_radius) has edges beyond the potential's cutoff, where
        # sevenn's envelope is not zero: the potential sees only the neighbours it was trained with
        within = vectors.detach().norm(dim=-1) < self.cutoff
        d = {KEY.EDGE_VEC: vectors[within], KEY.EDGE_IDX: data[keys.EDGE_INDEX][:, within],
             KEY.ATOMIC_NUMBERS: data[keys.ATOMIC_NUMBERS]}
        d[KEY.BATCH] = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else torch.zeros(
            data.num_nodes, dtype=torch.long, device=vectors.device)
        return self.potential._modules["edge_embedding"](d)

    def embed(self, d: dict, species: torch.Tensor) -> torch.Tensor:
        import sevenn._keys as KEY

        d[KEY.NODE_FEATURE] = species
        d[KEY.ATOM_TYPE] = species
        d = self.potential._modules["onehot_idx_to_onehot"](d)
        d[KEY.NODE_FEATURE] = d[KEY.NODE_FEATURE].to(self.potential_dtype)  # sevenn's one-hot is float32
        return self.potential._modules["onehot_to_feature_x"](d)[KEY.NODE_FEATURE]

    def run_layers(self, d: dict, x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
        """Outputs of layers [start, stop) given the input x of layer ``start``."""
        outputs = []
        d["x"] = x
        for k in range(start, stop):
            for name in self.layer_names[k]:
                d = self.potential._modules[name](d)
            outputs.append(d["x"])
        return outputs

    def atomic_energies(self, d: dict) -> torch.Tensor:  # -> (num_nodes,) eV, after the last layer ran on d
        import sevenn._keys as KEY

        for name in READOUT_MODULES:
            d = self.potential._modules[name](d)
        return d[KEY.ATOMIC_ENERGY].reshape(-1)

    def energy(self, data) -> torch.Tensor:  # -> (num_graphs,) total energy, eV: SevenNet's own prediction
        from torch_geometric.utils import scatter

        d = self.graph_dict(data, edge_vectors(data))
        self.run_layers(d, self.embed(d, self.species_index(data)), 0, self.num_layers)
        batch = d["batch"]
        return scatter(self.atomic_energies(d), batch, dim=0, dim_size=int(batch.max()) + 1, reduce="sum")

    @property
    def potential_dtype(self) -> torch.dtype:
        return next(self.potential.parameters()).dtype


class PretrainedPotential(PotentialRunner, torch.nn.Module):
    """The frozen pretrained potential on its own (``nn.potential_physics``): never trained, always in eval mode."""

    def __init__(self, name: str):
        super().__init__()
        self.load(name)
        self.requires_grad_(False)
        self.eval()
