"""Encoders: periodic graph -> node features with declared ``irreps_out``. Swappable behind one interface."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors, radial_lengths
from equiprop.nn.base import Encoder
from equiprop.nn.blocks import CGConvBlock, EdgeShBlock, InteractionBlock, SpeciesEmbeddingBlock
from equiprop.nn.radial import RadialEmbeddingBlock


def hidden_irreps_from(max_ell: int, multiplicities: list[int], parity: bool) -> o3.Irreps:
    """``mul_l x l`` for l = 0..max_ell, natural parity (0e, 1o, 2e, 3o) or all even without parity."""
    if len(multiplicities) <= max_ell:
        raise ConfigError(f"model.encoder.multiplicities: need a multiplicity for every l up to max_ell={max_ell}, "
                          f"got {multiplicities}")
    return o3.Irreps([(multiplicities[l], (l, (-1) ** l if parity else 1)) for l in range(max_ell + 1)])


def check_ranges(**options) -> None:
    """One-line ConfigError naming the encoder option whose value lies outside [low, high] (None: unbounded)."""
    for name, (value, low, high) in options.items():
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else (f"> 0" if name == "cutoff" else f">= {low}")
            where = "data.cutoff (linked to model.encoder.init_args.cutoff)" if name == "cutoff" else \
                f"model.encoder.init_args.{name}"
            raise ConfigError(f"{where} must be {bound}, got {value}")


class EquivariantEncoder(Encoder):
    """E(3)-equivariant message passing (NequIP/MACE lineage) built from e3nn.

    Args:
        cutoff: radial cutoff, Å (the data's neighbour-list cutoff).
        max_ell: highest order of spherical harmonics and hidden features (0-3).
        hidden_irreps: explicit hidden irreps such as "64x0e+32x1o+16x2e" (overrides ``multiplicities``).
        multiplicities: channels per l, used when ``hidden_irreps`` is not given.
        num_layers: interaction blocks.
        num_basis: Bessel radial basis size.
        radial_hidden: width of the radial MLP that produces tensor-product weights.
        radial_layers: hidden layers of that MLP.
        correlation: body order minus one of each layer's features: 1 is two-body messages (NequIP), 2-3 add
            MACE's channel-wise product basis A x A (x A) of the aggregated messages (``ProductBasisBlock``).
        product_channels: channels per irrep of A in the product basis (correlation > 1 only).
        parity: O(3) (True: inversion-aware irreps) or SO(3) only (False).
        avg_num_neighbors: message normalisation; set from the training data at fit time when None.
        output_irreps: what the last layer carries. "auto" (default): only the hidden irreps some head of the model
            reads (``heads.irreps_read``: scalars-only recipes get a scalars-only last layer, as NequIP's and MACE's
            energy models; a dielectric head keeps 0e and 2e), resolved by the model and stored in its checkpoints;
            "hidden": every hidden irrep (the layout of checkpoints written before this option); or irreps such as
            "64x0e". Standalone, "auto" carries every hidden irrep.
    """

    legacy_args = {"output_irreps": "hidden"}

    def __init__(self, cutoff: float = 5.0, max_ell: int = 2, hidden_irreps: str | None = None,
                 multiplicities: list[int] = (64, 32, 16, 8), num_layers: int = 3, num_basis: int = 8,
                 radial_hidden: int = 64, parity: bool = True, avg_num_neighbors: float | None = None,
                 radial_layers: int = 2, correlation: int = 1, product_channels: int = 16,
                 output_irreps: str = "auto"):
        super().__init__()
        check_ranges(cutoff=(cutoff, 1e-9, None), max_ell=(max_ell, 0, 3), correlation=(correlation, 1, 3),
                     num_layers=(num_layers, 1, None), num_basis=(num_basis, 1, None),
                     radial_layers=(radial_layers, 1, None), radial_hidden=(radial_hidden, 1, None),
                     product_channels=(product_channels, 1, None))
        if hidden_irreps:
            try:
                o3.Irreps(hidden_irreps)
            except (ValueError, AssertionError) as err:
                raise ConfigError(f"model.encoder.hidden_irreps: not an irreps string such as '64x0e+32x1o' "
                                  f"({hidden_irreps!r}: {err})") from None
        elif any(m < 1 for m in list(multiplicities)[:max_ell + 1]):
            raise ConfigError(f"model.encoder.multiplicities must be >= 1 for l = 0..{max_ell}, got {multiplicities}")
        self.cutoff, self.max_ell, self.parity = float(cutoff), max_ell, parity
        hidden = o3.Irreps(hidden_irreps) if hidden_irreps else hidden_irreps_from(max_ell, list(multiplicities),
                                                                                   parity)
        if not parity and any(ir.p == -1 for _, ir in hidden):
            raise ConfigError(f"model.encoder.init_args.hidden_irreps: odd irreps in {hidden} need parity: true; "
                              "without parity every feature is even and they stay zero (no pseudoscalar, no chirality)")
        self.species = SpeciesEmbeddingBlock(hidden.count(o3.Irrep("0e")) or 32)
        self.edge_sh = EdgeShBlock(max_ell, parity)
        self.radial = RadialEmbeddingBlock(cutoff, num_basis)
        self.register_buffer("avg_num_neighbors", torch.tensor(float(avg_num_neighbors or 0.0)))
        self.hidden_irreps = hidden
        self.layer_args = (num_basis, radial_hidden, radial_layers, correlation, product_channels)
        last = hidden if output_irreps in ("auto", "hidden") else self._irreps_option(output_irreps)
        layers, irreps = [], self.species.irreps_out
        for n in range(num_layers):
            layers.append(InteractionBlock(irreps, self.edge_sh.irreps_out, last if n == num_layers - 1 else hidden,
                                           *self.layer_args))
            irreps = layers[-1].irreps_out
        self.layers = nn.ModuleList(layers)
        self.irreps_out = irreps

    @staticmethod
    def _irreps_option(text: str) -> o3.Irreps:
        try:
            irreps = o3.Irreps(text)
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"model.encoder.output_irreps: 'auto', 'hidden' or irreps such as '64x0e', got "
                              f"{text!r} ({err})") from None
        if o3.Irrep("0e") not in [ir for _, ir in irreps]:
            raise ConfigError(f"model.encoder.output_irreps: must carry scalars (0e) for the readouts, got {text!r}")
        return irreps

    def fit_output(self, read: set, layout: str | None = None) -> None:
        """Resolve ``output_irreps: auto``: the hidden irreps in ``read`` (or a pretrained encoder's ``layout``);
        the last layer is rebuilt only when that changes it. The choice is stored in ``config`` (checkpoints)."""
        if self.config["output_irreps"] != "auto":
            return
        if layout is not None:
            value = layout
            wanted = self.hidden_irreps if layout in ("auto", "hidden") else self._irreps_option(layout)
        else:
            wanted = o3.Irreps([(mul, ir) for mul, ir in self.hidden_irreps if ir in read or ir == o3.Irrep("0e")])
            value = "hidden" if wanted == self.hidden_irreps else str(wanted)
        self.config["output_irreps"] = value
        if wanted != self.irreps_out:
            last = self.layers[-1]
            self.layers[-1] = InteractionBlock(last.irreps_in, self.edge_sh.irreps_out, wanted, *self.layer_args)
            self.irreps_out = self.layers[-1].irreps_out

    def set_avg_num_neighbors(self, value: float) -> None:
        self.avg_num_neighbors.fill_(value)

    def forward(self, data) -> torch.Tensor:  # -> (num_nodes, irreps_out.dim)
        vectors = edge_vectors(data)  # (num_edges, 3)
        edge_sh = self.edge_sh(vectors)
        edge_radial = self.radial(radial_lengths(data, vectors))
        norm = self.avg_num_neighbors.clamp(min=1.0).sqrt()
        species = data[keys.ATOMIC_NUMBERS]
        x = self.species(species)
        for layer in self.layers:
            x = layer(x, edge_sh, edge_radial, data[keys.EDGE_INDEX], norm, species)
        return x


class InvariantEncoder(Encoder):
    """CGCNN-like invariant baseline: species embedding + gated graph convolutions on distances only.

    Args:
        cutoff: radial cutoff, Å.
        num_features: node feature width (``num_features x 0e``).
        num_layers: convolution blocks.
        num_basis: Bessel radial basis size for edge features.
    """

    def __init__(self, cutoff: float = 5.0, num_features: int = 64, num_layers: int = 3, num_basis: int = 8):
        super().__init__()
        check_ranges(cutoff=(cutoff, 1e-9, None), num_features=(num_features, 1, None),
                     num_layers=(num_layers, 1, None), num_basis=(num_basis, 1, None))
        self.cutoff = float(cutoff)
        self.species = SpeciesEmbeddingBlock(num_features)
        self.radial = RadialEmbeddingBlock(cutoff, num_basis)
        self.layers = nn.ModuleList(CGConvBlock(num_features, num_basis) for _ in range(num_layers))
        self.irreps_out = o3.Irreps(f"{num_features}x0e")

    def forward(self, data) -> torch.Tensor:  # -> (num_nodes, num_features)
        edge_features = self.radial(radial_lengths(data, edge_vectors(data)))
        x = self.species(data[keys.ATOMIC_NUMBERS])
        for layer in self.layers:
            x = layer(x, edge_features, data[keys.EDGE_INDEX])
        return x
