"""What the accuracy scoreboard reads from a finished run: its model, its exact data split, and its test predictions
and training labels in physical units (``equiprop.workflows.scoreboard`` does the maths).

The split is rebuilt from the resolved config that LightningCLI saved beside the checkpoint (``data:`` section: the
same sources, tasks, graph parameters and seeded split, hence the same structures in each part), then verified: the
normalisation statistics recomputed on the rebuilt training split must equal those stored in the checkpoint.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from equiprop.inference.evaluate import evaluate_split, physical_labels
from equiprop.data.errors import ConfigError
from equiprop.workflows.scoreboard import INVARIANT, MODEL, TaskResults


@dataclass
class Run:
    """A trained model with the data module it was trained on (set up: graphs loaded, split made)."""

    checkpoint: Path
    config: Path  # the config the data module was built from
    predictor: object  # equiprop.inference.Predictor of the checkpoint
    datamodule: object  # MultiTaskDataModule
    seed: int | None  # seed_everything of the run
    split: str  # the data.split section of the config, as JSON
    split_check: str  # how the split was verified


def saved_config(checkpoint: Path) -> Path | None:
    """The config LightningCLI saved for the run that wrote ``checkpoint``: the newest one not newer than it (a
    rerun under the same run name adds tensorboard/version_<n+1>/config.yaml and best-v1.ckpt beside the old ones)."""
    found = list(checkpoint.parent.glob("tensorboard/version_*/config.yaml")) + \
        [p for p in [checkpoint.parent / "config.yaml"] if p.exists()]
    written = checkpoint.stat().st_mtime
    before = [p for p in found if p.stat().st_mtime <= written]
    return max(before or found, key=lambda p: p.stat().st_mtime) if found else None


def load_run(checkpoint: str | Path, recipe: str | Path) -> Run:
    """The checkpoint's model and data module; the recipe's data section is used only if no config was saved."""
    from equiprop.inference import Predictor
    from equiprop.train.run import build_datamodule

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    config = saved_config(checkpoint) or Path(recipe)
    datamodule = build_datamodule(str(config), [])
    datamodule.setup("test")
    predictor = Predictor.from_checkpoint(checkpoint)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved = yaml.safe_load(Path(config).read_text()) or {}
    data = saved.get("data") or {}
    split = (data.get("init_args", data) if isinstance(data, dict) else {}).get("split")
    return Run(checkpoint, config, predictor, datamodule, saved.get("seed_everything"), json.dumps(split),
               check_training_split(stored, datamodule))


def check_training_split(stored: dict, datamodule) -> str:
    """Compare the checkpoint's normalisation statistics with those of the rebuilt training split; raise if they
    differ (another split, other data), say so if the checkpoint holds none to compare with. Statistics stored in
    another layout (a checkpoint from before a change of the normalisation code) are compared by label count only."""
    state = stored.get(type(datamodule).__qualname__) or {}
    saved = state.get("normalization")
    if not saved:
        return "not verified (the checkpoint holds no data-module state)"
    rebuilt = {name: stats.to_dict() for name, stats in datamodule.normalization.items()}
    counts_only = []
    for name, stats in saved.items():
        other = rebuilt.get(name)
        same = other is not None and other["count"] == stats["count"]
        for key in ("shift", "scale"):
            ours, theirs = (np.asarray(x[key], dtype=float) for x in (other or stats, stats))
            if ours.shape != theirs.shape:
                counts_only.append(name)
            elif same:
                same = np.allclose(ours, theirs, rtol=1e-6, atol=1e-9)
        if not same:
            raise ConfigError(f"the rebuilt training split is not the one the checkpoint was trained on (or the "
                              f"normalisation code changed since): statistics of {name} differ (training labels: "
                              f"{stats['count']} in the checkpoint, {other['count'] if other else 'none'} rebuilt)")
    if counts_only:
        return (f"verified: training-split statistics of {len(saved)} tasks equal the checkpoint's (label counts "
                f"only for {sorted(set(counts_only))}: stored in another layout)")
    return f"verified: training-split statistics of {len(saved)} tasks equal the checkpoint's"


def split_ids(datamodule) -> dict[str, list[str]]:
    return {part: subset.structure_ids() for part, subset in datamodule.subsets.items()}


def check_same_split(a, b) -> None:
    """Two data modules hold the same structures in each part (both models are scored on the same test set)."""
    left, right = split_ids(a), split_ids(b)
    for part in ("train", "val", "test"):
        if set(left.get(part, [])) != set(right.get(part, [])):
            raise ConfigError(f"the model and the baseline were trained on different splits: their {part} parts "
                              f"differ ({len(left.get(part, []))} vs {len(right.get(part, []))} structures)")


def training_labels(datamodule, name: str) -> np.ndarray:
    """The labelled training values of one task, physical units, (n_train, *shape)."""
    task = datamodule.tasks[name]
    return physical_labels(task, datamodule.subsets["train"].labels({name: task})[name].values)


def predictions_on_test_split(run: Run) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """{task: (structure ids, true, predicted)} in physical units (Cartesian tensors) over the labelled test
    structures (``evaluate_split``; binary tasks left out: probabilities, not errors in units)."""
    return {name: (p.ids, p.true, p.mean)
            for name, p in evaluate_split(run.predictor, run.datamodule, "test", form="cartesian").items()}


def task_results(model_run: Run, baseline_run: Run | None) -> dict[str, TaskResults]:
    """Everything the scoreboard needs per task, the baseline's predictions aligned to the model's structures."""
    model_side = predictions_on_test_split(model_run)
    baseline_side = predictions_on_test_split(baseline_run) if baseline_run is not None else {}
    results = {}
    for name, (ids, true, pred) in model_side.items():
        task = model_run.datamodule.tasks[name]
        predictions = {MODEL: pred}
        if name in baseline_side:
            base_ids, _, base_pred = baseline_side[name]
            position = {i: n for n, i in enumerate(base_ids)}
            if set(position) != set(ids):
                raise ConfigError(f"{name}: the baseline's labelled test structures differ from the model's")
            predictions[INVARIANT] = base_pred[[position[i] for i in ids]]
        results[name] = TaskResults(name, task.kind, task.units, task.formula, ids, true,
                                    training_labels(model_run.datamodule, name), predictions)
    return results


def git_state(repo: Path) -> dict[str, str]:
    """Commit and whether the working tree differs from it (results of a dirty tree are not reproducible from the
    commit alone)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": "unknown" if status == "unknown" else str(bool(status))}
