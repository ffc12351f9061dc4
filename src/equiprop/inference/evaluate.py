"""One evaluator of a predictor on a data module's split: the labelled structures of each task, their true values
and the predictions (mean and std), in physical units. Calibration, the scoreboard and MatBench folds read it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from equiprop.data import keys


@dataclass
class SplitPredictions:
    """One task on one split: the labelled structures (atoms, for a per-atom task) in loader order."""
    ids: list[str]
    true: np.ndarray  # (n, *shape) physical units, in the form asked for
    mean: np.ndarray  # (n, *shape)
    std: np.ndarray | None  # (n, *shape); None with a single draw


def physical_labels(task, model_space: torch.Tensor) -> np.ndarray:
    """Labels are stored in model space (log10 for log-scalars, maybe a log tensor): back to physical units."""
    return np.asarray(task.from_model(model_space.double().numpy()), dtype=np.float64)


@torch.no_grad()
def evaluate_split(predictor, datamodule, split: str, form: str = "user") -> dict[str, SplitPredictions]:
    """{task: SplitPredictions} over the labelled structures of ``split`` ("train", "val" or "test") of a set-up
    data module, for the predictor's output tasks. ``form``: "user" (Voigt where a task has one) or "cartesian".
    Binary tasks are left out (a probability has no error in units)."""
    labelled = getattr(datamodule, "tasks", predictor.tasks)  # the data's tasks: a model's others have no labels
    tasks = {n: t for n, t in predictor.tasks.items()
             if n in predictor.output_tasks and n in labelled and t.kind_def.has_error_in_units}
    parts: dict[str, tuple[list, list, list, list]] = {name: ([], [], [], []) for name in tasks}
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    for batch in loader:
        predicted = predictor.predict_batch(batch, form)
        for name, task in tasks.items():
            mask = batch[keys.mask_key(name)].cpu().numpy().astype(bool)
            if not mask.any():
                continue
            ids, true, mean, std = parts[name]
            rows = list(batch[keys.STRUCTURE_ID])  # per atom for a per-atom task: its structure's id per atom
            if task.level == "atom":
                rows = np.repeat(rows, np.diff(batch.ptr.cpu().numpy())).tolist()
            ids += [i for i, m in zip(rows, mask.tolist()) if m]
            labels = physical_labels(task, batch[keys.label_key(name)][torch.as_tensor(mask)].cpu())
            true.append(task.to_user(labels) if form == "user" else labels)
            value, spread = predicted[name]
            mean.append(value[mask])
            if spread is not None:
                std.append(spread[mask])
    return {name: SplitPredictions(ids, np.concatenate(true), np.concatenate(mean),
                                   np.concatenate(std) if std else None)
            for name, (ids, true, mean, std) in parts.items() if ids}
