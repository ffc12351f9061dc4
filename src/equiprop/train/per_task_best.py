"""Each task's weights from the epoch where that task's own validation loss was lowest (per-task checkpoint selection).

A multi-task fit's ``best.ckpt`` is the epoch of the lowest *summed* validation loss: one epoch serves every task,
and a task whose loss is small (Ef) or still falling decides it for the others (equiprop-mp-v2's K_VRH got worse
this way). ``PerTaskBest`` keeps, for every task, a copy of the weights only that task uses (its head, its prior's
gains) at the epoch of that task's lowest ``val/<task>/loss`` (or, with ``monitor: mae``, its lowest validation
MAE; tasks whose predictions read each other, a Penn prior and the band gap it reads, are chosen together on their
sum), and at the end of the fit writes
``per_task_best.ckpt``: one model whose every head is its own best. That model is exact only if nothing the tasks
share trains (a frozen encoder, the shipped models' layout), so a fit whose shared weights train is refused::

    trainer:
      callbacks:
        - class_path: equiprop.train.per_task_best.PerTaskBest

``equiprop ensemble --member-checkpoint per_task_best.ckpt`` calibrates members written this way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from equiprop.data.errors import ConfigError

FILENAME = "per_task_best.ckpt"
# trained parameters that change no prediction: the learned task weights of the loss
LOSS_ONLY_PREFIXES = ("weighting.",)


def task_owned_keys(model, task: str) -> list[str]:
    """State-dict keys of ``model`` that ``task``'s own parts hold: its readout, its prior's gains and, for Penn's
    prior, the Penn offset."""
    priors = getattr(model, "priors", None)
    prefixes = [f"heads.{task}"]
    if priors is not None and task in priors.priors:
        prefixes.append(f"priors.gains.{task}")
        if priors.priors[task] == "penn":
            prefixes.append("priors.penn_offset")
    return [k for k in model.state_dict() if any(k == p or k.startswith(p + ".") for p in prefixes)]


def selection_groups(model) -> list[list[str]]:
    """Tasks whose predictions read each other's weights, selected together (on the sum of their validation
    losses): a Penn prior reads the model's band-gap prediction, so that dielectric task goes with the gap task;
    forces and stress are derivatives of their energy task's head."""
    group_of = {task: {task} for task in model.tasks}
    priors = getattr(model, "priors", None)
    if priors is not None and priors.penn_gap_task is not None:
        for task, prior in priors.priors.items():
            if prior == "penn":
                merged = group_of[task] | group_of[priors.penn_gap_task]
                for member in merged:
                    group_of[member] = merged
    for task, energy in getattr(model, "gradient_tasks", {}).items():  # forces and stress are the energy head's
        merged = group_of[task] | group_of[energy]
        for member in merged:
            group_of[member] = merged
    groups = []
    for task in model.tasks:  # in the model's task order, each group once
        if not any(task in g for g in groups):
            groups.append([t for t in model.tasks if t in group_of[task]])
    return groups


def shared_trained_names(model) -> list[str]:
    """Trainable parameters held by more than one selection group, or by none (the encoder, when it trains)."""
    owners: dict[str, set[int]] = {}
    for index, group in enumerate(selection_groups(model)):
        for task in group:
            for key in task_owned_keys(model, task):
                owners.setdefault(key, set()).add(index)
    return [name for name, p in model.named_parameters() if p.requires_grad
            and not name.startswith(LOSS_ONLY_PREFIXES) and len(owners.get(name, ())) != 1]


class PerTaskBest(L.Callback):
    """Writes ``<checkpoint dirpath>/per_task_best.ckpt`` at the end of fit: every task's weights from the epoch of
    its lowest validation loss (module docstring). Resumable: the kept weights travel in the trainer checkpoint."""

    def __init__(self, filename: str = FILENAME, monitor: Literal["loss", "mae"] = "loss"):
        """
        Args:
            filename: the checkpoint written beside best.ckpt.
            monitor: what each task's epoch is chosen on: ``loss``, its validation loss (normalised units, the
                training objective), or ``mae``, the validation MAE the model is judged by (a scalar's ``mae``, a
                tensor's ``component_mae``, in the task's units). They can disagree: a Huber loss in normalised
                units is quadratic for small errors, so a few large errors can decide it while the MAE still falls.
        """
        if not filename.endswith(".ckpt") or Path(filename).name != filename:
            raise ConfigError(f"PerTaskBest: filename must be a plain name ending in .ckpt, got {filename!r}")
        if monitor not in ("loss", "mae"):
            raise ConfigError(f"PerTaskBest: monitor must be loss or mae, got {monitor!r}")
        self.filename, self.monitor = filename, monitor
        self.best: dict[str, dict] = {}  # "task" or "task+task" -> {"epoch", "val_loss", "state": {key: tensor}}

    def _check_shared(self, pl_module) -> None:
        shared = shared_trained_names(pl_module)
        if shared:
            raise ConfigError(
                f"PerTaskBest: {len(shared)} trained parameters are shared by the tasks (e.g. {shared[0]}), so one "
                "model cannot hold each task's best epoch; use it with a frozen encoder (transfer: frozen or "
                "model.finetune: frozen_encoder), or drop the callback")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._check_shared(pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._check_shared(pl_module)  # a callback that unfreezes the encoder later (BackboneFinetuning) is caught

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for group in selection_groups(pl_module):
            values = [trainer.callback_metrics.get(self._key(pl_module, task)) for task in group]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                continue
            loss = sum(float(v) for v in values)
            name = "+".join(group)
            if name not in self.best or loss < self.best[name]["val_loss"]:
                state = pl_module.state_dict()
                self.best[name] = {"epoch": trainer.current_epoch, "val_loss": loss,
                                   "state": {k: state[k].detach().cpu().clone()
                                             for task in group for k in task_owned_keys(pl_module, task)}}

    def _key(self, pl_module, task: str) -> str:
        metric = pl_module.tasks[task].kind_def.error_metric  # MAE, per component for tensors; None: a class
        if self.monitor == "loss" or metric is None:
            return f"val/{task}/loss"
        return f"val/{task}/{metric}"

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.interrupted:
            return
        state = pl_module.state_dict()
        with torch.no_grad():
            for kept in self.best.values():
                for key, value in kept["state"].items():
                    state[key].copy_(value.to(state[key].device))
        folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback is not None \
            and trainer.checkpoint_callback.dirpath else Path(trainer.default_root_dir)
        path = folder / self.filename
        trainer.save_checkpoint(path)
        rows = [f"  {name:<24} epoch {kept['epoch']:>4}  val {self.monitor} {kept['val_loss']:.4g}"
                for name, kept in self.best.items()]
        missing = [t for t in pl_module.tasks if not any(t in name.split("+") for name in self.best)]
        if missing:
            rows.append(f"  last epoch (no finite validation loss): {', '.join(missing)}")
        rank_zero_info(f"equiprop: wrote {path}: each task's weights from its own best validation epoch\n"
                       + "\n".join(rows))

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = dict(state_dict.get("best", {}))

    def selected_epochs(self) -> dict[str, int]:
        """task -> the epoch its weights come from."""
        return {task: kept["epoch"] for name, kept in self.best.items() for task in name.split("+")}
