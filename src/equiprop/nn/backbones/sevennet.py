"""The SevenNet family (NequIP-style e3nn potentials from the ``sevenn`` wheel, MIT) as backbones: the shared runner.
Each model is a file of its own (``sevennet_0.py``, ``sevennet_l3i5.py``, ``sevennet_mf0.py``) naming its weights.

SevenNet is trained without parity (``is_parity: False``): its "1e" features mix vectors and pseudovectors, so the
encoder symmetrises them over the inversion (``FoundationEncoder``, parity). Its layers are modules named ``<k>_*``;
layer k's output is the node feature after them; the energy readout follows the last layer.
"""

from __future__ import annotations

import copy
import warnings
from typing import ClassVar

import torch
from e3nn import o3

from equiprop.data import keys
from equiprop.data.errors import ConfigError, DataError
from equiprop.nn.backbones.base import Backbone

READOUT_MODULES = ("reduce_input_to_hidden", "reduce_hidden_to_energy", "rescale_atomic_energy")
SEVENNET_CITATION = ("Park et al., Scalable parallel algorithm for graph neural network interatomic potentials in "
                     "molecular dynamics simulations, J. Chem. Theory Comput. 20, 4857 (2024)")


class SevenNetBackbone(Backbone):
    """One SevenNet model; subclasses set ``info`` and, for a multi-fidelity model, ``modality``."""

    parity: ClassVar[bool] = False
    splittable: ClassVar[bool] = True
    modality: ClassVar[str | None] = None  # the fidelity a multi-fidelity model runs in

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.model, config = self._load(pretrained)
        self.cutoff = float(config["cutoff"])
        self.num_layers = int(config["num_convolution_layer"])
        self.layer_irreps = [o3.Irreps(ir) for ir in config["irreps_manual"][1:]]
        self.layer_names = [[n for n in self.model._modules if n.startswith(f"{k}_")] for k in range(self.num_layers)]
        modal_map = config.get("_modal_map") or {}
        if self.modality is not None and self.modality not in modal_map:
            raise ConfigError(f"backbone {self.info.name}: no fidelity {self.modality!r} (has {sorted(modal_map)})")
        self.modal_index = modal_map.get(self.modality)

    def _load(self, pretrained: bool):
        path = self.weights_path()
        from sevenn.util import load_checkpoint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = load_checkpoint(str(path))
            if pretrained:
                return checkpoint.build_model(), checkpoint.config
            from sevenn.model_build import build_E3_equivariant_model

            return build_E3_equivariant_model(copy.deepcopy(checkpoint.config)), checkpoint.config

    def pretrained_source(self) -> dict:
        import sevenn

        return {**super().pretrained_source(), "version": sevenn.__version__}

    def layer_modules(self) -> list[torch.nn.Module]:
        return [torch.nn.ModuleList([self.model._modules[n] for n in names]) for names in self.layer_names]

    def frozen_state(self, point: int) -> dict[str, torch.Tensor]:
        # SevenNet's own names (layer k's modules are "<k>_*"): the digest of caches written before backbones
        return {n: t for n, t in self.model.state_dict().items()
                if not (n.split("_", 1)[0].isdigit() and int(n.split("_", 1)[0]) >= point)}

    def readout_modules(self) -> list[torch.nn.Module]:
        return [self.model._modules[n] for n in READOUT_MODULES]

    def species_index(self, data) -> torch.Tensor:
        numbers = data[keys.ATOMIC_NUMBERS]
        index = self.model.z_to_onehot_tensor.to(numbers.device)[numbers]
        if bool((index < 0).any()):
            from ase.data import chemical_symbols

            unseen = sorted({chemical_symbols[int(z)] for z in numbers[index < 0]})
            graphs = data[keys.BATCH][index < 0] if keys.BATCH in data and data[keys.BATCH] is not None else [0]
            ids = data[keys.STRUCTURE_ID]
            ids = [ids[int(g)] for g in graphs] if isinstance(ids, (list, tuple)) else [ids]
            raise DataError(", ".join(sorted(set(map(str, ids)))), f"elements {unseen} are not among the "
                            f"{len(self.model.type_map)} species {self.info.name} was trained on",
                            "element unknown to the potential")
        return index

    def begin(self, data, vectors: torch.Tensor, species: torch.Tensor) -> tuple[dict, torch.Tensor]:
        import sevenn._keys as KEY

        # a graph whose radius was extended (graph.extended_radius) has edges beyond the potential's cutoff, where
        # sevenn's envelope is not zero: the potential sees only the neighbours it was trained with
        within = vectors.detach().norm(dim=-1) < self.cutoff
        d = {KEY.EDGE_VEC: vectors[within], KEY.EDGE_IDX: data[keys.EDGE_INDEX][:, within],
             KEY.ATOMIC_NUMBERS: data[keys.ATOMIC_NUMBERS]}
        d[KEY.BATCH] = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else torch.zeros(
            data[keys.ATOMIC_NUMBERS].shape[0], dtype=torch.long, device=vectors.device)
        d = self.model._modules["edge_embedding"](d)
        d[KEY.NODE_FEATURE] = species
        d[KEY.ATOM_TYPE] = species
        d = self.model._modules["onehot_idx_to_onehot"](d)
        d[KEY.NODE_FEATURE] = d[KEY.NODE_FEATURE].to(self.dtype)  # sevenn's one-hot is float32
        if self.modal_index is not None:  # the fidelity, one-hot per structure, as sevenn's calculator sets it
            num_graphs = int(d[KEY.BATCH].max()) + 1 if d[KEY.BATCH].numel() else 1
            d[KEY.MODAL_TYPE] = torch.full((num_graphs,), self.modal_index, dtype=torch.long, device=vectors.device)
            d = self.model._modules["one_hot_modality"](d)
        return d, self.model._modules["onehot_to_feature_x"](d)[KEY.NODE_FEATURE]

    def run_layers(self, state: dict, x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
        outputs = []
        state["x"] = x
        for k in range(start, stop):
            for name in self.layer_names[k]:
                state = self.model._modules[name](state)
            outputs.append(state["x"])
        return outputs

    def atomic_energies(self, state: dict) -> torch.Tensor:
        import sevenn._keys as KEY

        for name in READOUT_MODULES:
            state = self.model._modules[name](state)
        return state[KEY.ATOMIC_ENERGY].reshape(-1)
