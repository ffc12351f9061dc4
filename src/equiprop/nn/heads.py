"""Property readouts: node features -> one prediction per structure (pooled over its atoms), or one per atom for a
per-atom task (``TaskSpec.level == "atom"``: ``pooling=None``), in normalised model space.

Each readout states its physical output irreps: ``1x0e`` for scalars, ``1x0o`` for pseudoscalars (a handedness),
the ``CartesianTensor`` irreps for tensors (dielectric ``ij=ji`` -> 1x0e+1x2e; elastic ``ijkl=jikl=klij`` ->
2x0e+2x2e+1x4e; piezo ``ijk=ikj`` -> 2x1o+1x2o+1x3o; a general rank 3 ``ijk`` has a 0o part too). Tensor readouts
return normalised irreps coefficients; ``TaskNormalizer`` maps them to Cartesian tensors in physical units.
"""

from __future__ import annotations

import warnings

import torch
from e3nn import o3
from e3nn.nn import BatchNorm
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.precision import full_precision, upcast
from equiprop.data.tasks import TaskSpec
from equiprop.nn.blocks import EdgeGeometryBlock, EnvironmentHarmonicsBlock


EVEN_SCALAR, ODD_SCALAR = o3.Irrep("0e"), o3.Irrep("0o")


def _scalars(irreps: o3.Irreps) -> o3.Irreps:
    return o3.Irreps([(mul, ir) for mul, ir in irreps if ir == EVEN_SCALAR])


class ScalarReadoutBlock(nn.Module):
    """Invariant scalars of each atom -> MLP -> ``outputs`` numbers per atom (one; a class task: one logit per class),
    pooled (mean: intensive, sum: extensive, max:
    set by the most extreme atom, e.g. the highest phonon frequency; None: per atom, unpooled).

    The 0e channels are gathered by index and fed to a plain ``nn.Linear`` with a bias. (An ``o3.Linear`` here, as
    before, has no bias and divides by sqrt(fan-in) in its forward: with 640 input scalars its weights learn ~25x
    slower under Adam, and frozen-feature heads underfit: matbench_phonons fold 0, 68.7 vs 43.7 cm^-1.)
    """

    def __init__(self, irreps_in: o3.Irreps, pooling: str | None = "mean", hidden: int = 64, layers: int = 1,
                 outputs: int = 1):
        super().__init__()
        self.irreps_in, self.irreps_out, self.pooling = o3.Irreps(irreps_in), o3.Irreps(f"{outputs}x0e"), pooling
        scalars = [i for (mul, ir), sl in zip(self.irreps_in, self.irreps_in.slices()) if ir == o3.Irrep("0e")
                   for i in range(sl.start, sl.stop)]
        self.register_buffer("scalar_index", torch.as_tensor(scalars, dtype=torch.long), persistent=False)
        self.select = nn.Linear(len(scalars), hidden)
        self.mlp = nn.Sequential(*[m for _ in range(layers) for m in (nn.SiLU(), nn.Linear(hidden, hidden))],
                                 nn.SiLU(), nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor, data, edges: dict | None = None) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim); data: the PyG batch the features belong to; edges: unused (no geometry)
        per_atom = self.mlp(self.select(x[:, self.scalar_index]))  # (num_nodes, outputs)
        if self.irreps_out.dim == 1:
            per_atom = per_atom.squeeze(-1)  # (num_nodes,): one number
        return pooled(per_atom, data, self.pooling)  # (num_graphs[, outputs]), or per node unpooled


class TensorReadoutBlock(nn.Module):
    """Node features -> the task's tensor irreps per atom, pooled: (num_graphs, irreps_out.dim), normalised
    ((num_nodes, irreps_out.dim) for a per-atom task, ``pooling=None``).

    Three paths, summed in the layout of ``irreps_out``:

    - 0e outputs (the isotropic part) come from an MLP of the atom's invariant features, as strong as a scalar head.
    - each other output (l>0, and the 0o part of a general rank-3 tensor ``ijk``) is a gated mixture of the atom's
      features of that irrep: ``sum_k g_k(h) W_k x_l``, with gates ``g`` from the same invariant MLP, so how much of
      each local direction enters the tensor depends nonlinearly on the environment (still equivariant: scalars times
      l-features). Channel mixing uses plain ``nn.Linear`` weights:
      e3nn's ``o3.Linear`` divides by sqrt(fan-in) in its forward and learns that much slower under Adam.
    - a quadratic path (a small projection tensor-multiplied with itself) reaches irreps no feature carries, e.g.
      4e of the elastic tensor or 3o of the piezo tensor; it is used for those outputs only.
    """

    def __init__(self, irreps_in: o3.Irreps, task: TaskSpec, pooling: str | None = "mean", hidden: int = 64,
                 num_gates: int = 4, quadratic_mul: int = 8, environment_channels: int = 0, cutoff: float = 5.0,
                 layers: int = 1):
        super().__init__()
        self.environment = self.edge_geometry = None
        if environment_channels:  # geometric l-features of the neighbour shell for every l>0 output of the task
            ells = [ir.l for _, ir in o3.Irreps(task.cartesian_tensor) if ir.l > 0 and ir.p == (-1) ** ir.l]
            self.environment = EnvironmentHarmonicsBlock(ells, cutoff, environment_channels) if ells else None
            self.edge_geometry = EdgeGeometryBlock(ells) if ells else None  # alone; a model shares one for all heads
        self.irreps_in = o3.Irreps(irreps_in) + (self.environment.irreps_out if self.environment else o3.Irreps(""))
        self.irreps_out = o3.Irreps(task.cartesian_tensor)  # e.g. 1x0e+1x2e
        self.pooling, self.num_gates = pooling, num_gates
        # feature scales differ by irrep (frozen SevenNet-0: rms norm 0.03 for 1e and 0.02 for 2o, 3.2 for 2e), and a
        # head learns each path at the speed of its input's scale: an equivariant batch norm (l>0 divided by the
        # running norm) puts them on one footing
        self.input_norm = BatchNorm(self.irreps_in, normalization="component")
        scalars = _channel_index(self.irreps_in, o3.Irrep("0e"))
        if not len(scalars):
            raise ValueError(f"{task.name}: the tensor readout needs 0e features, node irreps are {self.irreps_in}")
        self.register_buffer("scalar_index", scalars.reshape(-1), persistent=False)
        self.invariant = nn.Sequential(nn.Linear(len(self.scalar_index), hidden), nn.SiLU(),
                                       *[m for _ in range(layers) for m in (nn.Linear(hidden, hidden), nn.SiLU())])
        self.isotropic = nn.ModuleDict()  # output slice -> linear map of the invariant MLP
        self.mix, self.gates = nn.ModuleDict(), nn.ModuleDict()
        for k, ((mul, ir), sl) in enumerate(zip(self.irreps_out, self.irreps_out.slices())):
            if ir == EVEN_SCALAR:  # not ir.l == 0: a 0o output (ijk's) from invariants would not flip under inversion
                self.isotropic[str(k)] = nn.Linear(hidden, mul)
                continue
            index = _channel_index(self.irreps_in, ir)  # (channels, ir.dim)
            if len(index):
                self.register_buffer(f"index_{k}", index, persistent=False)
                self.mix[str(k)] = nn.Linear(len(index), mul * num_gates, bias=False)
                self.gates[str(k)] = nn.Linear(hidden, mul * num_gates)
        # the quadratic path only for outputs no feature carries: on outputs the MLP and gates already reach, its
        # products of raw features were large, noisy and slow to tame (eps isotropic part worse than the median)
        self.unreached = [k for k in range(len(self.irreps_out)) if str(k) not in {*self.mix, *self.isotropic}]
        self.quadratic, produced = None, set()
        if self.unreached:
            small = o3.Irreps([(min(mul, quadratic_mul), ir) for mul, ir in self.irreps_in])
            self.project = o3.Linear(self.irreps_in, small)
            self.quadratic = o3.FullyConnectedTensorProduct(small, small, o3.Irreps(
                [self.irreps_out[k] for k in self.unreached]))
            self.quadratic_scale = nn.Parameter(torch.zeros(()))  # starts silent, grows as the loss asks (ReZero)
            produced = {self.quadratic.irreps_out[i.i_out].ir for i in self.quadratic.instructions}
        missing = [str(self.irreps_out[k].ir) for k in self.unreached if self.irreps_out[k].ir not in produced]
        if missing:
            warnings.warn(f"{task.name}: irreps {missing} cannot be produced from node irreps {self.irreps_in}; "
                          "they are predicted as zero (raise max_ell)")

    def forward(self, x: torch.Tensor, data, edges: dict | None = None) -> torch.Tensor:
        # x: (num_nodes, encoder irreps dim); data: the PyG batch; edges: EdgeGeometryBlock's output, shared by the
        # model's readouts (computed here when absent) -> (num_graphs, irreps_out.dim)
        if self.environment is not None:
            if edges is None:
                edges = self.edge_geometry(data, x.dtype)
            x = torch.cat([x, self.environment(edges, len(x))], 1)
        x = self.input_norm(x)
        h = self.invariant(x[:, self.scalar_index])  # (num_nodes, hidden)
        if self.quadratic is not None:
            quadratic = self.quadratic_path(x)
        parts = []
        for k, (mul, ir) in enumerate(self.irreps_out):
            if str(k) in self.isotropic:
                parts.append(self.isotropic[str(k)](h))  # (num_nodes, mul)
            elif str(k) in self.mix:
                features = x[:, getattr(self, f"index_{k}")]  # (num_nodes, channels, ir.dim)
                candidates = self.mix[str(k)](features.transpose(1, 2))  # (num_nodes, ir.dim, mul * num_gates)
                gates = self.gates[str(k)](h).unsqueeze(1)  # (num_nodes, 1, mul * num_gates)
                mixed = (candidates * gates).reshape(len(x), ir.dim, mul, self.num_gates).sum(-1)
                parts.append(mixed.transpose(1, 2).reshape(len(x), mul * ir.dim))  # e3nn layout: channel-major
            else:
                parts.append(quadratic[self.unreached.index(k)])  # (num_nodes, mul * ir.dim)
        per_atom = torch.cat(parts, dim=1)  # (num_nodes, irreps_out.dim)
        return pooled(per_atom, data, self.pooling)

    @full_precision  # e3nn's linear and tensor product: float32 (data.precision)
    def quadratic_path(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: (num_nodes, irreps_in.dim) -> per unreached output k, (num_nodes, irreps_out[k].dim)
        small = self.project(x)
        return (self.quadratic_scale * self.quadratic(small, small)).split(
            [self.irreps_out[k].dim for k in self.unreached], dim=1)


class PseudoscalarReadoutBlock(nn.Module):
    """Node features -> one pseudoscalar (``1x0o``, e.g. a handedness) per atom, pooled: (num_graphs,) normalised
    ((num_nodes,) for a per-atom task, ``pooling=None``). Odd under inversion by construction: a crystal's mirror
    image gets exactly minus its prediction.

    - linear path: a gated mixture of the atom's 0o channels, ``sum_k g_k(h) w_k . x_0o``, gates ``g`` from an MLP of
      its 0e channels (invariant coefficients times odd features, no bias: a bias would be an even term);
    - quadratic path, only when the features carry no 0o: a small projection of each l that comes in both parities
      tensor-multiplied with itself to 0o (1o x 1e, 2e x 2o, ...), gated the same way and starting silent (ReZero).

    An encoder whose features give no 0o at all (natural parity only: 0e, 1o, 2e, 3o; the invariant encoder; an
    SO(3)-only one, all even) cannot tell a crystal from its mirror image: ConfigError at build time
    (``pseudoscalar_sources``). The encoder must also fill its 0o channels: an EquivariantEncoder with parity does at
    its third layer (1e x 1o of a triple product of bond vectors); one without parity never does (outputs 0).
    """

    def __init__(self, irreps_in: o3.Irreps, task: TaskSpec, pooling: str | None = "mean", hidden: int = 64,
                 num_gates: int = 4, quadratic_mul: int = 8, layers: int = 1):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps("1x0o")
        self.pooling, self.num_gates = pooling, num_gates
        odd, pairs = pseudoscalar_sources(task, self.irreps_in)
        # per-irrep scales differ (see TensorReadoutBlock); e3nn's batch norm only rescales 0o (no mean: odd)
        self.input_norm = BatchNorm(self.irreps_in, normalization="component")
        scalars = _channel_index(self.irreps_in, EVEN_SCALAR)
        if not len(scalars):
            raise ConfigError(f"task {task.name!r}: the pseudoscalar readout needs 0e features for its gates, node "
                              f"irreps are {self.irreps_in}")
        self.register_buffer("scalar_index", scalars.reshape(-1), persistent=False)
        self.invariant = nn.Sequential(nn.Linear(len(self.scalar_index), hidden), nn.SiLU(),
                                       *[m for _ in range(layers) for m in (nn.Linear(hidden, hidden), nn.SiLU())])
        self.gates = nn.Linear(hidden, num_gates)
        self.mix = self.quadratic = None
        if odd:
            self.register_buffer("odd_index", _channel_index(self.irreps_in, ODD_SCALAR).reshape(-1),
                                 persistent=False)
            self.mix = nn.Linear(len(self.odd_index), num_gates, bias=False)  # plain weights (TensorReadoutBlock)
        else:
            small = o3.Irreps([(min(mul, quadratic_mul), ir) for mul, ir in self.irreps_in if ir in pairs])
            self.project = o3.Linear(self.irreps_in, small)
            self.quadratic = o3.FullyConnectedTensorProduct(small, small, o3.Irreps(f"{num_gates}x0o"))
            self.quadratic_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, data, edges: dict | None = None) -> torch.Tensor:
        # x: (num_nodes, encoder irreps dim); data: the PyG batch; edges: unused (no geometry) -> (num_graphs,)
        x = self.input_norm(x)
        gates = self.gates(self.invariant(x[:, self.scalar_index]))  # (num_nodes, num_gates), invariant
        if self.mix is not None:
            candidates = self.mix(x[:, self.odd_index])  # (num_nodes, num_gates), odd
        else:
            candidates = self.quadratic_path(x)
        per_atom = (gates * candidates).sum(-1)  # (num_nodes,)
        return pooled(per_atom, data, self.pooling)

    @full_precision  # e3nn's linear and tensor product: float32 (data.precision)
    def quadratic_path(self, x: torch.Tensor) -> torch.Tensor:
        # x: (num_nodes, irreps_in.dim) -> (num_nodes, num_gates) odd products
        small = self.project(x)
        return self.quadratic_scale * self.quadratic(small, small)


def pseudoscalar_sources(task: TaskSpec, irreps: o3.Irreps) -> tuple[bool, set[o3.Irrep]]:
    """What node features ``irreps`` give a 0o output from: (whether they carry 0o, the l>0 irreps whose opposite
    parity of the same l is also there: their products are 0o). ConfigError, naming the hidden irreps to set, if
    neither: such features are the same for a crystal and its mirror image."""
    present = {ir for _, ir in o3.Irreps(irreps)}
    pairs = {ir for ir in present if ir.l > 0 and o3.Irrep(ir.l, -ir.p) in present}
    if ODD_SCALAR not in present and not pairs:
        raise ConfigError(f"task {task.name!r}: a pseudoscalar (0o) needs odd scalars, or one l in both parities, in "
                          f"the encoder's features, which are {o3.Irreps(irreps).simplify()}: use an "
                          "EquivariantEncoder with parity: true and model.encoder.init_args.hidden_irreps with 0o and "
                          "1e, e.g. '32x0e+8x0o+16x1o+8x1e+8x2e' (3 layers); an invariant or SO(3)-only encoder "
                          "sees a crystal and its mirror image alike")
    return ODD_SCALAR in present, pairs


def pooled(per_atom: torch.Tensor, data, pooling: str | None) -> torch.Tensor:
    """(num_nodes, ...) per-atom outputs -> (num_graphs, ...) by ``pooling`` over each structure; unchanged if None.
    Float32 under autocast: pooled in it, and the loss and metrics read it (data.precision)."""
    per_atom = upcast(per_atom)
    if pooling is None:
        return per_atom
    return scatter(per_atom, data[keys.BATCH], dim=0, dim_size=data.num_graphs, reduce=pooling)


def _channel_index(irreps: o3.Irreps, ir: o3.Irrep) -> torch.Tensor:
    """(channels, ir.dim) positions of every copy of ``ir`` in a feature vector laid out as ``irreps``."""
    rows = [list(range(sl.start + u * ir.dim, sl.start + (u + 1) * ir.dim))
            for (mul, ir_in), sl in zip(irreps, irreps.slices()) if ir_in == ir for u in range(mul)]
    return torch.as_tensor(rows, dtype=torch.long).reshape(len(rows), ir.dim)


def build_head(task: TaskSpec, irreps_in: o3.Irreps, environment_channels: int = 0, cutoff: float = 5.0,
               hidden: int = 64, layers: int = 1) -> nn.Module:
    """The readout a task needs (its kind's ``readout``): a tensor readout for tensors, a pseudoscalar readout for
    pseudoscalars, a scalar readout otherwise (binary: a logit), pooled by the task's pooling, or per atom for a
    per-atom task. ``hidden``: width of its invariant MLP; ``layers``: hidden-to-hidden layers of that MLP."""
    pooling = None if task.level == "atom" else task.pooling
    if task.kind_def.readout == "tensor":
        return TensorReadoutBlock(irreps_in, task, pooling, hidden=hidden, cutoff=cutoff, layers=layers,
                                  environment_channels=environment_channels)
    if task.kind_def.readout == "pseudoscalar":
        return PseudoscalarReadoutBlock(irreps_in, task, pooling, hidden=hidden, layers=layers)
    return ScalarReadoutBlock(irreps_in, pooling, hidden=hidden, layers=layers, outputs=task.kind_def.outputs(task))


def irreps_read(task: TaskSpec, irreps_in: o3.Irreps) -> set[o3.Irrep]:
    """The irreps of node features ``irreps_in`` that the readout of ``task`` reads (what the encoder's last layer
    must carry for it): 0e for a scalar readout; for a tensor readout 0e and its other outputs (l>0, 0o), and every
    irrep when one of its outputs is reached only by the quadratic path (as ``TensorReadoutBlock`` builds it); for a
    pseudoscalar readout 0e and 0o, or without 0o the opposite-parity pairs its quadratic path multiplies
    (ConfigError when there are none)."""
    if task.kind_def.readout == "pseudoscalar":
        odd, pairs = pseudoscalar_sources(task, irreps_in)
        return {EVEN_SCALAR, ODD_SCALAR} if odd else {EVEN_SCALAR} | pairs
    if task.kind_def.readout != "tensor":
        return {EVEN_SCALAR}
    present = {ir for _, ir in o3.Irreps(irreps_in)}
    outputs = {ir for _, ir in o3.Irreps(task.cartesian_tensor) if ir != EVEN_SCALAR}
    if outputs - present:  # the quadratic path projects every input irrep
        return present
    return {EVEN_SCALAR} | outputs
