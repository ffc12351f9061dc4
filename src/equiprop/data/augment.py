"""Augmentation of training batches: positional noise and small strains, and which labels survive them.

The data module applies it on the device to training batches only (``MultiTaskDataModule.on_after_batch_transfer``;
never to validation, test or prediction), with a fresh draw for every batch of every epoch from a generator seeded by
(``seed_everything``'s seed, DDP rank, the batch's index in the fit): the same seed gives the same draws, also after
a resume, and the draws take nothing from the global random stream (weights and dropout are those of the same run
without augmentation). Graphs keep their integer image shifts and edges are recomputed from positions and cell
(``graph.edge_vectors``), so moving atoms or straining the cell moves every edge consistently; the neighbour list is
the unperturbed structure's, which is why both are kept small.

Label policy, from the physics (what is masked is counted, ``AugmentationCounts``; nothing is dropped silently):

- **Noise** (a rattle u ~ N(0, noise^2) per Cartesian component, each structure's mean displacement removed: a rigid
  translation changes nothing and could not be predicted). A label y(x + u) = y(x) + grad y . u + O(u^2): the first
  term has zero mean, so the kept label is unbiased to first order, with a spread ~ noise |grad y|; at a relaxed
  structure the energy's gradient (the forces) vanishes and its change is second order, 3/2 k noise^2 per atom
  (~6 meV/atom for k = 10 eV/Å^2 and 0.02 Å, below formation-energy errors of ~30 meV/atom). Keeping the labels is
  the accepted approximation of denoising pretraining (Noisy Nodes, Godwin et al. 2022; Zaidi et al. 2023), with
  noise of a few hundredths of an Å. Labels of that exact geometry (forces, stress and the energy they derive from:
  tasks with an ``energy`` field) change at first order (F = -k u: 0.2 eV/Å) and are masked on noised structures.
- **Strain** (symmetric eps, each component uniform in [-strain, strain]; cell -> cell (I + eps), positions likewise:
  fractional coordinates unchanged). A scalar changes at first order, (dy/d eps) : eps, zero in mean, spread ~
  |dy/d ln V| strain. Kept by default, where that is small against the model's error: band gaps (deformation
  potentials 5-10 eV: 0.05-0.1 eV at 0.01), formation energies (second order at a relaxed cell: ~0.5 meV/atom at
  0.01). Not small for log10 K (K' ~ 4: 0.017 at 0.01, the size of the best MatBench errors) nor for phonon
  frequencies (Grüneisen 1-2: 1-2% per 1% of volume): use strain <= 0.002 there or list them in ``strain_masked``.
  Tensor labels (rank >= 1: dielectric, elastic, piezoelectric, Born charges) change at first order through
  coefficients no data set gives (photoelastic, third-order elastic), anisotropically (a sheared cubic crystal gets an
  anisotropic dielectric tensor): no consistent transform exists, so they are masked on strained structures;
  ``strain_fraction`` < 1 keeps unstrained examples for them. Rotations are not offered: equiprop's encoders are
  exactly rotation-equivariant, so a rotated crystal (with its tensors rotated) teaches them nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.utils import scatter

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import graph_index
from equiprop.data.tasks import TaskSpec
from equiprop.data.tensor_ops import VOIGT_PAIRS

MAX_NOISE = 0.2  # Å: labels are kept for a small rattle only, and the neighbour list is the unperturbed one
MAX_STRAIN = 0.05  # beyond, first-order label arguments and the unstrained neighbour list no longer hold


@dataclass(frozen=True)
class Augmentation:
    """Augmentation of training batches (``equiprop.data.augment``: the label policy and why).

    Args:
        noise: standard deviation of a Gaussian displacement of every atom (each Cartesian component), Å; each
            structure's mean displacement is removed. Labels kept; forces/stress/energy tasks masked. 0: off.
        noise_fraction: fraction of the training structures noised in each draw (the rest keep their positions).
        strain: largest |component| of a random symmetric strain of cell and positions (dimensionless; 0.01 = 1%).
            Scalar labels kept, tensor labels masked on strained structures. 0: off.
        strain_fraction: fraction of the training structures strained in each draw, so tensor tasks keep unstrained
            examples.
        strain_masked: scalar tasks whose labels are masked on strained structures too (e.g. K_VRH, G_VRH: log10
            moduli change ~0.017 at strain 0.01).
    """

    noise: float = 0.0
    noise_fraction: float = 1.0
    strain: float = 0.0
    strain_fraction: float = 1.0
    strain_masked: tuple[str, ...] = ()

    def __post_init__(self):
        small = " (labels are kept for small ones only)"
        rules = {"noise": (MAX_NOISE, " Å" + small), "noise_fraction": (1.0, ""), "strain": (MAX_STRAIN, small),
                 "strain_fraction": (1.0, "")}
        for name, (high, why) in rules.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= high:  # NaN fails too
                raise ConfigError(f"data.augment.{name} must be in [0, {high:g}]{why}, got {value!r}")
        object.__setattr__(self, "strain_masked", tuple(self.strain_masked))

    @property
    def active(self) -> bool:
        return (self.noise > 0 and self.noise_fraction > 0) or (self.strain > 0 and self.strain_fraction > 0)

    @classmethod
    def checked(cls, value, tasks: dict[str, TaskSpec]) -> Augmentation:
        """``value`` (an Augmentation, or from Python a mapping of its fields) checked against the data's tasks."""
        if isinstance(value, dict):
            known = list(cls.__dataclass_fields__)
            if set(value) - set(known):
                raise ConfigError(f"data.augment: unknown options {sorted(set(value) - set(known))}; known: {known}")
            value = cls(**value)
        unknown = sorted(set(value.strain_masked) - set(tasks))
        if unknown:
            raise ConfigError(f"data.augment.strain_masked names tasks the data does not have: {unknown} "
                              f"(tasks: {sorted(tasks)})")
        return value


# -- which labels survive ------------------------------------------------------------------------------------------
def geometry_tasks(tasks: dict[str, TaskSpec]) -> set[str]:
    """Tasks whose labels belong to the exact geometry: forces and stress (tasks naming an ``energy``) and the energy
    tasks they name. Masked on every noised or strained structure."""
    bound = {name for name, task in tasks.items() if getattr(task, "energy", None)}
    return bound | {tasks[name].energy for name in bound if tasks[name].energy in tasks}


def masked_tasks(tasks: dict[str, TaskSpec], augment: Augmentation) -> dict[str, set[str]]:
    """{"noise": tasks masked on noised structures, "strain": tasks masked on strained structures}."""
    bound = geometry_tasks(tasks)
    tensors = {name for name, task in tasks.items() if task.rank > 0}
    return {"noise": bound, "strain": bound | tensors | set(augment.strain_masked)}


# -- draws ---------------------------------------------------------------------------------------------------------
def batch_generator(device: torch.device, seed: int, rank: int, step: int) -> torch.Generator:
    """A generator on ``device`` for one batch: seeded by the run's seed, the DDP rank and the batch's index in the
    fit, so draws repeat with the seed (also after a resume) and differ between batches, epochs and ranks."""
    state = np.random.SeedSequence([seed % 2**32, rank, step]).generate_state(2, np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))  # < 2^63
    return generator


def chosen(num_graphs: int, fraction: float, generator: torch.Generator, device) -> torch.Tensor:
    """(num_graphs,) bool: each structure drawn with probability ``fraction``."""
    return torch.rand(num_graphs, generator=generator, device=device) < fraction


def draw_noise(data, std: float, picked: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(num_nodes, 3) Gaussian displacements, Å, zero on structures not ``picked``, each structure's mean removed."""
    positions, index = data[keys.POSITIONS], graph_index(data)
    noise = torch.randn(positions.shape, generator=generator, device=positions.device, dtype=positions.dtype) * std
    noise = noise * picked[index].unsqueeze(1).to(noise.dtype)
    mean = scatter(noise, index, dim=0, dim_size=len(picked), reduce="mean")  # (num_graphs, 3)
    return noise - mean[index]


def draw_strains(num_graphs: int, largest: float, picked: torch.Tensor, generator: torch.Generator,
                 dtype: torch.dtype) -> torch.Tensor:
    """(num_graphs, 3, 3) symmetric strains, components uniform in [-largest, largest], zero where not ``picked``."""
    device = picked.device
    voigt = (2 * torch.rand((num_graphs, 6), generator=generator, device=device, dtype=dtype) - 1) * largest
    strains = torch.zeros(num_graphs, 3, 3, device=device, dtype=dtype)
    for k, (i, j) in enumerate(VOIGT_PAIRS):
        strains[:, i, j] = strains[:, j, i] = voigt[:, k]
    return strains * picked[:, None, None].to(dtype)


# -- applying them -------------------------------------------------------------------------------------------------
def strained(data, strains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (num_nodes, 3), cell (num_graphs, 3, 3)) under (num_graphs, 3, 3) symmetric ``strains``: every
    Cartesian vector x -> (I + eps) x, lattice vectors (rows of the cell) included, so fractional coordinates and
    integer image shifts stay valid."""
    deformation = torch.eye(3, dtype=strains.dtype, device=strains.device) + strains
    positions = torch.einsum("ni,nij->nj", data[keys.POSITIONS], deformation[graph_index(data)])
    return positions, data[keys.CELL] @ deformation


def augment_batch(data, tasks: dict[str, TaskSpec], augment: Augmentation, generator: torch.Generator):
    """The batch strained, then noised, as ``augment`` says, with the labels the policy excludes masked.

    New tensors replace the batch's (the collated storage is never written). Adds ``keys.STRAIN`` (with strain) and
    ``keys.NOISE`` (with noise: the displacement each atom got, for a denoising head). Returns (batch, counts):
    ``counts`` a (3 + 2 * len(tasks),) tensor on the device, read by ``AugmentationCounts`` (no host sync here)."""
    num_graphs, device = int(data.num_graphs), data[keys.POSITIONS].device
    dtype = data[keys.POSITIONS].dtype
    none = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    noised = strained_graphs = none
    if augment.strain > 0:
        strained_graphs = chosen(num_graphs, augment.strain_fraction, generator, device)
        data[keys.STRAIN] = draw_strains(num_graphs, augment.strain, strained_graphs, generator, dtype)
        data[keys.POSITIONS], data[keys.CELL] = strained(data, data[keys.STRAIN])
    if augment.noise > 0:
        noised = chosen(num_graphs, augment.noise_fraction, generator, device)
        data[keys.NOISE] = draw_noise(data, augment.noise, noised, generator)
        data[keys.POSITIONS] = data[keys.POSITIONS] + data[keys.NOISE]
    policy, index, seen, removed = masked_tasks(tasks, augment), graph_index(data), [], []
    for name, task in tasks.items():
        mask = data[keys.mask_key(name)]
        hit = (noised & (name in policy["noise"])) | (strained_graphs & (name in policy["strain"]))
        hit = hit[index] if task.level == "atom" else hit
        seen.append(mask.sum())
        removed.append((mask & hit).sum())
        data[keys.mask_key(name)] = mask & ~hit
    structures = torch.stack([torch.full((), num_graphs, device=device), noised.sum(), strained_graphs.sum()])
    return data, torch.cat([structures, torch.stack(seen + removed)]) if tasks else structures


def augmented(data) -> bool:
    """True for a batch this module changed (caches keyed by structure content must not store it)."""
    return keys.NOISE in data or keys.STRAIN in data


def original_geometry(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, cell) of an augmented batch before augmentation (to rounding): what a prior or descriptor computed
    for the material, whose labels are kept, should see."""
    positions, cell = data[keys.POSITIONS], data[keys.CELL]
    if keys.NOISE in data:
        positions = positions - data[keys.NOISE]
    if keys.STRAIN in data:
        inverse = torch.linalg.inv(torch.eye(3, dtype=cell.dtype, device=cell.device) + data[keys.STRAIN])
        positions = torch.einsum("ni,nij->nj", positions, inverse[graph_index(data)])
        cell = cell @ inverse
    return positions, cell


class AugmentationCounts:
    """Running totals of a fit's augmented training batches: structures drawn, noised and strained, and per task the
    labels seen and masked. Summed on the device; read (one host copy) only when reported."""

    def __init__(self, tasks: list[str]):
        self.tasks, self.total = list(tasks), None

    def add(self, counts: torch.Tensor) -> None:
        self.total = counts.detach() if self.total is None else self.total + counts.detach()

    def as_dict(self) -> dict:
        values = [0] * (3 + 2 * len(self.tasks)) if self.total is None else [int(v) for v in self.total.tolist()]
        n = len(self.tasks)
        return {"structures": values[0], "noised": values[1], "strained": values[2],
                "labels": dict(zip(self.tasks, values[3:3 + n])), "masked": dict(zip(self.tasks, values[3 + n:]))}

    def fractions(self) -> dict[str, float]:
        """{"augment/masked_fraction/<task>": masked / labels seen} for tasks with masked labels, and the fractions of
        structures noised and strained: what the loggers record."""
        counts = self.as_dict()
        out = {f"augment/{what}_fraction": counts[what] / max(counts["structures"], 1)
               for what in ("noised", "strained")}
        out.update({f"augment/masked_fraction/{name}": masked / max(counts["labels"][name], 1)
                    for name, masked in counts["masked"].items() if masked})
        return out

    def summary(self, augment: Augmentation) -> str:
        c = self.as_dict()
        masked = ", ".join(f"{name} {m}/{c['labels'][name]} ({m / max(c['labels'][name], 1):.0%})"
                           for name, m in c["masked"].items() if m) or "none"
        return (f"augmentation: {c['structures']} training structures drawn, {c['noised']} noised "
                f"({augment.noise:g} Å), {c['strained']} strained (|eps_ij| <= {augment.strain:g}); labels masked on "
                f"them: {masked}")
