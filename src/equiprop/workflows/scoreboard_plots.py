"""Parity plots of the accuracy scoreboard (matplotlib, Agg): predicted vs true per task, the model and the
invariant baseline in one figure; tensors per independent component, rank-2 tensors also by eigenvalue."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiprop.data.tensor_ops import VOIGT_PAIRS
from equiprop.workflows.scoreboard import INVARIANT, MODEL, TaskResults

AXES = "xyz"
# the model drawn above the baseline, so that a poor baseline cannot hide it
STYLE = {MODEL: dict(s=8, alpha=0.5, color="tab:blue", zorder=3),
         INVARIANT: dict(s=8, alpha=0.5, color="tab:orange", zorder=2)}


def independent_components(t: np.ndarray, rank: int) -> tuple[list[str], np.ndarray]:
    """(names, (n, k) values) of the distinct components of symmetric tensors: 6 of eps, 18 of e_iJ, 21 of C_IJ."""
    t = np.asarray(t)
    if rank == 2:
        return [AXES[i] + AXES[j] for i, j in VOIGT_PAIRS], np.stack([t[:, i, j] for i, j in VOIGT_PAIRS], axis=1)
    if rank == 3:
        index = [(i, a) for i in range(3) for a in range(6)]
        return ([f"e{i + 1}{a + 1}" for i, a in index],
                np.stack([t[:, i, VOIGT_PAIRS[a][0], VOIGT_PAIRS[a][1]] for i, a in index], axis=1))
    if rank == 4:
        index = [(a, b) for a in range(6) for b in range(a, 6)]
        return ([f"C{a + 1}{b + 1}" for a, b in index],
                np.stack([t[:, i, j, k, l] for (i, j), (k, l) in
                          ((VOIGT_PAIRS[a], VOIGT_PAIRS[b]) for a, b in index)], axis=1))
    raise ValueError(f"no component layout for rank {rank}")


def _panel(ax, true: np.ndarray, predictions: dict[str, np.ndarray], title: str, units: str) -> None:
    for name, pred in predictions.items():
        ax.scatter(true, pred, label=name, **STYLE.get(name, {}))
    values = np.concatenate([true.ravel(), *[p.ravel() for p in predictions.values()]])
    low, high = float(values.min()), float(values.max())
    ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"true [{units}]", fontsize=8)
    ax.set_ylabel(f"predicted [{units}]", fontsize=8)
    ax.tick_params(labelsize=7)


def parity_plots(results: dict[str, TaskResults], prefix: Path) -> list[Path]:
    """Write PREFIX_parity_<task>.png (and PREFIX_eigenvalues_<task>.png for rank-2 tensors); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, kind: str, task: str) -> None:
        path = prefix.with_name(f"{prefix.name}_{kind}_{task}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    for name, result in results.items():
        trained = {p: result.predictions[p] for p in (MODEL, INVARIANT) if p in result.predictions}
        if result.formula is None:  # a number
            fig, ax = plt.subplots(figsize=(5, 5))
            _panel(ax, result.true, trained, f"{name} (n={len(result.true)})", result.units)
            ax.legend(fontsize=8)
            save(fig, "parity", name)
            continue
        rank = result.true.ndim - 1
        labels, true = independent_components(result.true, rank)
        predicted = {p: independent_components(v, rank)[1] for p, v in trained.items()}
        cols = 6
        rows = -(-len(labels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for k, label in enumerate(labels):
            _panel(axes.flat[k], true[:, k], {p: v[:, k] for p, v in predicted.items()}, f"{name} {label}",
                   result.units)
        for ax in axes.flat[len(labels):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        save(fig, "parity", name)
        if rank == 2:  # eigenvalues: rotation-invariant, so comparable however the crystal is oriented
            fig, ax = plt.subplots(figsize=(5, 5))
            _panel(ax, np.linalg.eigvalsh(result.true), {p: np.linalg.eigvalsh(v) for p, v in trained.items()},
                   f"{name} eigenvalues (sorted, n={len(result.true)})", result.units)
            ax.legend(fontsize=8)
            save(fig, "eigenvalues", name)
    return written
