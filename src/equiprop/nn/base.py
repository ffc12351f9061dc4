"""The encoder contract: one base class every encoder derives from.

An encoder maps a periodic graph (``equiprop.data.keys``) to per-atom features with declared ``irreps_out``.
Subclassing ``Encoder`` gives, with no further code:

- **registration** under the class path, so checkpoints, transfer learning and prediction rebuild any registered
  encoder by name (and never import an arbitrary class named in a file);
- **captured init arguments** (as matgl's ``IOMixIn.save_args``): ``encoder.config`` holds the arguments the most
  derived ``__init__`` was called with, defaults filled in, as plain JSON types, ready for a checkpoint;
- **a checked contract** after ``__init__``: ``irreps_out`` is an ``o3.Irreps``, ``cutoff`` a positive float (Å),
  the config JSON-serialisable.
"""

from __future__ import annotations

import functools
import inspect
import json

import torch
from e3nn import o3
from torch import nn

from equiprop.data.errors import ConfigError

ENCODER_REGISTRY: dict[str, type] = {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain(value):
    """Tuples -> lists (recursively) so a config survives JSON and ``torch.load(weights_only=True)``."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Encoder(nn.Module):
    """Base of all encoders. Subclasses set ``self.cutoff`` (Å) and ``self.irreps_out`` in ``__init__`` and implement
    ``forward(data) -> (num_nodes, irreps_out.dim)``."""

    cutoff: float
    irreps_out: o3.Irreps
    config: dict
    runtime_args: tuple[str, ...] = ()  # init arguments that change how it runs, not what it computes
    # arguments added after checkpoints were written: the value those checkpoints were built with (``stored_args``)
    legacy_args: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ENCODER_REGISTRY[class_path(cls)] = cls
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def captured_init(self, *args, **kw):
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            init(self, *args, **kw)
            if type(self) is cls:  # only the most derived class records its arguments and checks the contract
                self.config = {k: _plain(v) for k, v in bound.arguments.items() if k != "self"}
                self.check_contract()

        cls.__init__ = captured_init

    def check_contract(self) -> None:
        name = type(self).__name__
        if not isinstance(getattr(self, "irreps_out", None), o3.Irreps):
            raise TypeError(f"{name} must set self.irreps_out to an e3nn o3.Irreps in __init__")
        if not isinstance(getattr(self, "cutoff", None), float) or not self.cutoff > 0:
            raise ConfigError(f"{name}: cutoff must be a positive number of Å, got {getattr(self, 'cutoff', None)!r}")
        try:
            json.dumps(self.config)
        except TypeError as err:
            raise TypeError(f"{name}: init arguments must be plain values to be stored in checkpoints ({err})")

    def layer_modules(self) -> list[nn.Module]:
        """The interaction layers in order: what ``finetune: last_layers`` trains the last k of."""
        return list(getattr(self, "layers", []))

    def layer_stacks(self) -> list[list[nn.Module]]:
        """The layers as stacks, each in order (layer-wise learning rates count depth within a stack)."""
        return [self.layer_modules()]

    def set_avg_num_neighbors(self, value: float) -> None:
        """Called once with the training data's mean neighbour count; encoders that normalise by it override."""

    def fit_output(self, read: set, layout: str | None = None) -> None:
        """Called once by the model with the irreps its heads read (``heads.irreps_read``), or the ``layout`` of a
        pretrained encoder it starts from; encoders whose last layer can carry fewer irreps override."""

    def frozen(self) -> bool:
        """True when no parameter of this encoder trains (its features may then be cached)."""
        return not any(p.requires_grad for p in self.parameters())


def stored_args(cls: type, init_args: dict) -> dict:
    """A checkpoint's init arguments with the values of arguments added since (``legacy_args``) filled in."""
    return {**cls.legacy_args, **init_args}


def describe(encoder: Encoder) -> dict:
    """Checkpoint metadata of an encoder (inverse of ``build_encoder``)."""
    return {"class_path": class_path(type(encoder)), "init_args": dict(encoder.config)}


def assert_encoder_contract(encoder: Encoder, data) -> torch.Tensor:
    """Shared test battery entry: the forward output has one row per atom and ``irreps_out.dim`` columns."""
    out = encoder(data)
    assert out.shape == (data.num_nodes, encoder.irreps_out.dim), (out.shape, encoder.irreps_out)
    return out
