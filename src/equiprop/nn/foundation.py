"""FoundationEncoder: the interaction layers of a pretrained universal interatomic potential (SevenNet, e3nn) as the
shared encoder, with three transfer modes.

Which features, with which irreps (SevenNet-0: 5 layers, hidden ``128x0e+64x1e+32x2e``, last layer ``128x0e``):

- the scalars of every layer (``scalar_layers``, default all: 5 x 128 = ``640x0e``), so heads read shallow and deep
  chemistry; optionally the potential's per-atom energy (``energy_feature``, eV, ``1x0e``) and zero-shot physics
  descriptors of the potential (``descriptors``, see ``potential_physics``), broadcast to the structure's atoms;
- the l>0 features of the last layers that have them (``tensor_layers``, default the last one: SevenNet-0's block 3,
  ``64x1e+32x2e``), so tensor heads read pretrained equivariant features.

Parity. SevenNet is trained without parity (``is_parity: False``): its "1e" features mix vectors and pseudovectors,
so they are SO(3)- but not O(3)-equivariant. With ``parity: True`` (default) the encoder runs the potential on the
structure x and on its inversion Ix (all edge vectors negated; same atoms) and returns
``g+ = (f(x) + f(Ix)) / 2`` as even irreps (0e, 1e, 2e) and ``g- = (f(x) - f(Ix)) / 2`` of the l>0 features as odd
irreps (1o, 2o): g+ is invariant and g- changes sign under inversion, and both rotate as f does, so the encoder is
exactly O(3)-equivariant. Dielectric (0e+2e) and elastic (0e+2e+4e) heads read g+; the piezoelectric tensor
(1o+2o+3o) reads g- linearly (1o, 2o) and through the readout's quadratic path (3o from 1o x 2e, 2o x 1e, ...); a
centrosymmetric crystal then gets exactly zero piezo response. ``parity: False`` runs one pass and returns SevenNet's
own SO(3) labels (odd tensors then cannot be built).

Transfer modes (``transfer``): ``frozen`` (no weight trains; features computed once per structure and cached),
``finetune`` (all weights train, or with ``trainable_layers: k`` only the last k layers; the frozen first layers'
outputs are cached so each step runs only the trainable layers), ``from_scratch`` (same architecture, random
weights: the control that shows what pretraining gives).
"""

from __future__ import annotations

from typing import Literal

import torch
from e3nn import o3

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors
from equiprop.data.precision import full_precision
from equiprop.data.symmetry import inversion_partners
from equiprop.nn.base import Encoder
from equiprop.nn.feature_cache import FeatureCache, structure_keys, weights_digest
from equiprop.nn.potential import READOUT_MODULES, FoundationModel, PotentialRunner, file_sha256
from equiprop.nn.potential_physics import PotentialPhysics, descriptor_size

Descriptor = Literal["bulk_modulus", "gamma_phonons"]  # potential_physics.DESCRIPTOR_SIZES


class FoundationEncoder(PotentialRunner, Encoder):
    """Pretrained SevenNet interaction layers -> per-atom equivariant features (see the module docstring).

    Args:
        model: ``7net-0`` (SevenNet-0, 11Jul2024, MPtrj) or ``7net-l3i5`` (max_ell 3).
        transfer: ``frozen``, ``finetune`` or ``from_scratch``.
        trainable_layers: with ``finetune``, train only the last k interaction layers (None: all weights).
        cutoff: Å; must equal the potential's own cutoff (5 Å); the CLI links ``data.cutoff`` to it.
        parity: O(3) features by inversion symmetrisation (True) or SevenNet's SO(3) features (False).
        scalar_layers: layers whose scalars are output (None: all).
        tensor_layers: layers whose l>0 features are output (None: the last layer that has any).
        energy_feature: also output the potential's per-atom energy (eV).
        descriptors: zero-shot physics of the pretrained potential as extra scalars per structure:
            ``bulk_modulus`` (strain-energy curvature, GPa), ``gamma_phonons`` (Γ-point frequencies, cm^-1).
        cache_features: cache frozen features per structure (in memory and under ``cache_dir``).
        cache_dir: feature cache folder (default ``$EQUIPROP_CACHE/features`` or ~/.cache/equiprop/features).
        inversion_shortcut: with parity, take a centrosymmetric crystal's inverted pass as a permutation of its own
            (``_inverted_pass``: ~1.4x faster on MP-like data); the same features up to float rounding (~1e-6), so
            runs whose cached features were computed without it reproduce bit for bit only without it.
    """

    full_neighbor_list = True  # the potential was trained on all neighbours within its cutoff
    runtime_args = ("cache_features", "cache_dir", "inversion_shortcut")  # how, not what: out of cache keys

    def __init__(self, model: FoundationModel = "7net-0",
                 transfer: Literal["frozen", "finetune", "from_scratch"] = "frozen",
                 trainable_layers: int | None = None, cutoff: float = 5.0, parity: bool = True,
                 scalar_layers: list[int] | None = None, tensor_layers: list[int] | None = None,
                 energy_feature: bool = False, descriptors: list[Descriptor] | None = None, cache_features: bool = True,
                 cache_dir: str | None = None, inversion_shortcut: bool = True):
        super().__init__()
        self.inversion_shortcut = inversion_shortcut
        if transfer not in ("frozen", "finetune", "from_scratch"):
            raise ConfigError(f"FoundationEncoder: transfer must be frozen, finetune or from_scratch, got {transfer!r}")
        config = self.load(model, pretrained=transfer != "from_scratch", cutoff=cutoff)
        self.transfer, self.parity = transfer, parity
        self.layer_irreps = [o3.Irreps(ir) for ir in config["irreps_manual"][1:]]  # output of each layer
        self.scalar_layers = self._check_layers(scalar_layers, list(range(self.num_layers)), "scalar_layers")
        with_tensors = [k for k, ir in enumerate(self.layer_irreps) if ir.lmax > 0]
        self.tensor_layers = self._check_layers(tensor_layers, with_tensors[-1:], "tensor_layers")
        if any(self.layer_irreps[k].lmax == 0 for k in self.tensor_layers):
            raise ConfigError(f"FoundationEncoder {model}: tensor_layers {self.tensor_layers} include a scalar-only "
                              f"layer; layers with l>0 features: {with_tensors}")
        self.energy_feature = energy_feature
        self.descriptor_names = list(descriptors or [])
        if self.descriptor_names and transfer == "from_scratch":
            raise ConfigError("FoundationEncoder: descriptors come from the pretrained potential; "
                              "from_scratch has none (drop descriptors for the control)")
        self._set_trainable(trainable_layers)
        self.cache_point = self._cache_point(trainable_layers) if cache_features else 0
        self.cache_dir = cache_dir
        self._cache: FeatureCache | None = None
        self._physics = None  # potential_physics.PotentialPhysics, built on first use
        self.irreps_out = self._irreps_out()

    # -- configuration ----------------------------------------------------------------------------------------------
    def _check_layers(self, layers, default, option):
        layers = default if layers is None else [int(k) for k in layers]
        bad = [k for k in layers if not 0 <= k < self.num_layers]
        if bad:
            raise ConfigError(f"FoundationEncoder: {option} must be in 0..{self.num_layers - 1}, got {bad}")
        return sorted(set(layers))

    def _set_trainable(self, trainable_layers):
        readout = [p for n in READOUT_MODULES for p in self.potential._modules[n].parameters()]
        if trainable_layers is not None and (self.transfer != "finetune"
                                             or not 1 <= trainable_layers <= self.num_layers):
            raise ConfigError(f"FoundationEncoder: trainable_layers (1..{self.num_layers}) needs "
                              f"transfer: finetune, got {trainable_layers} with {self.transfer}")
        if self.transfer == "frozen":
            self.potential.requires_grad_(False)
        elif trainable_layers is not None:
            self.potential.requires_grad_(False)
            for module in self.layer_modules()[self.num_layers - trainable_layers:]:
                module.requires_grad_(True)
        if not self.energy_feature:
            for p in readout:  # the energy readout is not a feature unless asked: its weights stay untouched
                p.requires_grad_(False)

    def _cache_point(self, trainable_layers) -> int:
        """Layers [0, point) are frozen and cached; point == num_layers caches the whole output; 0 caches nothing."""
        if self.transfer == "frozen":
            return self.num_layers
        if self.transfer == "finetune" and trainable_layers is not None:
            return self.num_layers - trainable_layers
        return 0

    def _tensor_irreps(self, parity_sign: int) -> o3.Irreps:
        return o3.Irreps([(mul, (ir.l, parity_sign)) for k in self.tensor_layers
                          for mul, ir in self.layer_irreps[k] if ir.l > 0])

    def _irreps_out(self) -> o3.Irreps:
        num_scalars = sum(self.layer_irreps[k].count(o3.Irrep("0e")) for k in self.scalar_layers)
        num_scalars += int(self.energy_feature) + self.num_descriptors
        irreps = o3.Irreps(f"{num_scalars}x0e") + self._tensor_irreps(1)
        return irreps + self._tensor_irreps(-1) if self.parity else irreps

    @property
    def num_descriptors(self) -> int:
        return sum(descriptor_size(name) for name in self.descriptor_names)

    def layer_modules(self) -> list[torch.nn.Module]:
        return [torch.nn.ModuleList([self.potential._modules[n] for n in names]) for names in self.layer_names]

    def pretrained_source(self) -> dict | None:
        """Where the pretrained weights come from (``equiprop.train.export``): None for ``from_scratch``."""
        if self.transfer == "from_scratch":
            return None
        import sevenn
        from sevenn.util import pretrained_name_to_path

        path = pretrained_name_to_path(self.model_name)
        return {"package": "sevenn", "version": sevenn.__version__, "model": self.model_name,
                "file": str(path), "sha256": file_sha256(path)}

    def _pass_prefix(self, data, vectors, species) -> list[torch.Tensor]:
        """Outputs of the frozen layers [0, cache_point) for one pass (x or its inversion)."""
        d = self.graph_dict(data, vectors)
        return self.run_layers(d, self.embed(d, species), 0, self.cache_point)

    def _pass_features(self, data, vectors, species, prefix: list[torch.Tensor]) -> list[torch.Tensor]:
        """[scalars, tensors] of one pass, running the layers after ``prefix`` (and the energy readout if asked)."""
        d = self.graph_dict(data, vectors)
        x = prefix[-1] if prefix else self.embed(d, species)
        outputs = list(prefix) + self.run_layers(d, x, len(prefix), self.num_layers)
        scalars = [outputs[k][:, :self.layer_irreps[k].count(o3.Irrep("0e"))] for k in self.scalar_layers]
        if self.energy_feature:
            scalars.append(self.atomic_energies(d).unsqueeze(-1))
        tensors = [outputs[k][:, self.layer_irreps[k].count(o3.Irrep("0e")):] for k in self.tensor_layers]
        return [torch.cat(scalars, dim=1), torch.cat(tensors, dim=1)]

    def _features(self, data, prefixes: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        vectors, species = edge_vectors(data), self.species_index(data)
        if not self.parity:
            return torch.cat(self._pass_features(data, vectors, species, prefixes[0] if prefixes else []), dim=1)
        s_plus, t_plus = self._pass_features(data, vectors, species, prefixes[0] if prefixes else [])
        if prefixes or not self.inversion_shortcut:
            s_minus, t_minus = self._pass_features(data, -vectors, species, prefixes[1] if prefixes else [])
        else:
            s_minus, t_minus = self._inverted_pass(data, vectors, species, s_plus, t_plus)
        return torch.cat([(s_plus + s_minus) / 2, (t_plus + t_minus) / 2, (t_plus - t_minus) / 2], dim=1)

    def _inverted_pass(self, data, vectors, species, scalars, tensors) -> list[torch.Tensor]:
        """[scalars, tensors] of the potential on the inverted crystal. For a centrosymmetric crystal atom i of the
        inverted crystal sees exactly the neighbours atom p(i) sees in the crystal, so its features are f(x)[p]
        (no second pass); the potential runs only on the structures without an inversion centre."""
        partner = inversion_partners(data)
        centred = partner >= 0
        out = [scalars[partner.clamp(min=0)], tensors[partner.clamp(min=0)]]
        if bool(centred.all()):
            return out
        keep = ~centred  # atoms of the structures that need the inverted pass
        index = torch.cumsum(keep.long(), 0) - 1  # old node -> new node among the kept atoms
        edges = keep[data[keys.EDGE_INDEX][0]]
        batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else torch.zeros_like(index)
        sub = {keys.EDGE_INDEX: index[data[keys.EDGE_INDEX][:, edges]],
               keys.ATOMIC_NUMBERS: data[keys.ATOMIC_NUMBERS][keep],
               keys.BATCH: torch.unique(batch[keep], return_inverse=True)[1]}
        minus = self._pass_features(sub, -vectors[edges], species[keep], [])
        for part, value in zip(out, minus):
            part[keep] = value
        return out

    # -- forward, with the cache of frozen work ---------------------------------------------------------------------
    @full_precision  # SevenNet's e3nn layers, pretrained in float32: outside autocast (data.precision)
    def forward(self, data) -> torch.Tensor:  # -> (num_nodes, irreps_out.dim)
        if self.cache_point == 0:
            features = self._features(data)
        elif self.cache_point == self.num_layers:
            features = self._cached(data, lambda: self._features(data).detach(), split=None)
        else:
            features = self._features(data, self._cached(data, lambda: self._prefixes(data), split=True))
        return self._with_descriptors(data, features)

    def _prefixes(self, data) -> torch.Tensor:  # -> (num_nodes, passes x prefix dims), frozen layers' outputs
        vectors, species = edge_vectors(data), self.species_index(data)
        signs = (1.0, -1.0) if self.parity else (1.0,)
        return torch.cat([o for s in signs for o in self._pass_prefix(data, s * vectors, species)], dim=1).detach()

    def _cached(self, data, compute, split):
        """Per-atom rows for every structure of the batch: from the cache, computing only the missing structures."""
        cache = self.feature_cache()
        with torch.no_grad():
            if not hasattr(data, "num_graphs") or data.num_graphs is None:
                rows = compute()
            else:
                rows = self._lookup(data, cache, compute)
        if split is None:
            return rows
        dims = [self.layer_irreps[k].dim for k in range(self.cache_point)]
        chunks = rows.split(dims * (2 if self.parity else 1), dim=1)
        return [list(chunks[i * len(dims):(i + 1) * len(dims)]) for i in range(2 if self.parity else 1)]

    def _lookup(self, data, cache: FeatureCache, compute) -> torch.Tensor:
        names = structure_keys(data)
        found = cache.get_many(names)
        if any(f is None for f in found):
            rows = compute()  # the whole batch once (cheaper than re-batching the misses); cache only the misses
            counts = torch.bincount(data[keys.BATCH], minlength=len(names)).tolist()
            fresh = dict(zip(names, rows.split(counts)))
            cache.put({k: fresh[k] for k, f in zip(names, found) if f is None})
            # hits keep their cached rows: recomputed in another batch they differ in the last bits (BLAS blocking),
            # and a training run must not depend on which structures were cached before it (same seed, same weights)
            return torch.cat([fresh[k] if f is None else f.to(rows.dtype) for k, f in zip(names, found)])
        return torch.cat(found).to(data[keys.POSITIONS].dtype)

    def feature_cache(self) -> FeatureCache:
        if self._cache is None:
            frozen = {n: p for n, p in self.potential.state_dict().items()
                      if self._frozen_name(n)}
            # what the cached rows depend on: not where they are kept, nor the descriptors appended after the cache
            config = {k: v for k, v in self.config.items() if k not in (*self.runtime_args, "descriptors")}
            self._cache = FeatureCache(self.cache_dir, {
                "encoder": "FoundationEncoder", "config": config, "cache_point": self.cache_point,
                "dtype": str(self.potential_dtype), "weights": weights_digest(frozen)})
        return self._cache

    def _frozen_name(self, name: str) -> bool:
        layer = name.split("_", 1)[0]
        return not (layer.isdigit() and int(layer) >= self.cache_point)

    def _with_descriptors(self, data, features: torch.Tensor) -> torch.Tensor:
        if not self.descriptor_names:
            return features
        if self._physics is None:
            self._physics = PotentialPhysics(self.model_name, self.descriptor_names, self.cache_dir)
        per_graph = self._physics.descriptors(data).to(features)  # (num_graphs, num_descriptors)
        batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else torch.zeros(
            data.num_nodes, dtype=torch.long)
        num_scalars = self.irreps_out[0].mul - self.num_descriptors
        return torch.cat([features[:, :num_scalars], per_graph[batch], features[:, num_scalars:]], dim=1)
