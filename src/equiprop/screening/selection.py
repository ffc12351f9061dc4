"""Selection of Phase-2 candidates from Phase-1 means and uncertainties (a YAML recipe's ``selection:`` section).

    selection:
      windows:                       # all must hold (AND) on the Phase-1 mean
        - {property: Eg, min: 1.0, max: 3.0}
        - {property: eps_electronic, reduce: isotropic, min: 10}
      top_k: {objective: K_VRH, k: 100, direction: max}   # optional, among the window passers
      straddle_sigmas: 1.0

Every number must be finite (YAML's ``.nan``/``.inf`` are refused, naming the key); a bound left out is open.

The rule (``select``), per candidate predicted in Phase 1 (failed ones are never chosen, ``chosen_by`` ""):

- it *passes the windows* when every window holds on its mean (``min <= mean <= max``; a missing bound is open);
- without ``top_k`` every passer is chosen, ``chosen_by`` "window"; with ``top_k`` only the ``k`` passers with the
  best objective mean (``direction`` max: largest) are chosen, ``chosen_by`` "top_k"; the other passers are not;
- ``straddle_sigmas: s`` also chooses, ``chosen_by`` "straddle", every candidate that fails the windows on its mean
  but for which every window holds on the interval [mean - s*sigma, mean + s*sigma] (the interval overlaps the
  window): it could pass within its uncertainty. Without sigma (one checkpoint, no MC samples) nothing is chosen so.

``reduce`` makes a tensor output a scalar: ``isotropic`` (trace/3 of a 3x3 tensor; the Voigt bulk modulus
(C11+C22+C33+2(C12+C13+C23))/9 of a 6x6 elastic tensor), ``max_eigenvalue`` (of a symmetric 3x3 or 6x6), or a
component: ``xx``/``yz``... of a 3x3 tensor, Voigt indices ``11``..``66`` of a 6x6 or 3x6 one. Scalars take none.
The sigma of a reduced value is the bound for fully correlated components (sum of |weight| * sigma of each component;
members' correlations are not known from the mean/std the predictor gives); for ``max_eigenvalue`` it is the
Frobenius norm of the component sigmas (Weyl's bound on how far an eigenvalue moves).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from equiprop.data.errors import ConfigError
from equiprop.data.tensor_ops import isotropic_weights

AXES = "xyz"
REDUCES = ("isotropic", "max_eigenvalue")
CHOSEN_REASONS = ("window", "top_k", "straddle")


@dataclass(frozen=True)
class Quantity:
    """One scalar derived from an output: the output itself (scalar) or a reduction of a tensor output."""

    property: str
    reduce: str | None = None

    @property
    def label(self) -> str:
        return self.property if self.reduce is None else f"{self.property}.{self.reduce}"


@dataclass(frozen=True)
class Window:
    quantity: Quantity
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class TopK:
    quantity: Quantity
    k: int
    direction: str = "max"


@dataclass(frozen=True)
class Selection:
    windows: tuple[Window, ...] = ()
    top_k: TopK | None = None
    straddle_sigmas: float = 0.0
    recipe: dict = field(default_factory=dict, compare=False)  # as given, for the summary

    @property
    def quantities(self) -> list[Quantity]:
        found = [w.quantity for w in self.windows] + ([self.top_k.quantity] if self.top_k else [])
        return list(dict.fromkeys(found))

    def sha256(self) -> str:
        canonical = {"windows": [asdict(w) for w in self.windows], "straddle_sigmas": self.straddle_sigmas,
                     "top_k": asdict(self.top_k) if self.top_k else None}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


# -- parsing ------------------------------------------------------------------------------------------------------
def load_selection(path: str | Path | None, shapes: dict[str, tuple]) -> Selection:
    """The ``selection:`` section of a YAML recipe (None: everything Phase 1 predicts is chosen)."""
    if path is None:
        return Selection()
    import yaml

    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable YAML file ({type(err).__name__}: {err})") from None
    if not isinstance(content, dict) or not isinstance(content.get("selection"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'selection:' section")
    return parse_selection(content["selection"], shapes, where=f"{path}: selection")


def _keys(d, allowed: set, where: str) -> dict:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {d!r}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return d


def _number(d: dict, key: str, where: str) -> float | None:
    """A finite number or None: YAML's .nan would pass no window and every check (NaN < 0 is False), .inf all."""
    value = d.get(key)
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    except OverflowError:  # an integer too large for a float
        number = None
    if number is None or not np.isfinite(number):
        raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}"
                          + (" (leave the key out for an open bound)" if key in ("min", "max") else ""))
    return number


def parse_quantity(d: dict, key: str, shapes: dict[str, tuple], where: str) -> Quantity:
    name, reduce = d.get(key), d.get("reduce")
    if name not in shapes:
        raise ConfigError(f"{where}.{key}: unknown property {name!r} (Phase-1 outputs: {', '.join(shapes)})")
    shape = tuple(shapes[name])
    if reduce is None and shape:
        raise ConfigError(f"{where}.reduce: {name} is a tensor {shape}; give reduce: isotropic, max_eigenvalue "
                          "or a component (xx for 3x3, 11 for Voigt)")
    if reduce is not None:
        if not shape:
            raise ConfigError(f"{where}.reduce: {name} is a scalar and takes no reduce")
        if not _valid_reduce(str(reduce), shape):
            raise ConfigError(f"{where}.reduce: unknown reduce {reduce!r} for {name} {shape} (isotropic, "
                              "max_eigenvalue, or a component: xx..zz for 3x3, 11..66 for Voigt)")
        reduce = str(reduce)
    return Quantity(str(name), reduce)


def parse_selection(section: dict, shapes: dict[str, tuple], where: str = "selection") -> Selection:
    """A Selection from a recipe's section; ConfigError naming the key for anything wrong. ``shapes``: per
    Phase-1 output, the shape of one structure's value (() for scalars)."""
    section = _keys(section or {}, {"windows", "top_k", "straddle_sigmas"}, where)
    windows = []
    if not isinstance(section.get("windows", []), list):
        raise ConfigError(f"{where}.windows: expected a list of {{property, min, max}}")
    for i, w in enumerate(section.get("windows", [])):
        at = f"{where}.windows[{i}]"
        w = _keys(w, {"property", "reduce", "min", "max"}, at)
        low, high = _number(w, "min", at), _number(w, "max", at)
        if low is None and high is None:
            raise ConfigError(f"{at}: give min, max or both")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{at}: min {low:g} > max {high:g}")
        windows.append(Window(parse_quantity(w, "property", shapes, at), low, high))
    top_k = None
    if section.get("top_k") is not None:
        at = f"{where}.top_k"
        t = _keys(section["top_k"], {"objective", "reduce", "k", "direction"}, at)
        k, direction = t.get("k"), t.get("direction", "max")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"{at}.k: expected a positive integer, got {k!r}")
        if direction not in ("max", "min"):
            raise ConfigError(f"{at}.direction: expected 'max' or 'min', got {direction!r}")
        top_k = TopK(parse_quantity(t, "objective", shapes, at), k, direction)
    sigmas = _number(section, "straddle_sigmas", where) or 0.0
    if sigmas < 0:
        raise ConfigError(f"{where}.straddle_sigmas: must be >= 0, got {sigmas:g}")
    return Selection(tuple(windows), top_k, sigmas, recipe=dict(section))


# -- reductions ---------------------------------------------------------------------------------------------------
def _component(reduce: str, shape: tuple) -> tuple[int, int] | None:
    if shape == (3, 3) and len(reduce) == 2 and set(reduce) <= set(AXES):
        return AXES.index(reduce[0]), AXES.index(reduce[1])
    if len(shape) == 2 and shape[1] == 6 and len(reduce) == 2 and reduce.isdigit():
        row, col = int(reduce[0]) - 1, int(reduce[1]) - 1
        if 0 <= row < shape[0] and 0 <= col < 6:
            return row, col
    return None


def _valid_reduce(reduce: str, shape: tuple) -> bool:
    if reduce == "isotropic":
        return shape in ((3, 3), (6, 6))
    if reduce == "max_eigenvalue":
        return shape in ((3, 3), (6, 6))
    return _component(reduce, shape) is not None


def reduce_values(mean: np.ndarray, std: np.ndarray | None, reduce: str | None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(num, *shape) mean/std of an output -> (num,) mean/std of the quantity (std: see the module docstring)."""
    mean = np.asarray(mean, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    if reduce is None:
        return mean, std
    shape = mean.shape[1:]
    if reduce == "isotropic":
        w = isotropic_weights(shape)
        return (np.einsum("nij,ij->n", mean, w),
                None if std is None else np.einsum("nij,ij->n", std, np.abs(w)))
    if reduce == "max_eigenvalue":
        finite = np.isfinite(mean).all(axis=(1, 2))
        values = np.full(len(mean), np.nan)
        if finite.any():
            sym = 0.5 * (mean[finite] + np.swapaxes(mean[finite], 1, 2))
            values[finite] = np.linalg.eigvalsh(sym)[:, -1]
        return values, None if std is None else np.sqrt((std ** 2).sum(axis=(1, 2)))
    row, col = _component(reduce, shape)
    return mean[:, row, col], None if std is None else std[:, row, col]


# -- the rule -----------------------------------------------------------------------------------------------------
def _holds(low: np.ndarray, high: np.ndarray, window: Window) -> np.ndarray:
    """Whether [low, high] overlaps the window (low == high: the value lies in it). NaN never holds."""
    ok = np.isfinite(low) & np.isfinite(high)
    if window.min is not None:
        ok &= high >= window.min
    if window.max is not None:
        ok &= low <= window.max
    return ok


def select(selection: Selection, ok: np.ndarray, means: dict[str, np.ndarray],
           sigmas: dict[str, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """(passes_windows bool (num,), chosen_by str (num,) of "window" / "top_k" / "straddle" / "") for candidates
    predicted (``ok``) or not; ``means``/``sigmas`` by Quantity label, (num,) each (sigma None: no uncertainty)."""
    ok = np.asarray(ok, dtype=bool)
    passes, straddles = ok.copy(), ok.copy()
    width = selection.straddle_sigmas
    for window in selection.windows:
        mean, sigma = means[window.quantity.label], sigmas.get(window.quantity.label)
        passes &= _holds(mean, mean, window)
        if sigma is None or width <= 0:
            straddles[:] = False
        else:
            straddles &= _holds(mean - width * sigma, mean + width * sigma, window)
    chosen = np.full(len(ok), "", dtype=object)
    if selection.top_k is None:
        chosen[passes] = "window"
    else:
        objective = means[selection.top_k.quantity.label]
        candidates = np.flatnonzero(passes & np.isfinite(objective))
        order = np.argsort(-objective[candidates] if selection.top_k.direction == "max" else objective[candidates],
                           kind="stable")  # ties: input order
        chosen[candidates[order[:selection.top_k.k]]] = "top_k"
    if selection.windows:
        chosen[straddles & ~passes] = "straddle"
    return passes, chosen
