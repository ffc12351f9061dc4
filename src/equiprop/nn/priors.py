"""Physics priors: a task's head predicts a correction to a physical estimate instead of the whole quantity.

``model.priors: {task: prior}``. For each such task the prediction in model space is ``g * prior + scale * head``
(normalised space: ``head + g * normalise(prior)``), with a learnable gain g per irrep block (one for a scalar),
initialised at 1, so a head starts from the estimate and learns what the physics misses. The gain of each l>0 block
multiplies a whole irrep, and the normaliser shifts only 0e: tensors stay exactly equivariant.

Priors (the estimates come from the frozen pretrained potential, ``potential_physics``, cached per structure):

- ``potential_energy`` (a scalar task in eV/atom, e.g. Ef): the potential's energy per atom minus elemental reference
  energies ``sum_e x_e mu_e``. The references are fitted by least squares on the training split's labelled
  structures, ``E_pot/atom - Ef ~ sum_e x_e mu_e``, at the start of a fit, and stored with the model. Fitted rather
  than the potential's own elemental ground states: those need a relaxed structure of every element, which the data
  here does not hold, and the fit also absorbs the potential's systematic error per element (and any correction
  scheme of the labels, e.g. MP2020's anion corrections).
- ``potential_stiffness`` (the elastic tensor ``ijkl=jikl=klij``): the potential's stiffness (clamped-ion, or
  relaxed-ion with ``prior_relaxed_ion``) as the head's starting tensor. With ``parametrization: spd_log`` the
  correction is in log space: ``C = expm(g logm(C_pot) + dL)`` (eigenvalues of C_pot floored at 1 GPa first, so a
  mechanically unstable estimate still has a log).
- ``potential_bulk_modulus`` / ``potential_shear_modulus`` (log-scalar K/G tasks in GPa, or MatBench's log10(GPa)):
  the Voigt-Reuss-Hill modulus of that stiffness, in log10.
- ``penn`` (dielectric ``ij=ji`` tensors, or the refractive index): Penn's model ``eps = 1 + (hbar w_p / E_P)^2``
  with the valence-electron plasma energy from composition and volume and the Penn gap
  ``E_P = Eg_pred + E_0``, Eg_pred the model's own band-gap prediction (detached; the task named by ``penn_gap_task``,
  when the model has it) and E_0 learnable (starts at 4 eV).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import atoms_per_graph
from equiprop.data.precision import full_precision
from equiprop.data.tasks import TaskSpec
from equiprop.data.tensor_ops import MANDEL_WEIGHTS, from_mandel_torch, hill_moduli
from equiprop.nn.blocks import MAX_Z

PRIOR_QUANTITY = {"potential_energy": "energy", "potential_stiffness": "stiffness",
                  "potential_bulk_modulus": "stiffness", "potential_shear_modulus": "stiffness", "penn": None}
PLASMA_EV = 37.133  # hbar * sqrt(n e^2 / (eps0 m_e)) in eV for n = 1 electron per Å^3
STIFFNESS_FLOOR = 1.0  # GPa: smallest eigenvalue of a stiffness estimate before its log
PENN_OFFSET = 4.0  # eV: starting E_0 of the Penn gap


def valence_electrons() -> torch.Tensor:
    """(MAX_Z + 1,) valence electrons per element: s+d electrons of groups 1-12, s+p of 13-18 (group - 10), 3 for
    lanthanides and actinides, 2 for He (the convention of Phillips-Van Vechten/Penn-model estimates)."""
    from pymatgen.core import Element

    table = torch.zeros(MAX_Z + 1, dtype=torch.float64)
    for z in range(1, MAX_Z + 1):
        element = Element.from_Z(z)
        group = element.group
        table[z] = 2 if z == 2 else 3 if (element.is_lanthanoid or element.is_actinoid) else (
            group if group <= 12 else group - 10)
    return table


def check_prior(task: TaskSpec, prior: str) -> None:
    """One-line ConfigError when ``prior`` cannot serve ``task``."""
    if prior not in PRIOR_QUANTITY:
        raise ConfigError(f"model.priors: unknown prior {prior!r} for {task.name}; available: {sorted(PRIOR_QUANTITY)}")
    number = task.kind_def.readout == "scalar" and task.kind_def.normalised  # a regressed number, not a class
    log_modulus = number and task.model_units == "log10(GPa)"  # a log_scalar in GPa, or a scalar in log10(GPa)
    fits = {"potential_energy": number and task.model_units == "eV/atom",
            "potential_stiffness": task.formula == "ijkl=jikl=klij",
            "potential_bulk_modulus": log_modulus, "potential_shear_modulus": log_modulus,
            "penn": task.formula == "ij=ji" or (number and task.model_units == task.units
                                                 and task.name == "refractive_index")}[prior]
    if not fits or task.level != "structure":  # every prior estimates a property of the whole crystal
        raise ConfigError(f"model.priors: {prior!r} cannot serve task {task.name!r} ({task.kind}, {task.units}, "
                          f"formula {task.formula}, level {task.level}); see equiprop.nn.priors")


def mandel_weights(like: torch.Tensor) -> torch.Tensor:
    """(6, 6) factors that turn a Voigt stiffness matrix into its Mandel matrix (sqrt(2) per shear index)."""
    return torch.as_tensor(np.outer(MANDEL_WEIGHTS, MANDEL_WEIGHTS), dtype=like.dtype, device=like.device)


def floored_stiffness(voigt: torch.Tensor) -> torch.Tensor:
    """(n, 6, 6) Voigt stiffness with the Mandel eigenvalues floored at STIFFNESS_FLOOR GPa (rotation-covariant)."""
    weights = mandel_weights(voigt)
    w, v = torch.linalg.eigh(voigt * weights)
    return (v * w.clamp(min=STIFFNESS_FLOOR).unsqueeze(1)) @ v.transpose(1, 2) / weights


class PhysicsPriors(nn.Module):
    """The priors of a model's tasks (see the module docstring); ``apply`` adds them to the heads' outputs."""

    def __init__(self, tasks: dict[str, TaskSpec], priors: dict[str, str], potential: str = "7net-0",
                 relaxed_ion: bool = False, penn_gap_task: str = "Eg", cache_dir: str | None = None,
                 encoder: nn.Module | None = None):
        super().__init__()
        unknown = set(priors) - set(tasks)
        if unknown:
            raise ConfigError(f"model.priors names tasks the model does not have: {sorted(unknown)}")
        for name, prior in priors.items():
            check_prior(tasks[name], prior)
        self.tasks, self.priors = tasks, dict(priors)
        self.potential, self.relaxed_ion, self.cache_dir = potential, relaxed_ion, cache_dir
        self.penn_gap_task = penn_gap_task if penn_gap_task in tasks else None
        self.gains = nn.ParameterDict({name: nn.Parameter(torch.ones(_blocks(tasks[name]))) for name in priors})
        if "potential_energy" in self.priors.values():
            self.register_buffer("reference_energies", torch.zeros(MAX_Z + 1, dtype=torch.float64))  # eV per atom
        if "penn" in self.priors.values():
            self.penn_offset = nn.Parameter(torch.tensor(math.log(math.expm1(PENN_OFFSET))))  # softplus -> E_0, eV
            self.register_buffer("valence", valence_electrons(), persistent=False)
        self._physics = None
        if "potential_energy" in self.priors.values() and hasattr(encoder, "record_energies"):
            encoder.record_energies(potential)  # a frozen encoder on this potential hands over its pass's energies

    def _quantity(self, prior: str) -> str | None:
        quantity = PRIOR_QUANTITY[prior]
        return f"{quantity}_relaxed" if quantity == "stiffness" and self.relaxed_ion else quantity

    @property
    def physics(self):
        if self._physics is None:  # built on first use: a model without priors never loads the potential
            from equiprop.nn.potential_physics import shared_physics

            self._physics = shared_physics(self.potential, [], self.cache_dir)
        return self._physics

    # -- fitted state ----------------------------------------------------------------------------------------------
    def fit_references(self, loader, task: str) -> dict:
        """Least-squares elemental references for the ``potential_energy`` prior of ``task`` from a loader of
        training batches: E_pot/atom - label ~ sum_e x_e mu_e. Returns the fit's residual MAE, eV/atom."""
        rows, targets, elements = [], [], set()
        for batch in loader:
            mask = batch[keys.mask_key(task)].bool()
            if not mask.any():
                continue
            energy = self.physics.quantity(batch, "energy", mask)[mask, 0]
            fractions = self._fractions(batch)[mask]
            rows.append(fractions)
            targets.append(energy - batch[keys.label_key(task)][mask].double().flatten())
            elements |= set(torch.nonzero(fractions.sum(0)).flatten().tolist())
        x, y = torch.cat(rows), torch.cat(targets)
        used = sorted(elements)
        a = x[:, used]
        ridge = 1e-8 * torch.eye(len(used), dtype=torch.float64)  # elements that always co-occur stay finite
        mu = torch.linalg.solve(a.T @ a + ridge, a.T @ y)
        self.reference_energies.zero_()
        self.reference_energies[used] = mu
        return {"labels": len(y), "elements": len(used), "mae": float((a @ mu - y).abs().mean())}

    def _fractions(self, batch) -> torch.Tensor:  # -> (num_graphs, MAX_Z + 1) atomic fractions
        numbers, index = batch[keys.ATOMIC_NUMBERS], batch[keys.BATCH]
        counts = torch.zeros(int(batch.num_graphs), MAX_Z + 1, dtype=torch.float64, device=numbers.device)
        counts.index_put_((index, numbers), torch.ones_like(numbers, dtype=torch.float64), accumulate=True)
        return counts / counts.sum(1, keepdim=True)

    # -- estimates in each task's model space ----------------------------------------------------------------------
    def estimate(self, name: str, batch, rows: torch.Tensor, predictions: dict, normalizer,
                 encoder: nn.Module | None = None) -> torch.Tensor:
        """Model-space prior of task ``name`` for the structures of ``batch`` (zero outside ``rows``); ``encoder``: the
        model's, whose pass over ``batch`` may have computed the potential's energies already."""
        prior, task = self.priors[name], self.tasks[name]
        if prior == "potential_energy":
            known = encoder.pretrained_energies(self.physics.runner.backbone) if hasattr(
                encoder, "pretrained_energies") else None
            energy = self.physics.quantity(batch, "energy", rows, known)[:, 0]
            return energy - self._fractions(batch) @ self.reference_energies
        if prior == "penn":
            return self._penn(batch, task, predictions, normalizer)
        voigt = self.physics.quantity(batch, self._quantity(prior), rows).reshape(-1, 6, 6)
        voigt = torch.where(rows.view(-1, 1, 1), voigt, 100.0 * torch.eye(6, dtype=voigt.dtype))  # any SPD filler
        voigt = floored_stiffness(voigt)
        if prior == "potential_stiffness":
            mandel = voigt * mandel_weights(voigt)
            if task.parametrization == "spd_log":
                w, v = torch.linalg.eigh(mandel)
                mandel = (v * torch.log(w).unsqueeze(1)) @ v.transpose(1, 2)
            return from_mandel_torch(mandel)  # (n, 3, 3, 3, 3) model-space Cartesian tensor
        bulk, shear = hill_moduli(voigt)
        return torch.log10((bulk if prior == "potential_bulk_modulus" else shear).clamp(min=STIFFNESS_FLOOR))

    def _penn(self, batch, task: TaskSpec, predictions: dict, normalizer) -> torch.Tensor:
        electrons = scatter(self.valence[batch[keys.ATOMIC_NUMBERS]], batch[keys.BATCH], dim=0,
                            dim_size=int(batch.num_graphs), reduce="sum")
        volume = torch.linalg.det(batch[keys.CELL].double()).abs()
        plasma = PLASMA_EV * torch.sqrt(electrons / volume)  # eV
        gap = torch.nn.functional.softplus(self.penn_offset).double()
        if self.penn_gap_task is not None:
            eg = predictions.get(self.penn_gap_task)
            if eg is not None:
                gap = gap + normalizer.to_physical(self.penn_gap_task, eg.detach()).double().clamp(min=0.0)
        chi = (plasma / gap) ** 2  # eps - 1
        if task.rank == 0:  # refractive index
            return torch.sqrt(1.0 + chi)
        eye = torch.eye(3, dtype=torch.float64, device=chi.device)
        if task.parametrization == "spd_log":
            return torch.log(chi).view(-1, 1, 1) * eye
        return (1.0 + chi).view(-1, 1, 1) * eye

    # -- applied to the heads' outputs -----------------------------------------------------------------------------
    @full_precision  # the pretrained potential and the normaliser in float32 under autocast (data.precision)
    def apply(self, batch, predictions: dict[str, torch.Tensor], normalizer,
              rows: dict[str, torch.Tensor] | None = None, encoder: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Normalised predictions with each prior added (``rows``: per task, the structures that need it, default
        all; the model-space Penn prior reads the gap task's prediction from ``predictions`` when present;
        ``encoder``: see ``estimate``)."""
        out = dict(predictions)
        num_atoms = atoms_per_graph(batch)
        for name in [n for n in self.priors if n in predictions]:
            pred = predictions[name]
            need = rows.get(name) if rows is not None else None
            need = torch.ones(len(pred), dtype=torch.bool, device=pred.device) if need is None else need.bool()
            if not need.any():
                continue
            model = self.estimate(name, batch, need, predictions, normalizer, encoder).to(pred.dtype)
            prior = normalizer.normalise(name, model, num_atoms)  # (n,) or (n, irreps dim)
            prior = torch.where(need.view(-1, *[1] * (prior.ndim - 1)), prior, torch.zeros_like(prior))
            out[name] = pred + prior * self._gain(name).to(pred.dtype)
        return out

    def _gain(self, name: str) -> torch.Tensor:
        task, gain = self.tasks[name], self.gains[name]
        if task.rank == 0:
            return gain[0]
        sizes = [ir.dim for mul, ir in task.cartesian_tensor for _ in range(mul)]
        return torch.repeat_interleave(gain, torch.as_tensor(sizes, device=gain.device))


def _blocks(task: TaskSpec) -> int:
    return sum(mul for mul, _ in task.cartesian_tensor) if task.rank else 1
