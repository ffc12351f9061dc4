"""Neural network blocks, encoders and property readouts (e3nn + PyG)."""

import e3nn

# torch.jit.script of e3nn's fx-generated code is deprecated on torch 2.13 and warns on every call; eager is as fast.
e3nn.set_optimization_defaults(jit_script_fx=False)

from equiprop.nn.base import ENCODER_REGISTRY, Encoder, describe  # noqa: E402
from equiprop.nn.encoders import EquivariantEncoder, InvariantEncoder  # noqa: E402
from equiprop.nn.foundation import FoundationEncoder  # noqa: E402
from equiprop.nn.heads import build_head  # noqa: E402
from equiprop.nn.registry import build_encoder  # noqa: E402

__all__ = ["ENCODER_REGISTRY", "Encoder", "EquivariantEncoder", "FoundationEncoder", "InvariantEncoder",
           "build_encoder", "build_head", "describe"]
