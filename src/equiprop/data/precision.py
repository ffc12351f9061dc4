"""Mixed precision where e3nn allows it: which computations leave autocast and run in float32.

``--trainer.precision=bf16-mixed`` (or ``16-mixed`` on a GPU) runs the training step under ``torch.autocast``:
matmuls and linears then compute in bfloat16/float16. Kept in float32, with autocast off and reduced-precision inputs
cast up at the block boundary (what MACE and nequip users expect):

- geometry (edge vectors: an einsum, i.e. a bf16 matmul under autocast, rounds a 10 Å cell shift by up to 0.03 Å);
- the equivariant blocks: e3nn's ``o3.Linear``/``TensorProduct``/``Gate`` combine float32 weights with their inputs
  in ops autocast has no rule for (``tensordot``: "both inputs should have same dtype"), and l > 0 features rounded
  to 8 bits of mantissa break the symmetry by ~1e-2;
- the heads' pooled outputs, normalisation, losses and metrics: results stay float32.

Invariant MLPs (the radial weights of each interaction, the readouts' MLPs, the invariant encoder) keep autocast.
Without autocast nothing here acts, not even a cast: float32 and float64 runs compute exactly what they did before.
"""

from __future__ import annotations

import contextlib
import functools

import torch

REDUCED = (torch.float16, torch.bfloat16)
DEVICES = ("cpu", "cuda", "mps")  # the device types Lightning's mixed precision autocasts


def autocasting() -> bool:
    return any(torch.is_autocast_enabled(device) for device in DEVICES)


@contextlib.contextmanager
def autocast_off():
    """Autocast disabled on every device type where it is on (a no-op outside autocast)."""
    with contextlib.ExitStack() as stack:
        for device in DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


def upcast(x):
    """float16/bfloat16 tensors -> float32; anything else (float32, float64, integers, non-tensors) as it is."""
    return x.float() if isinstance(x, torch.Tensor) and x.dtype in REDUCED else x


def full_precision(function):
    """Decorator: under autocast, ``function`` runs with autocast off and its reduced-precision tensor arguments cast
    to float32; otherwise it is called unchanged."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        if not autocasting():
            return function(*args, **kwargs)
        with autocast_off():
            return function(*map(upcast, args), **{k: upcast(v) for k, v in kwargs.items()})

    return wrapped
