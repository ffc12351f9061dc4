"""The backbone contract: a pretrained universal potential whose per-atom features equiprop's heads read.

A backbone is one file in this folder: a ``Backbone`` subclass with an ``info`` (what it is, where its weights come
from, under which licence, what to cite) is registered under ``info.name`` and becomes a recipe value
(``model.encoder.init_args.model: chgnet-0.3.0``, or a list of names: several backbones at once). It declares

- ``layer_irreps``: the per-atom output of each of its layers (scalars first), e.g. SevenNet-0's
  ``128x0e+64x1e+32x2e`` for layers 0-3 and ``128x0e`` for layer 4; an invariant backbone has scalars only;
- ``parity``: whether those features are O(3)-equivariant as computed (an invariant backbone: yes; SevenNet, trained
  without parity: no, and ``FoundationEncoder`` symmetrises it over the inversion);
- ``splittable``: whether it runs from any layer on (a cached frozen prefix, fine-tuning of the last k layers);
- ``uses_equiprop_graph``: whether it runs on equiprop's edge list and edge vectors (SevenNet) or builds its own
  graphs from positions and cell (CHGNet): only the former can be inverted by negating edge vectors, strained for
  the potential's physics, or must match ``data.cutoff``;
- ``begin`` / ``run_layers`` (or, if not splittable, ``layer_features``), and where it has them the per-atom energies
  the physics priors use (``atomic_energies``).

Its weights ship inside an installed wheel (no download at run time); ``pretrained_source`` records the package,
version and the sha256 of the weights file, which ``equiprop.train.export`` checks when a model built on it loads.
Caching is the encoder's (``FoundationEncoder``): one feature cache per backbone, keyed by its name, configuration
and the digest of its frozen weights.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import torch
from e3nn import o3

from equiprop.data.errors import ConfigError

BACKBONES: dict[str, type["Backbone"]] = {}  # filled as each backbone's file is imported (``backbones/__init__``)
MPTRJ = "MPtrj (Materials Project relaxation trajectories, PBE/PBE+U)"


@lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    from equiprop.data.dataset import file_digest

    return file_digest(path)


def file_sha256(path) -> str:
    """sha256 of a weights file, computed once per (path, size, mtime) in a process."""
    stat = os.stat(path)
    return _file_sha256(str(path), stat.st_size, stat.st_mtime)


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # the recipe value, e.g. "7net-0"
    title: str  # e.g. "SevenNet-0 (11Jul2024)"
    package: str  # the installed distribution that ships the weights
    weights: str  # the weights file, relative to the package's folder
    licence: str
    citation: str
    pretrained_on: str = MPTRJ
    note: str = ""  # e.g. which fidelity of a multi-fidelity potential is used, and why


COMPILE_BACKEND = "inductor"  # torch.compile's backend for compile_layers ("eager" traces only: the tests)


def _run_layers(backbone: "Backbone", state: dict, x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
    return backbone.run_layers(state, x, start, stop)


@lru_cache(maxsize=4)
def _compiled(backend: str):
    # one compiled function for every backbone (dynamo guards on the instance): dynamic shapes, since every batch
    # has its own numbers of atoms and edges
    return torch.compile(_run_layers, dynamic=True, backend=backend)


def compiled_layers():
    return _compiled(COMPILE_BACKEND)


class Backbone(torch.nn.Module):
    """A pretrained potential as per-atom features by layer. Subclasses set ``info`` (registration), ``parity`` and
    ``splittable``; ``__init__`` sets ``cutoff`` (Å), ``num_layers`` and ``layer_irreps``."""

    info: ClassVar[BackboneInfo]
    parity: ClassVar[bool]
    splittable: ClassVar[bool] = True
    uses_equiprop_graph: ClassVar[bool] = True
    compile_layers: bool = False  # FoundationEncoder(compile_layers=True): run_layers through torch.compile
    cutoff: float
    num_layers: int
    layer_irreps: list[o3.Irreps]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "info" in cls.__dict__:
            BACKBONES[cls.info.name] = cls

    # -- what it is ---------------------------------------------------------------------------------------------------
    @classmethod
    def weights_path(cls) -> Path:
        try:
            module = importlib.import_module(cls.info.package)
        except ImportError:
            raise ConfigError(f"backbone {cls.info.name} needs the optional {cls.info.package!r} package: "
                              "pip install 'equiprop[foundation]'") from None
        path = Path(module.__file__).parent / cls.info.weights
        if not path.is_file():
            raise ConfigError(f"backbone {cls.info.name}: {cls.info.package} has no weights file at {path}")
        return path

    def pretrained_source(self) -> dict:
        """{package, version, model, file, sha256} of the weights (``equiprop.train.export``)."""
        from importlib.metadata import version

        path = self.weights_path()
        return {"package": self.info.package, "version": version(self.info.package), "model": self.info.name,
                "file": str(path), "sha256": file_sha256(path)}

    def scalar_count(self, layer: int) -> int:
        return self.layer_irreps[layer].count(o3.Irrep("0e"))

    @property
    def has_tensors(self) -> bool:
        return any(ir.lmax > 0 for ir in self.layer_irreps)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- running it ---------------------------------------------------------------------------------------------------
    def layer_modules(self) -> list[torch.nn.Module]:
        """One module per layer, in order (trainable_layers, layer-wise learning rates, the frozen-prefix cache)."""
        raise NotImplementedError

    def frozen_state(self, point: int) -> dict[str, torch.Tensor]:
        """The tensors that stay fixed when layers [point, num_layers) train: what cached features depend on."""
        trained = {id(t) for m in self.layer_modules()[point:] for t in m.state_dict(keep_vars=True).values()}
        return {n: t.detach() for n, t in self.state_dict(keep_vars=True).items() if id(t) not in trained}

    def readout_modules(self) -> list[torch.nn.Module]:
        """The energy readout: frozen unless its per-atom energy is a feature."""
        return []

    def species_index(self, data) -> torch.Tensor:
        """What ``begin`` / ``layer_features`` take for the atoms' species; DataError naming the structures of
        elements it never saw."""
        raise NotImplementedError

    def begin(self, data, vectors: torch.Tensor, species: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """(state, input of layer 0) of one pass over the graph with these edge vectors (Å)."""
        raise NotImplementedError

    def run_layers(self, state: dict, x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
        """Outputs (num_nodes, layer_irreps[k].dim) of layers [start, stop) given the input ``x`` of layer start."""
        raise NotImplementedError

    def layer_features(self, data, vectors: torch.Tensor, species: torch.Tensor,
                       prefix: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
        """(every layer's output, the state after the last layer) of one pass, the first ``len(prefix)`` layers
        given (cached). Splittable backbones need not override this. With ``compile_layers``, passes without
        gradients (frozen features, prediction) run the layers through ``torch.compile``."""
        state, x = self.begin(data, vectors, species)
        start = prefix[-1] if prefix else x
        if self.compile_layers and not torch.is_grad_enabled():
            outputs = compiled_layers()(self, state, start, len(prefix), self.num_layers)
        else:
            outputs = self.run_layers(state, start, len(prefix), self.num_layers)
        return list(prefix) + outputs, state

    def atomic_energies(self, state: dict) -> torch.Tensor | None:  # -> (num_nodes,) eV, after the last layer
        return None

    def atomic_energies_of(self, data, vectors: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """(num_nodes,) eV of the graph with these edge vectors (Å): every layer, then the energy readout."""
        _, state = self.layer_features(data, vectors, species, [])
        energies = self.atomic_energies(state)
        if energies is None:
            raise ConfigError(f"backbone {self.info.name} gives no per-atom energies")
        return energies

    def energy(self, data) -> torch.Tensor:  # -> (num_graphs,) eV: the potential's own total energy
        from torch_geometric.utils import scatter

        from equiprop.data import keys
        from equiprop.data.graph import edge_vectors

        energies = self.atomic_energies_of(data, edge_vectors(data), self.species_index(data))
        batch = data[keys.BATCH]
        return scatter(energies, batch, dim=0, dim_size=int(batch.max()) + 1, reduce="sum")
