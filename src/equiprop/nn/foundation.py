"""FoundationEncoder: the layers of one or several pretrained universal interatomic potentials (backbones,
``equiprop.nn.backbones``: SevenNet-0, SevenNet-l3i5, SevenNet-MF-0, CHGNet 0.3.0) as the shared encoder, with three
transfer modes.

Which features, with which irreps (SevenNet-0: 5 layers, hidden ``128x0e+64x1e+32x2e``, last layer ``128x0e``):

- the scalars of every layer (``scalar_layers``, default all: 5 x 128 = ``640x0e``), so heads read shallow and deep
  chemistry; optionally the first backbone's per-atom energy (``energy_feature``, eV, ``1x0e``) and zero-shot physics
  descriptors of the potential (``descriptors``, see ``potential_physics``), broadcast to the structure's atoms;
- the l>0 features of the last layers that have them (``tensor_layers``, default the last one: SevenNet-0's block 3,
  ``64x1e+32x2e``), so tensor heads read pretrained equivariant features.

Several backbones (``model: [7net-0, chgnet-0.3.0]``): their per-atom scalars are concatenated (backbone by backbone,
in the order given), then the l>0 features of those that have them; each backbone's frozen features are cached on
their own (``FeatureCache`` per backbone), so adding a backbone to a study computes only its features.
``scalar_layers`` / ``tensor_layers`` apply to every backbone (negative indices count from the last layer).

Parity. SevenNet is trained without parity (``is_parity: False``): its "1e" features mix vectors and pseudovectors,
so they are SO(3)- but not O(3)-equivariant. With ``parity: True`` (default) the encoder runs such a backbone on the
structure x and on its inversion Ix (all edge vectors negated; same atoms) and returns
``g+ = (f(x) + f(Ix)) / 2`` as even irreps (0e, 1e, 2e) and ``g- = (f(x) - f(Ix)) / 2`` of the l>0 features as odd
irreps (1o, 2o): g+ is invariant and g- changes sign under inversion, and both rotate as f does, so the encoder is
exactly O(3)-equivariant. Dielectric (0e+2e) and elastic (0e+2e+4e) heads read g+; the piezoelectric tensor
(1o+2o+3o) reads g- linearly (1o, 2o) and through the readout's quadratic path (3o from 1o x 2e, 2o x 1e, ...); a
centrosymmetric crystal then gets exactly zero piezo response. A backbone whose features are O(3)-equivariant as
computed (``Backbone.parity``: CHGNet's invariant scalars) runs once. ``parity: False`` runs one pass and returns
SevenNet's own SO(3) labels (odd tensors then cannot be built).

Transfer modes (``transfer``): ``frozen`` (no weight trains; features computed once per structure and cached),
``finetune`` (all weights train, or with ``trainable_layers: k`` only the last k layers of each backbone; the frozen
first layers' outputs are cached so each step runs only the trainable layers), ``from_scratch`` (same architecture,
random weights: the control that shows what pretraining gives).
"""

from __future__ import annotations

from typing import Literal

import torch
from e3nn import o3
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.augment import augmented
from equiprop.data.errors import ConfigError
from equiprop.data.graph import graph_index
from equiprop.data.precision import full_precision
from equiprop.nn.backbones import Backbone, build_backbone
from equiprop.nn.base import Encoder
from equiprop.nn.feature_cache import FeatureCache, structure_keys, weights_digest
from equiprop.nn.foundation_passes import PassesMixin
from equiprop.nn.potential_physics import descriptor_size, shared_physics

Descriptor = Literal["bulk_modulus", "gamma_phonons"]  # potential_physics.DESCRIPTOR_SIZES


class FoundationEncoder(PassesMixin, Encoder):
    """Pretrained backbones' layers -> per-atom equivariant features (see the module docstring).

    Args:
        model: a backbone's name or a list of them (``equiprop.nn.backbones.BACKBONES``): ``7net-0`` (SevenNet-0,
            11Jul2024), ``7net-l3i5`` (max_ell 3), ``7net-mf-0`` (multi-fidelity, PBE), ``chgnet-0.3.0``.
        transfer: ``frozen``, ``finetune`` or ``from_scratch``.
        trainable_layers: with ``finetune``, train only the last k layers of each backbone (None: all weights).
        cutoff: Å; must equal the own cutoff of every backbone that runs on equiprop's graph (SevenNet: 5 Å); the
            CLI links ``data.cutoff`` to it.
        parity: O(3) features by inversion symmetrisation (True) or SevenNet's SO(3) features (False).
        scalar_layers: layers whose scalars are output (None: all).
        tensor_layers: layers whose l>0 features are output (None: the last layer that has any).
        energy_feature: also output the first backbone's per-atom energy (eV).
        descriptors: zero-shot physics of the first backbone as extra scalars per structure:
            ``bulk_modulus`` (strain-energy curvature, GPa), ``gamma_phonons`` (Γ-point frequencies, cm^-1).
        cache_features: cache frozen features per structure (in memory and under ``cache_dir``).
        cache_dir: feature cache folder (default ``$EQUIPROP_CACHE/features`` or ~/.cache/equiprop/features).
        inversion_shortcut: with parity, take a centrosymmetric crystal's inverted pass as a permutation of its own
            (~1.4x faster on MP-like data); the same features up to float rounding (~1e-6), so runs whose cached
            features were computed without it reproduce bit for bit only without it.
        compile_layers: run the layers of the backbones on equiprop's graph (SevenNet) through ``torch.compile``
            in passes without gradients (frozen features, prediction): a one-off compilation of minutes on 2
            cores for faster passes after it, so for screens and large featurisations; see docs/benchmarks.md.
    """

    full_neighbor_list = True  # the potentials were trained on all neighbours within their cutoff
    runtime_args = ("cache_features", "cache_dir", "inversion_shortcut",  # how, not what: out of cache keys
                    "compile_layers")

    def __init__(self, model: str | list[str] = "7net-0",
                 transfer: Literal["frozen", "finetune", "from_scratch"] = "frozen",
                 trainable_layers: int | None = None, cutoff: float = 5.0, parity: bool = True,
                 scalar_layers: list[int] | None = None, tensor_layers: list[int] | None = None,
                 energy_feature: bool = False, descriptors: list[Descriptor] | None = None, cache_features: bool = True,
                 cache_dir: str | None = None, inversion_shortcut: bool = True, compile_layers: bool = False):
        super().__init__()
        self.inversion_shortcut = inversion_shortcut
        if transfer not in ("frozen", "finetune", "from_scratch"):
            raise ConfigError(f"FoundationEncoder: transfer must be frozen, finetune or from_scratch, got {transfer!r}")
        names = [model] if isinstance(model, str) else list(model)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"FoundationEncoder: model must name one or more different backbones, got {model!r}")
        self.backbones = torch.nn.ModuleList([build_backbone(n, pretrained=transfer != "from_scratch")
                                              for n in names])
        self.names, self.transfer, self.parity = names, transfer, parity
        self.compile_passes(compile_layers)
        self.cutoff = self._check_cutoff(cutoff)
        self.scalar_layers = [self._check_layers(b, scalar_layers, list(range(b.num_layers)), "scalar_layers")
                              for b in self.backbones]
        self.tensor_layers = [self._check_layers(b, tensor_layers, [k for k, ir in enumerate(b.layer_irreps)
                                                                    if ir.lmax > 0][-1:], "tensor_layers")
                              for b in self.backbones]
        self.energy_feature = energy_feature
        self.descriptor_names = list(descriptors or [])
        if self.descriptor_names and transfer == "from_scratch":
            raise ConfigError("FoundationEncoder: descriptors come from the pretrained potential; "
                              "from_scratch has none (drop descriptors for the control)")
        self._set_trainable(trainable_layers)
        self.cache_points = [self._cache_point(b, trainable_layers) if cache_features else 0 for b in self.backbones]
        self.cache_dir = cache_dir
        self._caches: dict[int, FeatureCache] = {}
        self._physics = None  # potential_physics.PotentialPhysics, built on first use
        self.energy_backbone: int | None = None  # record_energies: whose pass energies are kept
        self._pass_energies: dict[str, torch.Tensor] = {}  # structure key -> (1,) eV/atom, of the last forward
        self._same_weights: tuple | None = None  # (what was compared, verdict): pretrained_energies' last check
        self.part_dims = [self._part_dims(i) for i in range(len(self.backbones))]
        self.irreps_out = self._irreps_out()

    # -- configuration ----------------------------------------------------------------------------------------------
    def _check_cutoff(self, cutoff: float) -> float:
        for b in self.backbones:
            if self.parity and not b.parity and not b.uses_equiprop_graph:  # its inverted pass cannot be formed
                raise ConfigError(f"FoundationEncoder {b.info.name}: a backbone without parity that builds its own "
                                  "graphs cannot be symmetrised over the inversion; use parity: false")
            if b.uses_equiprop_graph and abs(float(cutoff) - b.cutoff) > 1e-9:
                raise ConfigError(f"FoundationEncoder {b.info.name}: cutoff must be the potential's own {b.cutoff} "
                                  f"Å, got {cutoff} (set data.cutoff: {b.cutoff})")
        return float(cutoff)

    def _check_layers(self, backbone: Backbone, layers, default, option) -> list[int]:
        n = backbone.num_layers
        layers = default if layers is None else [int(k) for k in layers]
        bad = [k for k in layers if not -n <= k < n]
        if bad:
            raise ConfigError(f"FoundationEncoder {backbone.info.name}: {option} must be in 0..{n - 1} (or -{n}..-1 "
                              f"from the last), got {bad}")
        layers = sorted({k % n for k in layers})
        if option == "tensor_layers" and any(backbone.layer_irreps[k].lmax == 0 for k in layers):
            with_tensors = [k for k, ir in enumerate(backbone.layer_irreps) if ir.lmax > 0]
            if with_tensors or len(self.names) == 1:
                raise ConfigError(f"FoundationEncoder {backbone.info.name}: tensor_layers {layers} include a "
                                  f"scalar-only layer; layers with l>0 features: {with_tensors}")
            return []  # an invariant backbone among several: it gives scalars only
        return layers

    def _set_trainable(self, trainable_layers):
        if trainable_layers is not None and (self.transfer != "finetune" or not all(
                1 <= trainable_layers <= b.num_layers for b in self.backbones)):
            raise ConfigError(f"FoundationEncoder: trainable_layers (1..{min(b.num_layers for b in self.backbones)})"
                              f" needs transfer: finetune, got {trainable_layers} with {self.transfer}")
        for i, b in enumerate(self.backbones):
            if self.transfer == "frozen":
                b.requires_grad_(False)
            elif trainable_layers is not None:
                b.requires_grad_(False)
                for module in b.layer_modules()[b.num_layers - trainable_layers:]:
                    module.requires_grad_(True)
            if not (self.energy_feature and i == 0):
                for module in b.readout_modules():  # the energy readout is not a feature unless asked: untouched
                    module.requires_grad_(False)

    def _cache_point(self, backbone: Backbone, trainable_layers) -> int:
        """Layers [0, point) are frozen and cached; point == num_layers caches the whole output; 0 caches nothing."""
        if self.transfer == "frozen":
            return backbone.num_layers
        if self.transfer == "finetune" and trainable_layers is not None and backbone.splittable:
            return backbone.num_layers - trainable_layers
        return 0

    def _symmetrised(self, backbone: Backbone) -> bool:
        return self.parity and not backbone.parity

    def _part_dims(self, i: int) -> tuple[int, int, int]:
        """(scalars, even l>0, odd l>0) columns of backbone i's features."""
        b = self.backbones[i]
        scalars = sum(b.scalar_count(k) for k in self.scalar_layers[i]) + int(self.energy_feature and i == 0)
        tensors = sum(b.layer_irreps[k].dim - b.scalar_count(k) for k in self.tensor_layers[i])
        return scalars, tensors, tensors if self._symmetrised(b) else 0

    def _tensor_irreps(self, i: int, parity_sign: int | None) -> o3.Irreps:
        """Backbone i's l>0 irreps: relabelled even/odd (symmetrised), or as the backbone states them (None)."""
        b = self.backbones[i]
        return o3.Irreps([(mul, (ir.l, ir.p if parity_sign is None else parity_sign)) for k in self.tensor_layers[i]
                          for mul, ir in b.layer_irreps[k] if ir.l > 0])

    def _irreps_out(self) -> o3.Irreps:
        num_scalars = sum(dims[0] for dims in self.part_dims) + self.num_descriptors
        irreps = o3.Irreps(f"{num_scalars}x0e")
        for i, b in enumerate(self.backbones):
            irreps += self._tensor_irreps(i, 1 if self._symmetrised(b) else None)
        for i, b in enumerate(self.backbones):
            if self._symmetrised(b):
                irreps += self._tensor_irreps(i, -1)
        return irreps

    @property
    def num_descriptors(self) -> int:
        return sum(descriptor_size(name) for name in self.descriptor_names)

    @property
    def potential(self) -> torch.nn.Module:
        """The first backbone's own model (SevenNet's ``AtomGraphSequential``)."""
        return getattr(self.backbones[0], "model", self.backbones[0])

    @property
    def num_layers(self) -> int:
        return sum(b.num_layers for b in self.backbones)

    def layer_modules(self) -> list[torch.nn.Module]:
        return [module for b in self.backbones for module in b.layer_modules()]

    def layer_stacks(self) -> list[list[torch.nn.Module]]:
        return [b.layer_modules() for b in self.backbones]

    def pretrained_source(self) -> dict | None:
        """Where the pretrained weights come from (``equiprop.train.export``): None for ``from_scratch``; several
        backbones: their records joined, with one sha256 over theirs."""
        if self.transfer == "from_scratch":
            return None
        sources = [b.pretrained_source() for b in self.backbones]
        if len(sources) == 1:
            return sources[0]
        import hashlib

        joined = {k: "+".join(str(s[k]) for s in sources) for k in ("package", "version", "model", "file")}
        digest = hashlib.sha256("".join(s["sha256"] for s in sources).encode()).hexdigest()
        return {**joined, "sha256": digest, "parts": sources}

    def energy(self, data) -> torch.Tensor:  # -> (num_graphs,) eV: the first backbone's own total energy
        return self.backbones[0].energy(data)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before backbones held SevenNet's weights as "potential.*"
        old = prefix + "potential."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "backbones.0.model." + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward, with one cache of frozen work per backbone ---------------------------------------------------------
    @full_precision  # the backbones' layers, pretrained in float32: outside autocast (data.precision)
    def forward(self, data) -> torch.Tensor:  # -> (num_nodes, irreps_out.dim)
        self._pass_energies = {}
        parts = [self._backbone_rows(i, data).split(self.part_dims[i], dim=1) for i in range(len(self.backbones))]
        features = torch.cat([p[k] for k in range(3) for p in parts], dim=1)  # scalars, even, odd: backbone order
        return self._with_descriptors(data, features)

    def _backbone_rows(self, i: int, data) -> torch.Tensor:  # -> (num_nodes, sum(part_dims[i]))
        point, b = self.cache_points[i], self.backbones[i]
        if point == 0:
            return self._features(i, data)
        if point == b.num_layers:
            return self._cached(i, data, lambda: self._features(i, data).detach(), split=False)
        return self._features(i, data, self._cached(i, data, lambda: self._prefixes(i, data), split=True))

    def _cached(self, i: int, data, compute, split: bool):
        """Per-atom rows for every structure of the batch: from backbone i's cache, computing only what is missing."""
        cache = self.feature_cache(i)
        with torch.no_grad():
            # one graph, or a training batch noised or strained afresh (data.augment): computed, never cached (its
            # structures would fill the cache with rows no later step reads)
            if not hasattr(data, "num_graphs") or data.num_graphs is None or augmented(data):
                rows = compute()
            else:
                rows = self._lookup(data, cache, compute)
        if not split:
            return rows
        b, passes = self.backbones[i], 2 if self._symmetrised(self.backbones[i]) else 1
        dims = [b.layer_irreps[k].dim for k in range(self.cache_points[i])]
        chunks = rows.split(dims * passes, dim=1)
        return [list(chunks[p * len(dims):(p + 1) * len(dims)]) for p in range(passes)]

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

    def feature_cache(self, i: int = 0) -> FeatureCache:
        """Backbone i's cache. What its rows depend on: the backbone, the options that shape its rows, where the
        cache point lies, the dtype and its frozen weights; not where they are kept, nor the descriptors."""
        if i not in self._caches:
            b, point = self.backbones[i], self.cache_points[i]
            config = {k: v for k, v in self.config.items() if k not in (*self.runtime_args, "descriptors")}
            config.update(model=self.names[i], energy_feature=self.energy_feature and i == 0)
            self._caches[i] = FeatureCache(self.cache_dir, {
                "encoder": "FoundationEncoder", "config": config, "cache_point": point, "dtype": str(b.dtype),
                "weights": weights_digest(b.frozen_state(point))})
        return self._caches[i]

    def _with_descriptors(self, data, features: torch.Tensor) -> torch.Tensor:
        if not self.descriptor_names:
            return features
        if self._physics is None:
            self._physics = shared_physics(self.names[0], self.descriptor_names, self.cache_dir)
        per_graph = self._physics.descriptors(data).to(features)  # (num_graphs, num_descriptors)
        batch = graph_index(data)
        num_scalars = self.irreps_out[0].mul - self.num_descriptors
        return torch.cat([features[:, :num_scalars], per_graph[batch], features[:, num_scalars:]], dim=1)

    def compile_passes(self, on: bool = True) -> bool:
        """``compile_layers`` switched on or off (``equiprop predict --compile``); whether a backbone takes it (the
        ones on equiprop's graph: CHGNet runs its own forward)."""
        for b in self.backbones:
            b.compile_layers = bool(on) and b.uses_equiprop_graph
        return any(b.compile_layers for b in self.backbones)

    # -- the potential's own energies from the features' pass (the potential_energy prior needs no pass of its own) --
    def record_energies(self, model: str) -> None:
        """Keep, from every pass that computes backbone ``model``'s frozen features afresh, its energy per atom of
        each structure for ``pretrained_energies`` (the energy readout on the last layer: a small MLP per atom)."""
        if self.transfer == "frozen" and model in self.names:
            self.energy_backbone = self.names.index(model)

    def keep_energies(self, data, atomic: torch.Tensor) -> None:
        """atomic: (num_nodes,) eV of the structures of ``data`` as given (not a noised or strained copy)."""
        if augmented(data):
            return
        names = structure_keys(data)
        per_atom = scatter(atomic.detach().double(), graph_index(data), dim=0, dim_size=len(names),
                           reduce="mean")  # (num_graphs,) eV/atom
        self._pass_energies.update(zip(names, per_atom.cpu().unsqueeze(1)))

    def pretrained_energies(self, reference: Backbone) -> dict[str, torch.Tensor]:
        """{structure key: (1,) energy per atom, eV/atom} of the structures whose features the last forward computed
        afresh, when this encoder's frozen copy of ``reference`` has its class, dtype and weights; else {}."""
        i = self.energy_backbone
        if i is None or not self._pass_energies:
            return {}
        b = self.backbones[i]
        if any(p.requires_grad for p in b.parameters()):
            return {}
        # every in-place change of a tensor (an optimiser step, load_state_dict) bumps its version: a new verdict
        versions = tuple(sum(t._version for t in (*m.parameters(), *m.buffers())) for m in (b, reference))
        key = (id(reference), b.dtype, reference.dtype, versions)
        if self._same_weights is None or self._same_weights[0] != key:
            n = b.num_layers
            self._same_weights = (key, type(b) is type(reference) and b.dtype == reference.dtype and weights_digest(
                b.frozen_state(n)) == weights_digest(reference.frozen_state(n)))
        return self._pass_energies if self._same_weights[1] else {}
