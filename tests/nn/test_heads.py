"""Readout width and depth (``model.head_hidden`` / ``model.head_layers``): the default is the historical head, the
options change the MLPs the config says, and a bad value is a one-line error."""

import pytest
import torch
from e3nn import o3

from equiprop.data.errors import ConfigError
from equiprop.data.tasks import resolve_task
from equiprop.nn import EquivariantEncoder
from equiprop.nn.heads import build_head
from equiprop.train.module import MultiTaskModel

IRREPS = o3.Irreps("16x0e+8x1o+4x2e")


def _linears(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_default_head_is_unchanged():
    head = build_head(resolve_task("Ef"), IRREPS)
    assert [tuple(m.weight.shape) for m in _linears(head)] == [(64, 16), (64, 64), (1, 64)]
    assert [k for k in head.state_dict()] == ["select.weight", "select.bias", "mlp.1.weight", "mlp.1.bias",
                                              "mlp.3.weight", "mlp.3.bias"]


@pytest.mark.parametrize("task", ["K_VRH", "elastic_tensor"])
def test_width_and_depth(task):
    head = build_head(resolve_task(task), IRREPS, hidden=32, layers=3)
    square = [m for m in _linears(head) if tuple(m.weight.shape) == (32, 32)]
    assert len(square) == 3
    shallow = build_head(resolve_task(task), IRREPS, hidden=32, layers=0)
    assert not [m for m in _linears(shallow) if tuple(m.weight.shape) == (32, 32)]


def test_bad_head_options_are_one_line_errors():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1)
    with pytest.raises(ConfigError, match="model.head_hidden"):
        MultiTaskModel(encoder, ["Ef"], head_hidden=0)
