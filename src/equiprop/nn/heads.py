"""Property readouts: node features -> one prediction per structure, in normalised model space.

Each readout states its physical output irreps: ``1x0e`` for scalars, the ``CartesianTensor`` irreps for tensors
(dielectric ``ij=ji`` -> 1x0e+1x2e; elastic ``ijkl=jikl=klij`` -> 2x0e+2x2e+1x4e; piezo ``ijk=ikj`` ->
2x1o+1x2o+1x3o). Tensor readouts return Cartesian tensors: irreps stay inside.
"""

from __future__ import annotations

import warnings

import torch
from e3nn import o3
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data.tasks import TaskSpec, change_of_basis


def _scalars(irreps: o3.Irreps) -> o3.Irreps:
    return o3.Irreps([(mul, ir) for mul, ir in irreps if ir == o3.Irrep("0e")])


class ScalarReadoutBlock(nn.Module):
    """Invariant scalars of each atom -> MLP -> one number per atom, pooled (mean: intensive, sum: extensive, max:
    set by the most extreme atom, e.g. the highest phonon frequency).

    The 0e channels are gathered by index and fed to a plain ``nn.Linear`` with a bias. (An ``o3.Linear`` here, as
    before, has no bias and divides by sqrt(fan-in) in its forward: with 640 input scalars its weights learn ~25x
    slower under Adam, and frozen-feature heads underfit: matbench_phonons fold 0, 68.7 vs 43.7 cm^-1.)
    """

    def __init__(self, irreps_in: o3.Irreps, pooling: str = "mean", hidden: int = 64):
        super().__init__()
        self.irreps_in, self.irreps_out, self.pooling = o3.Irreps(irreps_in), o3.Irreps("1x0e"), pooling
        scalars = [i for (mul, ir), sl in zip(self.irreps_in, self.irreps_in.slices()) if ir == o3.Irrep("0e")
                   for i in range(sl.start, sl.stop)]
        self.register_buffer("scalar_index", torch.as_tensor(scalars, dtype=torch.long), persistent=False)
        self.select = nn.Linear(len(scalars), hidden)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        per_atom = self.mlp(self.select(x[:, self.scalar_index])).squeeze(-1)  # (num_nodes,)
        return scatter(per_atom, batch, dim=0, dim_size=num_graphs, reduce=self.pooling)  # (num_graphs,)


class TensorReadoutBlock(nn.Module):
    """Node features -> tensor irreps per atom (linear + quadratic paths), mean-pooled, returned as Cartesian.

    The quadratic path (a tensor product of a small projection of the features with itself) reaches irreps that
    no hidden feature carries, e.g. 2o of the piezoelectric tensor from 1o x 2e, or 4e of the elastic tensor.
    """

    def __init__(self, irreps_in: o3.Irreps, task: TaskSpec, pooling: str = "mean", quadratic_mul: int = 8):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        cartesian = task.cartesian_tensor
        self.irreps_out = o3.Irreps(cartesian)  # e.g. 1x0e+1x2e
        self.pooling, self.cartesian_shape = pooling, task.model_shape
        self.linear = o3.Linear(self.irreps_in, self.irreps_out)
        small = o3.Irreps([(min(mul, quadratic_mul), ir) for mul, ir in self.irreps_in])
        self.project = o3.Linear(self.irreps_in, small)
        self.quadratic = o3.FullyConnectedTensorProduct(small, small, self.irreps_out)
        reachable = {ir for _, ir in self.linear.irreps_out if self.linear.irreps_in.count(ir)}
        reachable |= {ir for i in self.quadratic.instructions for ir in [self.irreps_out[i.i_out].ir]}
        missing = [str(ir) for _, ir in self.irreps_out if ir not in reachable]
        if missing:
            warnings.warn(f"{task.name}: irreps {missing} cannot be produced from node irreps {self.irreps_in}; "
                          "they are predicted as zero (raise max_ell)")
        basis = torch.as_tensor(change_of_basis(task.formula), dtype=torch.get_default_dtype())
        self.register_buffer("change_of_basis", basis)  # (irreps dim, 3^rank)

    def forward(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        small = self.project(x)
        per_atom = self.linear(x) + self.quadratic(small, small)  # (num_nodes, irreps_out.dim)
        pooled = scatter(per_atom, batch, dim=0, dim_size=num_graphs, reduce=self.pooling)
        return (pooled @ self.change_of_basis).reshape(num_graphs, *self.cartesian_shape)


def build_head(task: TaskSpec, irreps_in: o3.Irreps) -> nn.Module:
    """The readout a task needs: a tensor readout for tensors, a scalar readout otherwise (binary: a logit)."""
    if task.kind == "tensor":
        return TensorReadoutBlock(irreps_in, task, task.pooling)
    return ScalarReadoutBlock(irreps_in, task.pooling)
