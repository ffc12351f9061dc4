"""The encoder contract: registration, captured init arguments, checked irreps_out, rebuild from metadata."""

import pytest
import torch
from e3nn import o3

from equiprop.data.errors import ConfigError
from equiprop.nn import ENCODER_REGISTRY, EquivariantEncoder, build_encoder, describe
from equiprop.nn.base import Encoder
from equiprop.nn.registry import encoder_class


def test_builtin_encoders_are_registered_and_rebuild_from_their_metadata():
    assert {"equiprop.nn.encoders.EquivariantEncoder", "equiprop.nn.encoders.InvariantEncoder",
            "equiprop.nn.foundation.FoundationEncoder"} <= set(ENCODER_REGISTRY)
    encoder = EquivariantEncoder(cutoff=4.0, max_ell=1, multiplicities=(8, 4), num_layers=1)
    meta = describe(encoder)
    assert meta["init_args"]["multiplicities"] == [8, 4] and meta["init_args"]["num_basis"] == 8  # defaults filled
    rebuilt = build_encoder(meta)
    assert type(rebuilt) is EquivariantEncoder and rebuilt.irreps_out == encoder.irreps_out
    rebuilt.load_state_dict(encoder.state_dict())  # same architecture, same parameter shapes


def test_unknown_class_paths_are_refused():
    with pytest.raises(ConfigError, match="unknown encoder class 'os.system'"):
        encoder_class("os.system")


def test_a_new_encoder_needs_no_edits_elsewhere_and_its_contract_is_checked():
    class ScalarsOnly(Encoder):
        def __init__(self, cutoff: float = 3.0, width: int = 4):
            super().__init__()
            self.cutoff, self.irreps_out = float(cutoff), o3.Irreps(f"{width}x0e")
            self.embedding = torch.nn.Embedding(119, width)

        def forward(self, data):
            return self.embedding(data["atomic_numbers"])

    assert ENCODER_REGISTRY[describe(ScalarsOnly())["class_path"]] is ScalarsOnly
    assert ScalarsOnly(width=6).config == {"cutoff": 3.0, "width": 6}

    class Undeclared(Encoder):
        def __init__(self, cutoff: float = 3.0):
            super().__init__()
            self.cutoff = cutoff

    with pytest.raises(TypeError, match="irreps_out"):
        Undeclared()
    with pytest.raises(ConfigError, match="ScalarsOnly: cutoff must be a positive number of Å, got 0.0"):
        ScalarsOnly(cutoff=0.0)
