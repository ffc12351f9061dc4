"""Checkpoints written atomically in the run directory itself.

Lightning writes through an fsspec transaction whose temporary file lies in ``$TMPDIR``; when that is another
filesystem than the run directory, the final move is a copy, and a process killed during it leaves ``last.ckpt``
truncated. Here the bytes go to a hidden file beside the target, are flushed to disk, and ``os.replace`` swaps it in:
a reader sees the old checkpoint or the new one, never part of one.

Each file written is noted, with its sha256, in the run folder's record (``equiprop.train.run_record``), and a removal
Lightning asks for (an older top-k checkpoint) happens only for a file so noted and unchanged: equiprop deletes only
checkpoints it wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from equiprop.train.run_record import note_removed, note_written


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (temporary file in the same folder + ``os.replace``)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        note_written(target)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, **_) -> dict:
        # always weights only, whatever the caller asks: Lightning would unpickle anything from a URL by default
        return super().load_checkpoint(path, map_location, weights_only=True)

    def remove_checkpoint(self, path) -> None:
        if not _is_local_file_protocol(path):
            return super().remove_checkpoint(path)
        if note_removed(path):  # ours and unchanged; anything else stays where it is
            Path(path).unlink()


def use_atomic_checkpoints(trainer) -> None:
    """Give the trainer's strategy an AtomicCheckpointIO, unless the user configured a checkpoint plugin of their own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
