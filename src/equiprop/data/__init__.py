"""Data layer: crystal records, task definitions, readers, merging, periodic graphs and the DataModule."""

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import BUILTIN_TASKS, TaskSpec

__all__ = ["MultiTaskDataModule", "CrystalRecord", "TaskSpec", "BUILTIN_TASKS"]
