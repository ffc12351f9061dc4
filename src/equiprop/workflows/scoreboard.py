"""Accuracy scoreboard: a model's test errors beside honest baselines, per task, in physical units.

Baselines on the same test structures:
- ``training_median``: the component-wise median of the training labels (physical units), for every structure.
- ``isotropic_oracle`` (tensors): the true tensor's isotropic (0e) part, i.e. a perfect scalar model; the zero tensor
  for the piezoelectric tensor, which has no isotropic part. Its anisotropic error is that of predicting no anisotropy.
- ``invariant_baseline``: a trained invariant model (its predictions are passed in like the model's).

Tensor errors are mean absolute errors over all Cartesian components and structures, of the whole tensor, of its
isotropic part and of its anisotropic (traceless) part (``equiprop.data.tensor_ops``). Pure numpy: no Lightning.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equiprop.data.tensor_ops import anisotropic_part, isotropic_part, voigt_bulk_modulus

MODEL, INVARIANT, MEDIAN, ORACLE = "model", "invariant_baseline", "training_median", "isotropic_oracle"
PREDICTORS = (MODEL, INVARIANT, MEDIAN, ORACLE)
K_VOIGT = "K_Voigt_from_elastic_tensor"  # row name of the bulk modulus derived from the elastic tensor


@dataclass
class TaskResults:
    """One task's labels and predictions in physical units; ``true`` and every prediction share ``ids``' order."""

    task: str
    kind: str  # the task's kind (scalar | log_scalar | tensor ...): for the table; a tensor is one with a formula
    units: str
    formula: str | None  # CartesianTensor formula of a tensor task
    ids: list[str]  # test structures carrying this label
    true: np.ndarray  # (n_test, *shape)
    train_labels: np.ndarray  # (n_train, *shape)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # trained predictors: model, invariant_baseline


@dataclass
class Row:
    task: str
    metric: str
    units: str
    n_train: int
    n_test: int
    values: dict[str, float]  # predictor -> error; predictors that do not apply are absent


@dataclass
class GoalCheck:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


# -- baselines ----------------------------------------------------------------------------------------------------
def training_median(train_labels: np.ndarray, n: int) -> np.ndarray:
    """The component-wise median of the training labels, repeated for n structures."""
    median = np.median(np.asarray(train_labels, dtype=np.float64), axis=0)
    return np.broadcast_to(median, (n, *median.shape)).copy()


def isotropic_oracle(true: np.ndarray, formula: str) -> np.ndarray:
    """A perfect scalar model: the true tensors' isotropic part (zero for a tensor without 0e irreps)."""
    return isotropic_part(np.asarray(true, dtype=np.float64), formula)


def all_predictions(result: TaskResults) -> dict[str, np.ndarray]:
    """The trained predictors' predictions plus the reference baselines, in PREDICTORS order."""
    out = dict(result.predictions)
    out[MEDIAN] = training_median(result.train_labels, len(result.true))
    if result.formula is not None:
        out[ORACLE] = isotropic_oracle(result.true, result.formula)
    return {name: out[name] for name in PREDICTORS if name in out}


# -- errors -------------------------------------------------------------------------------------------------------
def scalar_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff**2).mean()))}


def tensor_errors(pred: np.ndarray, true: np.ndarray, formula: str) -> dict[str, float]:
    """Component MAE of the whole tensor, of its isotropic part and of its anisotropic part; and, robust to the one
    or two extreme crystals that dominate a mean (eps_inf up to ~200 in a test set of ~90), the median over
    structures of each structure's isotropic / anisotropic component MAE."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    per_structure = {part: np.abs(fn(pred, formula) - fn(true, formula)).reshape(len(true), -1).mean(axis=1)
                     for part, fn in (("isotropic", isotropic_part), ("anisotropic", anisotropic_part))}
    return {"component_mae": float(np.abs(pred - true).mean()),
            "isotropic_mae": float(per_structure["isotropic"].mean()),
            "anisotropic_mae": float(per_structure["anisotropic"].mean()),
            "isotropic_median_ae": float(np.median(per_structure["isotropic"])),
            "anisotropic_median_ae": float(np.median(per_structure["anisotropic"]))}


# -- rows ---------------------------------------------------------------------------------------------------------
def task_rows(result: TaskResults) -> list[Row]:
    """One row per metric of the task, every predictor that applies in each."""
    predictions = all_predictions(result)
    if result.formula is not None:
        errors = {name: tensor_errors(p, result.true, result.formula) for name, p in predictions.items()}
        metrics = ("component_mae", "isotropic_mae", "anisotropic_mae", "isotropic_median_ae", "anisotropic_median_ae")
    else:
        errors = {name: scalar_errors(p, result.true) for name, p in predictions.items()}
        metrics = ("mae", "rmse")
    return [Row(result.task, metric, result.units, len(result.train_labels), len(result.true),
                {name: e[metric] for name, e in errors.items()}) for metric in metrics]


def bulk_modulus_rows(elastic: TaskResults, k_vrh: TaskResults) -> list[Row]:
    """K_Voigt from each predicted elastic tensor (vs K_Voigt of the true tensor) beside the K_VRH head's MAE, on the
    test structures that carry both labels, and their ratio. K_Voigt >= K_VRH by definition, so K_Voigt is scored
    against the true tensor's K_Voigt, not against the K_VRH label (also reported, as ``mae_vs_K_VRH_label``)."""
    both = sorted(set(elastic.ids) & set(k_vrh.ids))
    if not both:
        return []
    position_e, position_k = {i: n for n, i in enumerate(elastic.ids)}, {i: n for n, i in enumerate(k_vrh.ids)}
    at_e, at_k = [position_e[i] for i in both], [position_k[i] for i in both]
    elastic_predictions, k_predictions = all_predictions(elastic), all_predictions(k_vrh)
    true_kv, true_kvrh = voigt_bulk_modulus(elastic.true[at_e]), k_vrh.true[at_k]
    kv = {name: voigt_bulk_modulus(p[at_e]) for name, p in elastic_predictions.items()}
    kv_mae = {name: float(np.abs(v - true_kv).mean()) for name, v in kv.items()}
    kv_vs_label = {name: float(np.abs(v - true_kvrh).mean()) for name, v in kv.items() if name != ORACLE}
    head_mae = {name: float(np.abs(p[at_k] - true_kvrh).mean()) for name, p in k_predictions.items()}
    ratio = {name: kv_mae[name] / head_mae[name] for name in kv_mae if name in head_mae and head_mae[name] > 0}
    n_train = len(elastic.train_labels)
    return [Row(K_VOIGT, "mae", k_vrh.units, n_train, len(both), kv_mae),
            Row(K_VOIGT, "mae_vs_K_VRH_label", k_vrh.units, n_train, len(both), kv_vs_label),
            Row(k_vrh.task, "mae_on_elastic_structures", k_vrh.units, len(k_vrh.train_labels), len(both), head_mae),
            Row(K_VOIGT, "mae_ratio_to_K_VRH_head", "dimensionless", n_train, len(both), ratio)]


def scoreboard_rows(results: dict[str, TaskResults]) -> list[Row]:
    rows = [row for result in results.values() for row in task_rows(result)]
    if "elastic_tensor" in results and "K_VRH" in results:
        rows += bulk_modulus_rows(results["elastic_tensor"], results["K_VRH"])
    return rows


def lookup(rows: list[Row], task: str, metric: str, predictor: str) -> float | None:
    return next((r.values.get(predictor) for r in rows if r.task == task and r.metric == metric), None)


# -- goal checks --------------------------------------------------------------------------------------------------
def _ratio_check(rows: list[Row], name: str, task: str, metric: str, reference: str, limit: float,
                 what: str) -> GoalCheck | None:
    """PASS when the model's ``metric`` <= limit x the reference predictor's; None when the task is absent."""
    ref, value = lookup(rows, task, metric, reference), lookup(rows, task, metric, MODEL)
    if ref is None:
        return None
    ok = value is not None and bool(np.isfinite(value)) and value <= limit * ref
    shown = "missing" if value is None else f"{value:.4g}"
    ratio = f", ratio {value / ref:.3g}" if value is not None and ref > 0 else ""
    return GoalCheck(name, ok, f"model {metric} {shown} vs goal <= {limit:g} x {what} {ref:.4g} = "
                               f"{limit * ref:.4g}{ratio}")


def goal_checks(rows: list[Row]) -> list[GoalCheck]:
    """The issue's accuracy goals; tasks absent from the rows are not checked."""
    checks = []
    for eps in ("eps_electronic", "eps_total"):
        checks += [_ratio_check(rows, f"{eps} traceless MAE <= 0.5x zero anisotropy", eps, "anisotropic_mae",
                                ORACLE, 0.5, "isotropic oracle (zero anisotropy)"),
                   _ratio_check(rows, f"{eps} isotropic MAE >= 30% below training median", eps, "isotropic_mae",
                                MEDIAN, 0.7, "training median")]
    checks.append(_ratio_check(rows, "elastic_tensor anisotropic MAE >= 30% below isotropic oracle",
                               "elastic_tensor", "anisotropic_mae", ORACLE, 0.7, "isotropic oracle"))
    ratio = lookup(rows, K_VOIGT, "mae_ratio_to_K_VRH_head", MODEL)
    if lookup(rows, K_VOIGT, "mae", MODEL) is not None:
        ok = ratio is not None and bool(np.isfinite(ratio)) and ratio <= 1.1
        shown = "missing" if ratio is None else f"{ratio:.3g}"
        checks.append(GoalCheck("K_Voigt from tensor within 10% of the K_VRH head", ok,
                                f"K_Voigt MAE / K_VRH head MAE = {shown} vs goal <= 1.1"))
    checks.append(_ratio_check(rows, "piezo_tensor component MAE >= 25% below zero", "piezo_tensor",
                               "component_mae", ORACLE, 0.75, "zero tensor"))
    return [c for c in checks if c is not None]


# -- output -------------------------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def format_table(rows: list[Row]) -> str:
    """Fixed-width text table for the terminal."""
    head = f"{'task':<28} {'metric':<26} " + " ".join(f"{p:>18}" for p in PREDICTORS) + \
        f" {'n_train':>7} {'n_test':>6}  units"
    lines = [head] + [f"{r.task:<28} {r.metric:<26} " + " ".join(f"{_fmt(r.values.get(p)):>18}" for p in PREDICTORS)
                      + f" {r.n_train:>7} {r.n_test:>6}  {r.units}" for r in rows]
    return "\n".join(lines)


def csv_fields(meta: dict[str, str]) -> list[str]:
    """The CSV's columns; ValueError when a metadata key repeats one (a meta key "model" once overwrote every row's
    model error with the model's path: DictWriter writes a repeated name's last value into both columns)."""
    fields = ["task", "metric", "units", "n_train", "n_test", *PREDICTORS]
    clash = [key for key in meta if key in fields]
    if clash:
        raise ValueError(f"scoreboard metadata {clash} would repeat a column of the table; rename it "
                         f"(e.g. {clash[0]}_path)")
    return fields + list(meta)


def write_csv(rows: list[Row], meta: dict[str, str], path: Path) -> None:
    """One line per (task, metric); the run's metadata (commit, command, seed, recipes) repeated on every line so
    that each line stands alone. An empty cell: the predictor does not apply to that row. Column names are unique."""
    fields = csv_fields(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({"task": r.task, "metric": r.metric, "units": r.units, "n_train": r.n_train,
                             "n_test": r.n_test, **{p: _fmt(r.values.get(p)) for p in PREDICTORS}, **meta})


def write_markdown(rows: list[Row], checks: list[GoalCheck], meta: dict[str, str], path: Path,
                   notes: list[str] = ()) -> None:
    lines = ["# Accuracy scoreboard (test split)", ""]
    lines += [f"- {key}: `{value}`" for key, value in meta.items()]
    lines += ["", "| task | metric | units | n_train | n_test | " + " | ".join(PREDICTORS) + " |",
              "|" + "---|" * (5 + len(PREDICTORS))]
    lines += [f"| {r.task} | {r.metric} | {r.units} | {r.n_train} | {r.n_test} | "
              + " | ".join(_fmt(r.values.get(p)) for p in PREDICTORS) + " |" for r in rows]
    lines += ["", "## Goal checks", ""] + [f"- {c.line()}" for c in checks]
    lines += ["", "## Definitions", "",
              "- Errors are mean absolute errors in each row's units on the test split (RMSE where named); tensor "
              "rows average over all Cartesian components and structures.",
              "- isotropic/anisotropic MAE: component MAE of the isotropic (0e) part / of the rest (the traceless "
              "part for rank 2) of prediction minus truth (`equiprop.data.tensor_ops`). *_median_ae: the median over "
              "test structures of each structure's component MAE of that part (robust to a few extreme crystals).",
              "- training_median: component-wise median of the training labels; isotropic_oracle: the true "
              "tensor's isotropic part (zero for the piezoelectric tensor).",
              f"- {K_VOIGT}: C_iijj/9 of each predicted tensor vs that of the true tensor, on test structures with "
              "both an elastic tensor and a K_VRH label; the K_VRH row beside it is the direct head on the same "
              "structures. Its goal, within 10% of the head, reads K_Voigt MAE <= 1.1 x K_VRH head MAE (better "
              "passes).", *[f"- {note}" for note in notes]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# -- several seeds --------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[Row]:
    """The rows of a scoreboard CSV written by ``write_csv``."""
    with Path(path).open(newline="") as f:
        return [Row(r["task"], r["metric"], r["units"], int(r["n_train"]), int(r["n_test"]),
                    {p: float(r[p]) for p in PREDICTORS if r.get(p) not in (None, "")}) for r in csv.DictReader(f)]


def seed_summary(paths: list[Path]) -> str:
    """Markdown: each row's trained predictors as mean ± standard error over the runs (one per seed), the fixed
    baselines beside them, and how many runs pass each goal check."""
    runs = [read_rows(p) for p in paths]
    n = len(runs)
    lines = [f"Mean ± standard error over {n} runs: " + ", ".join(f"`{p}`" for p in paths), "",
             "| task | metric | units | model | invariant_baseline | training_median | isotropic_oracle |",
             "|---|---|---|---|---|---|---|"]
    for row in runs[0]:
        cells = []
        for predictor in PREDICTORS:
            values = [lookup(rows, row.task, row.metric, predictor) for rows in runs]
            values = np.array([v for v in values if v is not None], dtype=np.float64)
            if not len(values):
                cells.append("")
            elif predictor in (MODEL, INVARIANT) and len(values) > 1:
                cells.append(f"{values.mean():.4g} ± {values.std(ddof=1) / np.sqrt(len(values)):.2g}")
            else:
                cells.append(_fmt(float(values.mean())))
        lines.append(f"| {row.task} | {row.metric} | {row.units} | " + " | ".join(cells) + " |")
    passed: dict[str, int] = {}
    for rows in runs:
        for check in goal_checks(rows):
            passed[check.name] = passed.get(check.name, 0) + int(check.passed)
    lines += ["", "Goal checks (runs passing):", ""] + [f"- {name}: {k} of {n}" for name, k in passed.items()]
    return "\n".join(lines) + "\n"
