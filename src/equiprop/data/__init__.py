"""Data layer: crystal records, task definitions, readers, merging, periodic graphs and the DataModule.

The names below load on first use (PEP 562), so that importing one submodule (``equiprop.data.errors`` for the
command line's error handling) does not import Lightning: ``equiprop --help`` starts in well under a second.
"""

_LAZY = {"MultiTaskDataModule": "equiprop.data.datamodule", "CrystalRecord": "equiprop.data.record",
         "TaskSpec": "equiprop.data.tasks", "BUILTIN_TASKS": "equiprop.data.tasks"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
