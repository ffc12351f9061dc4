"""Encoders by class path, for configs and checkpoints: the built-in ones (imported here, so that they register) and
any ``Encoder`` subclass a user defines (``Encoder.__init_subclass__`` registers it). Only registered classes are ever
built from a name: a checkpoint or recipe cannot make equiprop import an arbitrary class."""

from __future__ import annotations

import equiprop.nn.encoders  # noqa: F401  registers InvariantEncoder, EquivariantEncoder
import equiprop.nn.foundation  # noqa: F401  registers FoundationEncoder
from equiprop.data.errors import ConfigError
from equiprop.nn.base import ENCODER_REGISTRY, Encoder, stored_args


def encoder_class(path: str) -> type:
    """A registered encoder class by class path; unknown paths are refused (checkpoints name classes as strings)."""
    if path not in ENCODER_REGISTRY:
        raise ConfigError(f"unknown encoder class {path!r}; registered: {sorted(ENCODER_REGISTRY)}")
    return ENCODER_REGISTRY[path]


def build_encoder(meta: dict) -> Encoder:
    """Rebuild an encoder from checkpoint metadata ``{"class_path": ..., "init_args": {...}}``."""
    cls = encoder_class(meta["class_path"])
    return cls(**stored_args(cls, meta["init_args"]))
