"""The one path from a batch of graphs to what a user reads: physical units, the users' Voigt form, derived K/G,
one row per structure (an array per atom for a per-atom task), and the latent vector of each structure."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.tasks import per_atom_tasks
from equiprop.data.tensor_ops import voigt_bulk_modulus, voigt_shear_modulus

STD_SUFFIX = "_std"


def batch_outputs(model, batch, tasks: list[str], features: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """{output: float64 array} of a batch in physical units and the users' form (Voigt where a task has one; binary:
    probability), one row per structure (per atom for a per-atom task), plus K_Voigt/G_Voigt (GPa) from a predicted
    elastic tensor. ``features``: the encoder's output when already computed (members sharing a frozen encoder)."""
    physical = model.predict_physical(batch, tasks, features)
    if "elastic_tensor" in physical:
        physical["K_Voigt"] = voigt_bulk_modulus(physical["elastic_tensor"])
        physical["G_Voigt"] = voigt_shear_modulus(physical["elastic_tensor"])
    return {name: model.tasks[name].to_user(value.double().cpu().numpy()) if name in model.tasks
            else value.double().cpu().numpy() for name, value in physical.items()}


def per_structure(outputs: dict[str, np.ndarray], batch, tasks: dict, suffix: str = STD_SUFFIX) -> list[dict]:
    """One dict per structure of a batch from batched ``outputs``: a float or array per structure, an array with one
    row per atom for a per-atom task (also for its ``<task><suffix>`` companion)."""
    ptr = batch.ptr.tolist() if hasattr(batch, "ptr") and batch.ptr is not None else [0, batch.num_nodes]
    per_atom = per_atom_tasks(tasks)
    per_atom |= {name + suffix for name in per_atom}
    rows = []
    for i in range(batch.num_graphs):
        rows.append({name: values[ptr[i]:ptr[i + 1]] if name in per_atom else
                     float(values[i]) if np.ndim(values[i]) == 0 else np.asarray(values[i])
                     for name, values in outputs.items()})
    return rows


def output_units(tasks: dict, output_tasks: list[str]) -> dict[str, str]:
    """Units of each output, one key per output: the task's units; "probability" for a binary task (its output is
    the predicted probability of class 1, in [0, 1]); K_Voigt/G_Voigt in GPa."""
    units = {name: tasks[name].output_units for name in output_tasks}
    if "elastic_tensor" in units:
        units.update({"K_Voigt": "GPa", "G_Voigt": "GPa"})
    return units


def latent_vectors(irreps_out, features: torch.Tensor, batch) -> torch.Tensor:
    """(num_graphs, d) invariant latent vector of each structure: the mean over its atoms of the encoder's 0e channels
    and the norms of its other channels (a map of the learned space: ``equiprop embed``, ``suggest``'s diversity)."""
    parts = []
    for (mul, ir), block in zip(irreps_out, features.split([m.dim for m in irreps_out], dim=1)):
        block = block.reshape(-1, mul, ir.dim)
        parts.append(block[:, :, 0] if ir.l == 0 and ir.p == 1 else block.norm(dim=-1))
    return scatter(torch.cat(parts, dim=1), batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce="mean")
