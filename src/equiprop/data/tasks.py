"""Task registry: what a property is, the key it is read from, its units, and how it maps to model space.

Labels live in physical units on records (tensors as Cartesian arrays). ``TaskSpec.to_model`` gives the model-space
target stored on graphs: log10 for log-scalars, the full Cartesian tensor (rank 2, 3 or 4) for tensors. Irreps
(e3nn ``CartesianTensor``) are used only inside the model and its normalisation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.kinds import KINDS, TaskKind, kind_of
from equiprop.data.tensor_ops import cartesian_tensor, cartesian_to_voigt, project_symmetric, voigt_to_cartesian

LEVELS = ("structure", "atom")
MISSING_STRINGS = {"", "na", "nan", "none", "null", "n/a"}


@dataclass(frozen=True)
class TaskSpec:
    """One property to learn.

    name: task name used everywhere (config, checkpoints, outputs).
    key: the column / field a generic source reads the label from.
    units: physical units of the label, e.g. "eV/atom", "GPa", "dimensionless", "C/m^2".
    kind: scalar | log_scalar (model space is log10 of the label) | binary (0/1 class) | tensor, or a kind of your
        own (``data.kinds.register_kind``); what it means lives in its ``TaskKind`` (``kind_def``).
    level: "structure" (one label per crystal) or "atom" (a field: one label per atom, e.g. charges, site
        potentials, Born effective charges). The level decides everything downstream: labels and masks are stored
        per graph or per node (``keys.label_key``), normalisation statistics are taken over structures or atoms,
        readouts pool or not, losses and metrics average over labelled structures or atoms, and ``predict`` writes
        one value or one list per structure. A per-atom label is an array with one row per atom (NaN rows: those
        atoms are unlabelled and masked).
    formula: e3nn CartesianTensor index formula of a tensor task ("ij=ji", "ijkl=jikl=klij", "ijk=ikj").
    voigt_shape: shape of the Voigt form users give and get ((6, 6) elastic, (3, 6) piezo); None for plain Cartesian.
    pooling: "mean" for intensive properties, "sum" for extensive ones, "max" for properties set by the most
        extreme atom (used by the model's readout).
    symmetry_tol: largest allowed asymmetry of a tensor label, relative to its largest component.
    parametrization: how a tensor is represented in model space. "linear": the Cartesian tensor itself. "spd_log"
        (dielectric and elastic tensors): the log-Euclidean map ``logm(eps - I)`` / ``logm(Mandel(C))``; the model
        predicts that symmetric log tensor and outputs ``I + expm(L)`` / ``expm(L)``, positive definite (eigenvalues
        > 1 for eps) by construction, and the loss is taken in log space. Labels that are not positive definite
        are skipped and counted (reason "tensor not positive definite").
    classes: the class names of a ``class`` task, in the order its probabilities are written (a label is a name
        or its index); None for every other kind.
    valid_range: [low, high] a label must lie in, in ``units`` (tensors: every Cartesian component), either end
        null for no bound; None: any finite value. A label outside it is absurd (a unit mix-up, a failed
        calculation: 1e30, a negative band gap) and is skipped and counted ("label outside the physical range"), so
        it cannot set the normalisation scale. Built-in tasks carry documented ranges (``BUILTIN_TASKS``); override
        per task in the config: ``{name: Eg, valid_range: [0, 50]}``, or ``valid_range: null`` to turn it off. A
        data-validation setting, not part of the model: checkpoints compare task definitions without it.
    energy: for a ``forces`` or ``stress`` task, the name of the energy task it is the derivative of (computed by
        autograd, ``data/kinds/gradients.py``); None for every other kind.
    """

    name: str
    key: str
    units: str
    kind: str = "scalar"
    level: str = "structure"
    formula: str | None = None
    voigt_shape: tuple[int, ...] | None = None
    pooling: str = "mean"
    symmetry_tol: float = 0.01
    description: str = ""
    parametrization: str = "linear"
    classes: tuple[str, ...] | None = None
    valid_range: tuple[float | None, float | None] | None = field(default=None, compare=False)
    energy: str | None = None

    def __post_init__(self):
        kind = kind_of(self.kind, self.name)
        if self.formula is None and getattr(kind, "formula", None):  # forces "i", stress "ij=ji" (and Voigt 6)
            object.__setattr__(self, "formula", kind.formula)
            object.__setattr__(self, "voigt_shape", self.voigt_shape or kind.voigt_shape)
        if self.energy is not None and kind.readout != "gradient":
            raise ConfigError(f"task {self.name!r}: energy names the energy task of a forces or stress task, not of "
                              f"kind {self.kind!r}")
        if self.classes is not None and not isinstance(self.classes, (list, tuple)):
            raise ConfigError(f"task {self.name!r}: classes must be a list of names, got {self.classes!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.level not in LEVELS:
            raise ConfigError(f"task {self.name!r}: level must be one of {LEVELS}, got {self.level!r}")
        if self.level == "atom" and (self.pooling != "mean" or self.parametrization != "linear"):
            raise ConfigError(f"task {self.name!r}: a per-atom task is not pooled and is linear in model space "
                              f"(got pooling {self.pooling!r}, parametrization {self.parametrization!r})")
        if self.pooling not in ("mean", "sum", "max"):
            raise ConfigError(f"task {self.name!r}: pooling must be 'mean', 'sum' or 'max'")
        if self.classes is not None and self.kind != "class":
            raise ConfigError(f"task {self.name!r}: classes are for kind 'class', not {self.kind!r}")
        kind.check(self)  # what this kind cannot take (a tensor without a formula, a log-space sum, ...)
        if self.voigt_shape is not None:
            object.__setattr__(self, "voigt_shape", tuple(self.voigt_shape))
        if self.valid_range is not None:
            low, high = _range_pair(self.name, self.valid_range)
            object.__setattr__(self, "valid_range", (low, high))

    # -- shapes ---------------------------------------------------------------------------------------------------
    @property
    def kind_def(self) -> TaskKind:
        """What this task's kind means: its labels, model space, normalisation, loss and metrics
        (``data.kinds``)."""
        return KINDS[self.kind]

    @property
    def rank(self) -> int:
        return self.kind_def.rank(self)

    @property
    def model_shape(self) -> tuple[int, ...]:
        """Shape of one model-space label: () for scalars, (3,)*rank for tensors."""
        return (3,) * self.rank

    @property
    def model_units(self) -> str:
        return self.kind_def.model_units(self)

    @property
    def output_units(self) -> str:
        """The units of what is written: the label's, or "probability" for a binary task."""
        return self.kind_def.output_units(self)

    @property
    def cartesian_tensor(self):
        if not self.formula:
            raise TypeError(f"task {self.name!r} is not a tensor task")
        return cartesian_tensor(self.formula)

    # -- labels ---------------------------------------------------------------------------------------------------
    def is_missing(self, value) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            return value.strip().lower() in MISSING_STRINGS
        if isinstance(value, (int, float, np.floating, np.integer)):
            return not math.isfinite(float(value))
        return False

    def parse(self, value, where: str):
        """Physical-unit label from raw input: float (scalars) or Cartesian ndarray (tensors); per-atom tasks: an
        array with one such row per atom (NaN where an atom has none). None if missing.

        Raises DataError for a wrong shape, non-finite tensor entries, an asymmetric "symmetric" tensor, a non-positive
        log-scalar or a non-0/1 class.
        """
        if self.level == "atom":
            return self._parse_per_atom(value, where)
        if self.is_missing(value):
            return None
        return self._parse_one(value, where)

    def _parse_per_atom(self, value, where: str) -> np.ndarray | None:
        if value is None or isinstance(value, str) and self.is_missing(value):
            return None
        rows = self._numeric_array(value, "per-atom label", where)
        if rows.ndim == 0:
            raise DataError(where, f"{self.name}: a per-atom task needs one value per atom, got a single number",
                            "invalid label value")
        labelled = np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if not labelled.any():
            return None
        parsed = np.full((len(rows), *self.model_shape), np.nan)
        for atom in np.flatnonzero(labelled):
            parsed[atom] = self._parse_one(rows[atom], f"{where} atom {atom}")
        return parsed

    def _numeric_array(self, value, what: str, where: str) -> np.ndarray:
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(where, f"{self.name}: {what} is not a numeric array", "invalid label value") from None

    def _parse_one(self, value, where: str):
        return self.kind_def.parse_value(self, value, where)

    def check_range(self, values: np.ndarray, where: str) -> None:
        """Raise DataError if any value (a scalar, or a tensor's components) lies outside ``valid_range``."""
        if self.valid_range is None:
            return
        low, high = self.valid_range
        smallest, largest = float(values.min()), float(values.max())
        bad = smallest if low is not None and smallest < low else largest if high is not None and largest > high \
            else None
        if bad is not None:
            part = " component" if self.rank else ""
            raise DataError(where, f"{self.name}: label{part} {bad:.6g} {self.units} outside the physical range "
                                   f"[{low}, {high}] (the task's valid_range; override it in the task definition)",
                            "label outside the physical range")

    def to_cartesian(self, arr: np.ndarray, where: str = "") -> np.ndarray:
        """Accept the Cartesian (3,)*rank form or the Voigt form; return Cartesian."""
        if arr.shape == self.model_shape:
            return arr
        if arr.ndim == 1 and arr.size == 3**self.rank:  # flat, e.g. from an extxyz info string
            return arr.reshape(self.model_shape)
        if arr.ndim == 1 and self.voigt_shape is not None and arr.size == int(np.prod(self.voigt_shape)):
            return voigt_to_cartesian(arr.reshape(self.voigt_shape))
        if self.voigt_shape is not None and arr.shape == self.voigt_shape:
            return voigt_to_cartesian(arr)
        expected = f"{self.model_shape}" + (f" or Voigt {self.voigt_shape}" if self.voigt_shape else "")
        raise DataError(where, f"{self.name}: tensor of shape {arr.shape}, expected {expected}",
                        "tensor of wrong shape")

    def to_user(self, cartesian: np.ndarray) -> np.ndarray:
        """The form users give and get: Voigt where the task has one, else Cartesian; one tensor or a batch of them
        (leading axes kept)."""
        return cartesian_to_voigt(cartesian, self.rank) if self.voigt_shape is not None else cartesian

    def symmetrize(self, arr: np.ndarray, where: str) -> np.ndarray:
        """Project onto the formula's symmetric subspace; refuse tensors that are asymmetric beyond tolerance."""
        projected = project_symmetric(arr, self.formula)
        scale = max(float(np.abs(arr).max()), 1e-12)
        asym = float(np.abs(arr - projected).max()) / scale
        if asym > self.symmetry_tol:
            raise DataError(where, f"{self.name}: tensor violates symmetry {self.formula} "
                                   f"(relative asymmetry {asym:.3g} > tolerance {self.symmetry_tol})",
                            "tensor not symmetric")
        return projected

    def to_model(self, value) -> np.ndarray:
        """Model-space target from a parsed physical label: log10 for log-scalars, the log tensor for "spd_log"
        tensors, else unchanged."""
        return self.kind_def.to_model(self, np.asarray(value, dtype=np.float64))

    def from_model(self, x: np.ndarray) -> np.ndarray:
        """Physical label from model space; accepts one value or a batch (leading axis)."""
        return self.kind_def.from_model(self, np.asarray(x, dtype=np.float64))

    def to_config(self) -> dict:
        return asdict(self)


def per_atom_tasks(tasks: dict[str, TaskSpec]) -> frozenset[str]:
    """Names of the per-atom tasks (``level: atom``) among ``tasks``: one value per atom, not per structure."""
    return frozenset(name for name, task in tasks.items() if task.level == "atom")


def _range_pair(name: str, valid_range) -> tuple[float | None, float | None]:
    try:
        low, high = (None if v is None else float(v) for v in valid_range)
    except (TypeError, ValueError):
        raise ConfigError(f"task {name!r}: valid_range must be [low, high] (numbers or null), "
                          f"got {valid_range!r}") from None
    if low is not None and high is not None and not low < high:
        raise ConfigError(f"task {name!r}: valid_range needs low < high, got [{low}, {high}]")
    return low, high


# -- built-in tasks -----------------------------------------------------------------------------------------------
# valid_range: physical bounds in the task's units, wide enough for every real material we know of (diamond: K 443,
# G 535, C11 1079 GPa; ferroelectric eps_0 ~1e3-1e4; phonons below ~4000 cm^-1 even with H). Maxima in the bundled
# data (5,909 MP crystals): Ef -4.5..2.3 eV/atom, Eg <= 7.7 eV, K <= 436 GPa, G <= 523 GPa, |C_ij| <= 1242 GPa,
# |eps| <= 427, |e_ij| <= 49 C/m^2
BUILTIN_TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("Ef", "formation_energy_per_atom", "eV/atom", valid_range=(-10, 10),
             description="formation energy per atom (DFT)"),
    TaskSpec("Eg", "band_gap", "eV", valid_range=(0, 20), description="band gap (PBE)"),
    TaskSpec("Eg_mbj", "mbj_bandgap", "eV", valid_range=(0, 20), description="band gap (TBmBJ meta-GGA, JARVIS)"),
    TaskSpec("K_VRH", "K_VRH", "GPa", kind="log_scalar", valid_range=(0, 1000),
             description="Voigt-Reuss-Hill bulk modulus"),
    TaskSpec("G_VRH", "G_VRH", "GPa", kind="log_scalar", valid_range=(0, 1000),
             description="Voigt-Reuss-Hill shear modulus"),
    TaskSpec("K_Voigt", "bulk_modulus_kv", "GPa", kind="log_scalar", valid_range=(0, 1000),
             description="Voigt bulk modulus (JARVIS)"),
    TaskSpec("G_Voigt", "shear_modulus_gv", "GPa", kind="log_scalar", valid_range=(0, 1000),
             description="Voigt shear modulus (JARVIS)"),
    TaskSpec("e_above_hull", "e_above_hull", "eV/atom", valid_range=(0, 10),
             description="energy above the convex hull"),
    TaskSpec("is_metal", "is_metal", "dimensionless", kind="binary", description="1 if band gap is zero"),
    TaskSpec("eps_electronic", "eps_electronic", "dimensionless", kind="tensor", formula="ij=ji",
             valid_range=(-1e4, 1e4),
             description="high-frequency (electronic) dielectric tensor eps_inf"),
    TaskSpec("eps_total", "eps_total", "dimensionless", kind="tensor", formula="ij=ji", valid_range=(-1e4, 1e4),
             description="static dielectric tensor eps_0 (electronic + ionic)"),
    TaskSpec("elastic_tensor", "elastic_tensor", "GPa", kind="tensor", formula="ijkl=jikl=klij",
             voigt_shape=(6, 6), valid_range=(-2000, 2000),
             description="stiffness tensor C_ijkl (Voigt 6x6 in and out)"),
    TaskSpec("piezo_tensor", "piezoelectric_tensor", "C/m^2", kind="tensor", formula="ijk=ikj",
             voigt_shape=(3, 6), valid_range=(-100, 100),
             description="piezoelectric stress tensor e_ijk (Voigt 3x6 in and out)"),
    TaskSpec("eij_max", "eij_max", "C/m^2", valid_range=(0, 100), description="largest piezoelectric modulus |e_ij|"),
    TaskSpec("refractive_index", "n", "dimensionless", valid_range=(1, 20),
             description="refractive index n = sqrt(poly eps_inf)"),
    # the highest phonon peak is set by the stiffest, lightest local environment: max over atoms, not their mean
    # (frozen SevenNet features, fold 0: 29.1 vs 43.1 cm^-1)
    TaskSpec("phdos_peak", "last phdos peak", "cm^-1", pooling="max", valid_range=(0, 5000),
             description="frequency of the last phonon DOS peak"),
    TaskSpec("e_form_perovskite", "e_form", "eV/cell", pooling="sum", valid_range=(-50, 50),
             description="perovskite formation energy per 5-atom cell (MatBench perovskites)"),
    TaskSpec("gap_gllbsc_direct", "dir_gap", "eV", valid_range=(0, 20),
             description="direct band gap, GLLB-SC (Castelli perovskites)"),
    TaskSpec("gap_gllbsc_indirect", "ind_gap", "eV", valid_range=(0, 20),
             description="indirect band gap, GLLB-SC (Castelli perovskites)"),
    TaskSpec("log_kvrh", "log10(K_VRH)", "log10(GPa)", valid_range=(-3, 4), description="MatBench log10 bulk modulus"),
    TaskSpec("log_gvrh", "log10(G_VRH)", "log10(GPa)", valid_range=(-3, 4), description="MatBench log10 shear modulus"),
    TaskSpec("exfoliation_energy", "exfoliation_en", "meV/atom", valid_range=(0, 10000),
             description="MatBench jdft2d exfoliation energy"),
]}

# MatBench task -> (equiprop task, MatBench target column)
MATBENCH_TASKS: dict[str, tuple[str, str]] = {
    "matbench_phonons": ("phdos_peak", "last phdos peak"),
    "matbench_dielectric": ("refractive_index", "n"),
    "matbench_log_kvrh": ("log_kvrh", "log10(K_VRH)"),
    "matbench_log_gvrh": ("log_gvrh", "log10(G_VRH)"),
    "matbench_mp_e_form": ("Ef", "e_form"),
    "matbench_mp_gap": ("Eg", "gap pbe"),
    "matbench_mp_is_metal": ("is_metal", "is_metal"),
    "matbench_perovskites": ("e_form_perovskite", "e_form"),
    "matbench_jdft2d": ("exfoliation_energy", "exfoliation_en"),
}


def resolve_task(task: str | dict | TaskSpec) -> TaskSpec:
    """A TaskSpec from a built-in name, a config dict (user-defined task) or a TaskSpec."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, dict):
        if task.get("name") in BUILTIN_TASKS and not {"key", "units"} & set(task):
            # a built-in task with some fields changed, e.g. {name: eps_electronic, parametrization: spd_log}
            try:
                return replace(BUILTIN_TASKS[task["name"]], **{k: v for k, v in task.items() if k != "name"})
            except TypeError as err:
                raise ConfigError(f"task definition {task}: {err}") from None
        try:
            return TaskSpec(**task)
        except TypeError as err:
            raise ConfigError(f"task definition {task}: {err}") from None
    if task not in BUILTIN_TASKS:
        raise ConfigError(f"unknown task {task!r}; built-in tasks: {', '.join(BUILTIN_TASKS)} "
                          "(define others in config with name, key, units, kind)")
    return BUILTIN_TASKS[task]


def resolve_tasks(tasks) -> dict[str, TaskSpec]:
    specs = [resolve_task(t) for t in tasks]
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate task names in {names}")
    return {t.name: t for t in specs}
