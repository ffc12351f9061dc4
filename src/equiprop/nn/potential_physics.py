"""Zero-shot physics of a pretrained universal potential, as per-structure invariant descriptors for the heads.

Computed on the given (unrelaxed) cell with the neighbour list of the unstrained, undisplaced structure (edge
vectors are strained or displaced, edges kept: the standard finite-difference setting; exact in the limit of small
steps). They are features, not answers: the cells are not relaxed with the potential, and the potential's own
errors remain. Each is cached per structure like the frozen features.

- ``bulk_modulus`` (2 values): K = (1/9V) d2E/de2 from the energies at isotropic strains e in
  {-2, -1, 0, 1, 2} % (quadratic fit), and the residual pressure P = -(1/3V) dE/de, both in GPa, given to the network
  as signed log10(1 + |x|).
- ``gamma_phonons`` (3 values): Γ-point frequencies from finite-displacement forces (0.01 Å), with phonopy choosing
  the symmetry-irreducible displacements of the cell and building the force constants (a cubic cell needs one or
  two displaced copies instead of 6 per atom): the highest frequency, the mean of the optical ones and the lowest one
  (imaginary frequencies as negative numbers), in units of 1000 cm^-1.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch_geometric.data import Data

from equiprop.data import keys
from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors
from equiprop.nn.feature_cache import FeatureCache, structure_keys

DESCRIPTOR_SIZES = {"bulk_modulus": 2, "gamma_phonons": 3}
EV_PER_A3_IN_GPA = 160.21766208
THZ_IN_CM1 = 33.35640951981521
STRAINS = (-0.02, -0.01, 0.0, 0.01, 0.02)
DISPLACEMENT = 0.01  # Å
MAX_EDGES_PER_CHUNK = 150_000


def descriptor_size(name: str) -> int:
    if name not in DESCRIPTOR_SIZES:
        raise ConfigError(f"unknown potential descriptor {name!r}; available: {sorted(DESCRIPTOR_SIZES)}")
    return DESCRIPTOR_SIZES[name]


def signed_log10(x: float) -> float:
    return float(np.sign(x) * np.log10(1.0 + abs(x)))


class PotentialPhysics:
    """Descriptors from a frozen pretrained copy of the potential (independent of any fine-tuning)."""

    def __init__(self, model: str, names: list[str], cache_dir: str | None = None):
        from equiprop.nn.foundation import FoundationEncoder

        for name in names:
            descriptor_size(name)
        self.names = list(names)
        self.runner = FoundationEncoder(model, "frozen", parity=False, cache_features=False).eval()
        self.cache = FeatureCache(cache_dir, {"physics": self.names, "model": model, "strains": STRAINS,
                                              "displacement": DISPLACEMENT})

    def descriptors(self, data) -> torch.Tensor:  # -> (num_graphs, size), cached per structure
        graphs = data.to_data_list() if hasattr(data, "to_data_list") else [data]
        names = structure_keys(data)
        rows, fresh = [], {}
        for key, graph in zip(names, graphs):
            row = self.cache.get(key)
            if row is None:
                row = fresh[key] = torch.tensor(self.compute(graph), dtype=torch.float64)
            rows.append(row)
        self.cache.put(fresh)  # one shard per batch
        return torch.stack(rows)

    def compute(self, graph) -> list[float]:
        values = []
        for name in self.names:
            values += self.bulk_modulus(graph) if name == "bulk_modulus" else self.gamma_phonons(graph)
        return values

    # -- energies of many copies of one graph with modified edge vectors ----------------------------------------------
    def _energies(self, graph, copies: torch.Tensor) -> torch.Tensor:
        """copies: (C, num_edges, 3) edge vectors -> (C,) energies, eV (one batched pass per chunk of copies)."""
        n, e = graph.num_nodes, graph[keys.EDGE_INDEX].shape[1]
        chunk = max(1, MAX_EDGES_PER_CHUNK // max(e, 1))
        species = self.runner._species_index(graph)
        out = []
        for start in range(0, copies.shape[0], chunk):
            part = copies[start:start + chunk]
            c = part.shape[0]
            offsets = (torch.arange(c) * n).repeat_interleave(e)
            batched = Data(atomic_numbers=graph[keys.ATOMIC_NUMBERS].repeat(c),
                           edge_index=graph[keys.EDGE_INDEX].repeat(1, c) + offsets,
                           batch=torch.arange(c).repeat_interleave(n), num_nodes=n * c)
            d = self.runner._graph_dict(batched, part.reshape(-1, 3))
            self.runner._run_layers(d, self.runner._embed(d, species.repeat(c)), 0, self.runner.num_layers)
            atomic = self.runner.atomic_energies(d)
            out.append(torch.zeros(c, dtype=atomic.dtype).index_add(0, batched.batch, atomic))
        return torch.cat(out)

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
        from phonopy import Phonopy
        from phonopy.structure.atoms import PhonopyAtoms

        n = graph.num_nodes
        cell = graph[keys.CELL][0].double().numpy()
        positions = graph[keys.POSITIONS].double().numpy()
        unitcell = PhonopyAtoms(numbers=graph[keys.ATOMIC_NUMBERS].numpy(), cell=cell,
                                scaled_positions=positions @ np.linalg.inv(cell))
        # supercell = the cell itself: Γ-point phonons. primitive_matrix "auto" (phonopy 4's default, chosen here on
        # purpose, so phonopy 3 agrees): Γ of the primitive cell, the same whichever cell a structure comes in.
        # phonopy 4 warns whenever "auto" finds a smaller cell, even when asked for it by name.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
            phonon = Phonopy(unitcell, supercell_matrix=np.eye(3, dtype=int), primitive_matrix="auto")
        phonon.generate_displacements(distance=DISPLACEMENT)
        steps = []
        for displaced in phonon.supercells_with_displacements:
            delta = displaced.scaled_positions - unitcell.scaled_positions
            steps.append((delta - np.round(delta)) @ cell)  # Cartesian displacement of each atom, Å
        displacement = torch.tensor(np.stack(steps), dtype=graph[keys.POSITIONS].dtype).requires_grad_(True)
        i, j = graph[keys.EDGE_INDEX]
        copies = edge_vectors(graph).detach().unsqueeze(0) + displacement[:, j] - displacement[:, i]
        energies = self._energies(graph, copies)
        forces = -torch.autograd.grad(energies.sum(), displacement)[0]  # (copies, n, 3) eV/Å
        phonon.forces = forces.double().numpy()
        phonon.produce_force_constants()
        phonon.run_qpoints([[0.0, 0.0, 0.0]])
        frequencies = np.sort(phonon.qpoints.frequencies[0]) * THZ_IN_CM1  # imaginary: negative
        optical = frequencies[3:] if n > 1 else np.zeros(1)
        return [float(frequencies.max()) / 1000, float(optical.mean()) / 1000, float(frequencies.min()) / 1000]
