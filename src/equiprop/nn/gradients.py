"""Forces and stress as derivatives of a predicted energy (``forces``/``stress`` kinds, ``data/kinds/gradients.py``).

As in nequip and MACE: positions are made differentiable, a symmetric strain ``eps`` (zero) displaces cell and
positions, ``x -> x (I + eps)``, and one backward pass of the total energy gives ``F = -dE/dx`` and
``sigma = (1/V) dE/deps``. Edge vectors are recomputed from positions, cell and integer image shifts
(``data.graph.edge_vectors``), so every path from geometry to energy is differentiated, the periodic images'
included. Conservative and equivariant by construction.

Evaluation under ``torch.inference_mode`` (Lightning's validation, testing and prediction) cannot record a graph:
``differentiable_geometry`` leaves inference mode for the forward that needs one, with copies of the batch's tensors
(an inference tensor cannot be saved for backward).
"""

from __future__ import annotations

import copy

import torch

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import atoms_per_graph
from equiprop.data.kinds.gradients import check_energy_task


def differentiable_geometry(batch, stress: bool) -> tuple[object, torch.Tensor, torch.Tensor | None]:
    """A shallow copy of ``batch`` whose positions and cell depend on fresh leaves: (batch, positions (num_nodes, 3)
    leaf, strain (num_graphs, 3, 3) leaf or None). Call inside ``torch.inference_mode(False)`` and grad enabled."""
    data = copy.copy(batch)
    for key in data.keys():
        value = data[key]
        if isinstance(value, torch.Tensor) and value.is_inference():
            data[key] = value.clone()  # a normal tensor, which autograd may save
    positions = data[keys.POSITIONS].detach().clone().requires_grad_(True)  # (num_nodes, 3) Å
    if not stress:
        data[keys.POSITIONS] = positions
        return data, positions, None
    strain = torch.zeros(data.num_graphs, 3, 3, dtype=positions.dtype, device=positions.device,
                         requires_grad=True)  # (num_graphs, 3, 3)
    symmetric = 0.5 * (strain + strain.transpose(1, 2))
    deformation = torch.eye(3, dtype=positions.dtype, device=positions.device) + symmetric  # row vectors: x (I+eps)
    data[keys.POSITIONS] = torch.einsum("ni,nij->nj", positions, deformation[data[keys.BATCH]])
    data[keys.CELL] = data[keys.CELL].to(positions.dtype) @ deformation  # (num_graphs, 3, 3) rows
    return data, positions, strain


def energy_derivatives(total_energy: torch.Tensor, data, positions: torch.Tensor, strain: torch.Tensor | None,
                       create_graph: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(forces (num_nodes, 3) eV/Å, stress (num_graphs, 3, 3) eV/Å^3 or None) of ``total_energy`` (num_graphs,) eV.
    ``create_graph``: keep the derivatives differentiable (training on force or stress labels)."""
    inputs = [positions] + ([strain] if strain is not None else [])
    grads = torch.autograd.grad(total_energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
    if grads[0] is None:
        raise ConfigError("forces and stress need an energy that depends on the positions through the encoder; this "
                          "encoder's features do not (cached or frozen features: run the backbone live, or train "
                          "the energy alone)")
    forces = -grads[0]
    if strain is None:
        return forces, None
    volume = torch.linalg.det(data[keys.CELL]).abs()  # (num_graphs,) Å^3 of the (strained: eps = 0) cell
    return forces, grads[1] / volume[:, None, None]


def gradient_tasks(tasks: dict, priors: dict | None = None) -> dict[str, str]:
    """{forces or stress task: the energy task it differentiates} of a model's ``tasks`` (TaskSpec by name), checked:
    the energy task is predicted, differentiable (``check_energy_task``), one for all, and carries no prior (a
    prior's energy is computed apart from the encoder's graph: its forces would be missing)."""
    derived = {name: task.energy for name, task in tasks.items() if task.kind_def.readout == "gradient"}
    for name, energy in derived.items():
        check_energy_task(tasks[name], tasks.get(energy))
        if energy in (priors or {}):
            raise ConfigError(f"task {name!r}: its energy task {energy!r} has a prior ({priors[energy]}), whose forces "
                              "are not differentiated; drop the prior or the forces")
    if len(set(derived.values())) > 1:
        raise ConfigError(f"forces and stress of one energy task per model, got {derived}")
    return derived


def with_energy_derivatives(forward_heads, normalizer, tasks: dict, derived_from: dict[str, str], batch,
                            names: list[str]) -> dict[str, torch.Tensor]:
    """Normalised outputs of ``names``: the heads' (``forward_heads(batch, head_names)``, which also runs the energy
    task's head), and the forces and stress of the energy by one backward pass, normalised like labels by
    ``normalizer`` (a ``TaskNormalizer``). The graph is recorded even under inference mode; the outputs are
    detached unless grad was on (training: the loss differentiates the forces again)."""
    recording = torch.is_grad_enabled()
    derived = [n for n in names if n in derived_from]
    energy = derived_from[derived[0]]  # one energy task per model (gradient_tasks)
    with torch.inference_mode(False), torch.enable_grad():
        data, positions, strain = differentiable_geometry(batch, any(tasks[n].rank == 2 for n in derived))
        out = forward_heads(data, list(dict.fromkeys([n for n in names if n not in derived_from] + [energy])))
        num_atoms = atoms_per_graph(data)
        total = normalizer.to_physical(energy, out[energy], num_atoms)  # (num_graphs,) eV or eV/atom, >= float32
        if tasks[energy].pooling == "mean":  # eV/atom -> the cell's energy
            total = total * num_atoms
        forces, stress = energy_derivatives(total, data, positions, strain, create_graph=recording)
        for name in derived:
            physical = (forces if tasks[name].rank == 1 else stress) * tasks[name].kind_def.factor(tasks[name])
            out[name] = normalizer.normalise(name, physical)
    out = {name: out[name] for name in names}
    return out if recording else {name: value.detach() for name, value in out.items()}
