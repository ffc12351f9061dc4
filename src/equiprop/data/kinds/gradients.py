"""The ``forces`` and ``stress`` kinds: derivatives of an energy task, not outputs of a readout of their own.

A model with one of them predicts the energy task named in the task's ``energy`` field and differentiates it by
autograd (``nn/gradients.py``): forces ``F_i = -dE/dr_i`` per atom (eV/Å), stress ``sigma = (1/V) dE/deps`` per
structure for a symmetric strain ``eps`` of cell and positions (ASE's sign: negative under compression; eV/Å^3 or
GPa). Both are conservative and equivariant by construction. Labels, normalisation, loss and metrics are those of a
Cartesian tensor (``tensor.py``): forces a polar vector (formula "i", 1x1o, no shift), stress a symmetric rank-2
tensor ("ij=ji", 1x0e+1x2e); the derivative is taken in physical units and then normalised, so loss and metrics
are the tensor kind's.

Extended XYZ files carry both as ase writes them (per-atom ``forces`` columns, a ``stress`` of 6 Voigt or 9
components in eV/Å^3), read with ``level: atom`` for forces:
``{name: forces, key: forces, kind: forces, level: atom, units: eV/Å, energy: energy}`` beside
``{name: energy, key: energy, units: eV, pooling: sum}``.
"""

from __future__ import annotations

from equiprop.data.errors import ConfigError
from equiprop.data.kinds.tensor import TensorKind

EV_PER_A3_IN_GPA = 160.21766208  # 1 eV/Å^3 in GPa
FORCE_UNITS = {"eV/Å": 1.0, "eV/A": 1.0, "eV/Ang": 1.0}
STRESS_UNITS = {"eV/Å^3": 1.0, "eV/A^3": 1.0, "eV/Ang^3": 1.0, "GPa": EV_PER_A3_IN_GPA}
ENERGY_UNITS = {"eV": "sum", "eV/atom": "mean"}  # an energy task's units -> the pooling that makes them a total


class GradientKind(TensorKind):
    """A derivative of the energy task ``task.energy``, computed by autograd: no readout of its own."""

    readout = "gradient"
    formula = ""  # the Cartesian formula this derivative has (``TaskSpec`` fills it in)
    voigt_shape = None  # the form users give and get, where not Cartesian (``TaskSpec`` fills it in)
    level = ""
    units: dict = {}

    def check(self, task) -> None:
        if task.formula != self.formula:
            raise ConfigError(f"task {task.name!r}: a {self.name} task has formula {self.formula!r}, "
                              f"got {task.formula!r}")
        if task.level != self.level:
            raise ConfigError(f"task {task.name!r}: a {self.name} task is per {self.level} (level: {self.level}), "
                              f"got level {task.level!r}")
        if not task.energy:
            raise ConfigError(f"task {task.name!r}: a {self.name} task names the energy task it is the derivative "
                              "of (energy: NAME)")
        if task.units not in self.units:
            raise ConfigError(f"task {task.name!r}: {self.name} units must be one of {sorted(self.units)}, "
                              f"got {task.units!r}")
        if task.parametrization != "linear" or task.pooling != "mean":
            raise ConfigError(f"task {task.name!r}: a {self.name} task is linear and not pooled by a readout")

    def factor(self, task) -> float:
        """Physical units per eV/Å (forces) or eV/Å^3 (stress)."""
        return self.units[task.units]


class ForcesKind(GradientKind):
    name = "forces"
    formula, level, units = "i", "atom", FORCE_UNITS


class StressKind(GradientKind):
    name = "stress"
    formula, level, units = "ij=ji", "structure", STRESS_UNITS
    voigt_shape = (6,)  # in and out as ase gives it: xx yy zz yz xz xy


def check_energy_task(task, energy) -> None:
    """ConfigError unless ``energy`` (a TaskSpec, or None when absent) can be differentiated for ``task``: a linear
    scalar, a total (eV, sum-pooled) or per atom (eV/atom, mean-pooled)."""
    if energy is None:
        raise ConfigError(f"task {task.name!r} is the {task.kind} of energy task {task.energy!r}, which the model "
                          "does not predict: add it to data.tasks")
    if energy.kind != "scalar" or energy.level != "structure" or ENERGY_UNITS.get(energy.units) != energy.pooling:
        raise ConfigError(f"task {task.name!r}: its energy task {energy.name!r} must be a structure-level scalar in eV "
                          f"with pooling sum (or eV/atom with pooling mean), got kind {energy.kind!r}, units "
                          f"{energy.units!r}, pooling {energy.pooling!r}")
