"""Zero-shot physics of a pretrained universal potential: descriptors for the encoder and quantities for the priors.

Computed on the given (unrelaxed) cell with the neighbour list of the unstrained, undisplaced structure (edge
vectors are strained or displaced, edges kept: the standard finite-difference setting; exact in the limit of small
steps). The cells are not relaxed with the potential, and the potential's own errors remain: they are inputs that
heads correct, not answers. Each is cached per structure like the frozen features.

Descriptors (invariant scalars appended to the encoder's features, ``FoundationEncoder(descriptors=...)``):

- ``bulk_modulus`` (2 values): K = (1/9V) d2E/de2 from the energies at isotropic strains e in
  {-2, -1, 0, 1, 2} % (quadratic fit), and the residual pressure P = -(1/3V) dE/de, both in GPa, given to the network
  as signed log10(1 + |x|).
- ``gamma_phonons`` (3 values): Γ-point frequencies from finite-displacement forces (0.01 Å), with phonopy choosing
  the symmetry-irreducible displacements of the cell and building the force constants (a cubic cell needs one or
  two displaced copies instead of 6 per atom): the highest frequency, the mean of the optical ones and the lowest one
  (imaginary frequencies as negative numbers), in units of 1000 cm^-1. Forces are taken by autograd, with gradients
  switched on here whatever the caller's mode (validation, prediction and screening run without them).

Quantities (``quantity``; physical units; batched over the structures of a batch; used by ``nn.priors``):

- ``energy`` (1 value): the potential's total energy per atom, eV/atom.
- ``stiffness`` (36 values): clamped-ion stiffness, Voigt 6x6 in GPa, C = dσ/dε by central differences (±0.5 %) of
  the stress σ = (1/V) ∂E/∂ε, itself by autograd: 12 strained copies, one forward and backward pass.
- ``stiffness_relaxed`` (36 values): relaxed-ion stiffness, C_clamped - Λᵀ Φ⁺ Λ / V: the harmonic (linear-response)
  form of relaxing the atoms at each strain, as DFPT codes give it (Wu, Vanderbilt & Hamann 2005), with the internal-
  strain tensor Λ = ∂F/∂ε from the same strained copies and the Γ force constants Φ from ±0.01 Å displacements.
  Equal to relaxing each strained cell (matcalc's way; tested against ASE's BFGS) for a cell at a minimum of the
  potential, at 6 x atoms more copies instead of tens of relaxation steps.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors
from equiprop.data.tensor_ops import VOIGT_PAIRS
from equiprop.nn.feature_cache import FeatureCache, structure_keys
from equiprop.nn.potential import PretrainedPotential

DESCRIPTOR_SIZES = {"bulk_modulus": 2, "gamma_phonons": 3}
QUANTITY_SIZES = {"energy": 1, "stiffness": 36, "stiffness_relaxed": 36}
EV_PER_A3_IN_GPA = 160.21766208
THZ_IN_CM1 = 33.35640951981521
STRAINS = (-0.02, -0.01, 0.0, 0.01, 0.02)
DISPLACEMENT = 0.01  # Å
ELASTIC_STRAIN = 0.005  # ± this Voigt strain per component for the stiffness
MAX_EDGES_PER_CHUNK = 150_000
NEIGHBOUR_SKIN = 0.3  # Å beyond the potential's cutoff in the strained copies' neighbour lists


def descriptor_size(name: str) -> int:
    if name not in DESCRIPTOR_SIZES:
        raise ConfigError(f"unknown potential descriptor {name!r}; available: {sorted(DESCRIPTOR_SIZES)}")
    return DESCRIPTOR_SIZES[name]


def signed_log10(x: float) -> float:
    return float(np.sign(x) * np.log10(1.0 + abs(x)))


def shared_physics(model: str, names: list[str] = (), cache_dir: str | None = None) -> "PotentialPhysics":
    """The process's one ``PotentialPhysics`` of this potential, descriptors and cache folder: the members of an
    ensemble (their priors and descriptors read the same frozen potential) load it once and compute each
    structure's quantities once (``equiprop predict --model equiprop-mp-v3``: five members built it five times)."""
    key = (model, tuple(names), None if cache_dir is None else str(cache_dir))
    if key not in _SHARED:
        _SHARED[key] = PotentialPhysics(model, list(names), cache_dir)
    return _SHARED[key]


_SHARED: dict[tuple, "PotentialPhysics"] = {}


class PotentialPhysics:
    """Descriptors from a frozen pretrained copy of the potential (independent of any fine-tuning)."""

    def __init__(self, model: str, names: list[str] = (), cache_dir: str | None = None):
        for name in names:
            descriptor_size(name)
        self.names, self.model_name, self.cache_dir = list(names), model, cache_dir
        self.runner = PretrainedPotential(model)
        self.cache = FeatureCache(cache_dir, {"physics": self.names, "model": model, "strains": STRAINS,
                                              "displacement": DISPLACEMENT})
        self.quantity_caches: dict[str, FeatureCache] = {}

    def descriptors(self, data) -> torch.Tensor:  # -> (num_graphs, size), cached per structure
        names = structure_keys(data)
        rows = self.cache.get_many(names)
        stale = [i for i, row in enumerate(rows)  # missing, or cached NaN before the one-atom fix: (re)computed
                 if row is None or not bool(torch.isfinite(row).all())]
        graphs = _plain_graphs(data) if stale else []
        fresh = {}
        for i in stale:
            rows[i] = fresh[names[i]] = torch.tensor(self.compute(graphs[i]), dtype=torch.float64)
        self.cache.put(fresh)  # one shard per batch
        return torch.stack(rows)

    # -- quantities: batched over structures ----------------------------------------------------------------------
    def quantity(self, data, name: str, rows: torch.Tensor | None = None,
                 known: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(num_graphs, QUANTITY_SIZES[name]) float64 in physical units, cached per structure. ``rows``: (num_graphs,)
        bool, the structures to compute (the others are zero rows: a prior is only needed where a label is).
        ``known``: {structure key: row} this potential's values computed elsewhere (the energies of a frozen
        encoder's own pass, ``FoundationEncoder.pretrained_energies``): cached and used instead of a pass here."""
        if name not in QUANTITY_SIZES:
            raise ConfigError(f"unknown potential quantity {name!r}; available: {sorted(QUANTITY_SIZES)}")
        cache = self.quantity_caches.get(name)
        if cache is None:
            settings = {"energy": {}, "stiffness": {"strain": ELASTIC_STRAIN},
                        "stiffness_relaxed": {"strain": ELASTIC_STRAIN, "displacement": DISPLACEMENT}}
            cache = self.quantity_caches[name] = FeatureCache(self.cache_dir, {
                "quantity": name, "model": self.model_name, **settings[name]})
        names = structure_keys(data)
        wanted = range(len(names)) if rows is None else torch.nonzero(rows.cpu()).flatten().tolist()
        found = dict(zip(wanted, cache.get_many([names[i] for i in wanted])))
        missing = [i for i, row in found.items() if row is None]
        supplied = {names[i]: known[names[i]].double() for i in missing if known and names[i] in known}
        if supplied:
            cache.put(supplied)
            found.update((i, supplied[names[i]]) for i in missing if names[i] in supplied)
            missing = [i for i in missing if names[i] not in supplied]
        if missing:
            graphs = _plain_graphs(data)
            # similar sizes together: a relaxed-ion batch runs 6 x (its largest structure's atoms) copies
            missing.sort(key=lambda i: graphs[i].num_nodes)
            fresh = self._compute_quantity(name, [graphs[i] for i in missing])
            cache.put({names[i]: row for i, row in zip(missing, fresh)})
            found.update(zip(missing, fresh))
        out = torch.zeros(len(names), QUANTITY_SIZES[name], dtype=torch.float64)
        for i, row in found.items():
            out[i] = row
        return out

    def _compute_quantity(self, name: str, graphs: list) -> list[torch.Tensor]:
        out = []
        for group in _chunks(graphs, {"energy": 64, "stiffness": 16, "stiffness_relaxed": 8}[name]):
            batch = Batch.from_data_list(group)
            if name == "energy":
                with torch.no_grad():
                    energy = self._batch_energies(batch, edge_vectors(batch).unsqueeze(0))[0]
                values = (energy / torch.bincount(batch[keys.BATCH], minlength=len(group))).unsqueeze(1)
            else:  # edges within the cutoff plus a skin: a pair the strain brings inside the cutoff is not missed
                batch = Batch.from_data_list([_with_skin(g, self.runner.cutoff + NEIGHBOUR_SKIN) for g in group])
                values = self.stiffness(batch, relaxed=name == "stiffness_relaxed").reshape(len(group), 36)
            out += list(values.double().detach())
        return out

    def _batch_energies(self, batch, copies: torch.Tensor) -> torch.Tensor:
        """copies: (C, num_edges, 3) edge vectors of the whole batch -> (C, num_graphs) energies, eV (one batched
        pass per chunk of copies)."""
        chunk = max(1, MAX_EDGES_PER_CHUNK // max(batch[keys.EDGE_INDEX].shape[1], 1))
        if copies.shape[0] > chunk:
            return torch.cat([self._batch_energies(batch, copies[k:k + chunk])
                              for k in range(0, copies.shape[0], chunk)])
        n, e, g = batch.num_nodes, batch[keys.EDGE_INDEX].shape[1], int(batch.num_graphs)
        c = copies.shape[0]
        offsets = (torch.arange(c) * n).repeat_interleave(e)
        replicated = Data(atomic_numbers=batch[keys.ATOMIC_NUMBERS].repeat(c),
                          edge_index=batch[keys.EDGE_INDEX].repeat(1, c) + offsets,
                          batch=(batch[keys.BATCH].unsqueeze(0) + g * torch.arange(c).unsqueeze(1)).flatten(),
                          num_nodes=n * c)
        species = self.runner.species_index(batch).repeat(c)
        atomic = self.runner.atomic_energies_of(replicated, copies.reshape(-1, 3).to(self.runner.dtype), species)
        return torch.zeros(c * g, dtype=atomic.dtype).index_add(0, replicated.batch, atomic).reshape(c, g)

    def stiffness(self, batch, relaxed: bool = False) -> torch.Tensor:
        """(num_graphs, 6, 6) stiffness in GPa (Voigt), clamped- or relaxed-ion; see the module docstring."""
        with torch.inference_mode(False), torch.enable_grad():  # stresses by autograd, whatever the caller's mode
            batch = batch.clone()
            vectors = edge_vectors(batch).detach()
            g, graph_of_edge = int(batch.num_graphs), batch[keys.BATCH][batch[keys.EDGE_INDEX][0]]
            strains = torch.zeros(12, 3, 3, dtype=vectors.dtype)
            for k, (i, j) in enumerate(VOIGT_PAIRS):
                for sign, copy in ((1.0, 2 * k), (-1.0, 2 * k + 1)):
                    step = sign * ELASTIC_STRAIN * (1.0 if i == j else 0.5)  # shear: engineering strain γ = 2ε
                    strains[copy, i, j] += step
                    strains[copy, j, i] += step if i != j else 0.0
            strained = torch.einsum("ex,cxy->cey", vectors, torch.eye(3, dtype=vectors.dtype) + strains)
            probe = torch.zeros(12, g, 3, 3, dtype=vectors.dtype, requires_grad=True)  # ∂E/∂ε at each strain
            shift = torch.zeros(12, batch.num_nodes, 3, dtype=vectors.dtype, requires_grad=True)  # -∂E/∂u: forces
            i, j = batch[keys.EDGE_INDEX]
            copies = strained + torch.einsum("cey,cexy->cex", strained, probe[:, graph_of_edge])
            energies = self._batch_energies(batch, copies + shift[:, j] - shift[:, i])
            grad, minus_forces = torch.autograd.grad(energies.sum(), [probe, shift])
        volume = torch.linalg.det(batch[keys.CELL].double()).abs()  # (g,) Å^3 unstrained
        strained_volume = volume.unsqueeze(0) * torch.linalg.det(torch.eye(3, dtype=torch.float64) + strains.double()
                                                                 ).unsqueeze(1)  # (12, g)
        # the Cauchy stress of each strained cell (what ASE's get_stress returns)
        stress = 0.5 * (grad + grad.transpose(-1, -2)).double() / strained_volume[..., None, None] * EV_PER_A3_IN_GPA
        voigt = torch.stack([stress[..., i, j] for i, j in VOIGT_PAIRS], dim=-1)  # (12, g, 6)
        columns = (voigt[0::2] - voigt[1::2]) / (2 * ELASTIC_STRAIN)  # (6 strains, g, 6 stresses)
        stiffness = columns.permute(1, 2, 0)  # (g, stress row, strain column)
        stiffness = 0.5 * (stiffness + stiffness.transpose(1, 2))
        if not relaxed:
            return stiffness
        forces = -minus_forces.double()  # (12, num_nodes, 3) eV/Å
        internal_strain = (forces[0::2] - forces[1::2]) / (2 * ELASTIC_STRAIN)  # (6, num_nodes, 3): ∂F/∂ε
        return stiffness - self._relaxation(batch, internal_strain, volume)

    def _relaxation(self, batch, internal_strain: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
        """(num_graphs, 6, 6) GPa the atoms' relaxation takes off the clamped-ion stiffness, harmonic (linear-
        response) form: Λᵀ Φ⁺ Λ / V, with Λ = ∂F/∂ε the internal-strain tensor and Φ the Γ force constants
        (``force_constants``); Φ⁺ is the pseudo-inverse on its positive modes (the three translations, and the
        unstable modes of a cell that is not at a minimum, do not relax)."""
        counts = torch.bincount(batch[keys.BATCH], minlength=int(batch.num_graphs))
        first = torch.cumsum(counts, 0) - counts
        out = []
        for g, graph in enumerate(batch.to_data_list()):
            atoms = slice(int(first[g]), int(first[g] + counts[g]))
            constants = self.force_constants(graph).double()
            w, v = torch.linalg.eigh(0.5 * (constants + constants.T))
            keep = w > 1e-3 * w.abs().max()
            inverse = (v[:, keep] / w[keep]) @ v[:, keep].T
            lam = internal_strain[:, atoms].reshape(6, -1)  # (6, 3n) eV/Å per unit strain
            out.append(lam @ inverse @ lam.T / volume[g] * EV_PER_A3_IN_GPA)
        return torch.stack(out)

    def compute(self, graph) -> list[float]:
        values = []
        for name in self.names:
            values += self.bulk_modulus(graph) if name == "bulk_modulus" else self.gamma_phonons(graph)
        return values

    # -- energies of many copies of one graph with modified edge vectors ----------------------------------------------
    def _energies(self, graph, copies: torch.Tensor) -> torch.Tensor:
        """copies: (C, num_edges, 3) edge vectors of one graph -> (C,) energies, eV."""
        return self._batch_energies(Batch.from_data_list([graph]), copies)[:, 0]

    def bulk_modulus(self, graph) -> list[float]:
        with torch.no_grad():
            vectors = edge_vectors(graph)
            strains = torch.tensor(STRAINS)
            energies = self._energies(graph, vectors.unsqueeze(0) * (1.0 + strains).view(-1, 1, 1))
        volume = abs(float(torch.linalg.det(graph[keys.CELL][0].double())))
        curvature, slope, _ = np.polyfit(np.asarray(STRAINS), energies.double().numpy(), 2)
        bulk = 2.0 * curvature / (9.0 * volume) * EV_PER_A3_IN_GPA
        pressure = -slope / (3.0 * volume) * EV_PER_A3_IN_GPA
        return [signed_log10(bulk), signed_log10(pressure)]

    def gamma_phonons(self, graph) -> list[float]:
        # primitive_matrix "auto" (phonopy 4's default, chosen here on purpose, so phonopy 3 agrees): Γ of the
        # primitive cell, the same whichever cell a structure comes in
        phonon = self._phonopy_forces(graph, primitive="auto")
        phonon.run_qpoints([[0.0, 0.0, 0.0]])
        frequencies = np.sort(phonon.qpoints.frequencies[0]) * THZ_IN_CM1  # imaginary: negative
        # phonopy's primitive cell may hold one atom even when the given cell holds more (a conventional fcc cell):
        # then there is no optical mode, and its mean is 0, not the mean of nothing
        optical = frequencies[3:] if len(frequencies) > 3 else np.zeros(1)
        return [float(frequencies.max()) / 1000, float(optical.mean()) / 1000, float(frequencies.min()) / 1000]

    def force_constants(self, graph) -> torch.Tensor:  # -> (3n, 3n) Γ force constants of the cell's atoms, eV/Å^2
        n = graph.num_nodes
        constants = self._phonopy_forces(graph, primitive=None).force_constants  # (n, n, 3, 3)
        return torch.as_tensor(constants).permute(0, 2, 1, 3).reshape(3 * n, 3 * n)

    def _phonopy_forces(self, graph, primitive):
        """A ``Phonopy`` of the cell (supercell = the cell itself: Γ) with force constants from the potential's
        forces on phonopy's symmetry-irreducible displacements (a cubic cell needs one or two displaced copies)."""
        from phonopy import Phonopy
        from phonopy.structure.atoms import PhonopyAtoms

        cell = graph[keys.CELL][0].double().numpy()
        positions = graph[keys.POSITIONS].double().numpy()
        unitcell = PhonopyAtoms(numbers=graph[keys.ATOMIC_NUMBERS].numpy(), cell=cell,
                                scaled_positions=positions @ np.linalg.inv(cell))
        with warnings.catch_warnings():  # phonopy 4 warns whenever "auto" finds a smaller cell, even when asked
            warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
            phonon = Phonopy(unitcell, supercell_matrix=np.eye(3, dtype=int), primitive_matrix=primitive)
        phonon.generate_displacements(distance=DISPLACEMENT)
        steps = []
        for displaced in phonon.supercells_with_displacements:
            delta = displaced.scaled_positions - unitcell.scaled_positions
            steps.append((delta - np.round(delta)) @ cell)  # Cartesian displacement of each atom, Å
        with torch.inference_mode(False), torch.enable_grad():  # forces by autograd, whatever the caller's mode
            graph = graph.clone()
            displacement = torch.tensor(np.stack(steps), dtype=graph[keys.POSITIONS].dtype).requires_grad_(True)
            i, j = graph[keys.EDGE_INDEX]
            copies = edge_vectors(graph).detach().unsqueeze(0) + displacement[:, j] - displacement[:, i]
            energies = self._energies(graph, copies)
            forces = -torch.autograd.grad(energies.sum(), displacement)[0]  # (copies, n, 3) eV/Å
        phonon.forces = forces.double().numpy()
        phonon.produce_force_constants()
        return phonon


def _plain_graphs(data) -> list:
    """The graphs of a batch as ``Data`` objects outside inference mode (autograd runs on copies of them)."""
    graphs = data.to_data_list() if hasattr(data, "to_data_list") else [data]
    with torch.inference_mode(False):
        return [g.clone() for g in graphs]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _with_skin(graph, radius: float):
    """A copy of ``graph`` whose edges are all pairs within ``radius`` Å (the potential keeps those inside its own
    cutoff after each strain)."""
    from vesin import NeighborList

    cell = graph[keys.CELL][0].double().numpy()
    i, j, shifts = NeighborList(cutoff=radius, full_list=True).compute(
        graph[keys.POSITIONS].double().numpy(), cell, bool(graph[keys.PBC].all()), quantities="ijS")
    out = graph.clone()
    out[keys.EDGE_INDEX] = torch.as_tensor(np.stack([i, j]).astype(np.int64))
    out[keys.EDGE_CELL_SHIFT] = torch.as_tensor(shifts, dtype=graph[keys.POSITIONS].dtype)
    return out
