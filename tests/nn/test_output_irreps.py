"""The encoder's last layer carries only what the heads read (``EquivariantEncoder(output_irreps="auto")``, resolved
by ``MultiTaskModel`` from ``equiprop.nn.heads.irreps_read``): scalar-only recipes get a scalars-only last layer, a
dielectric head keeps 0e and 2e, heads that need the quadratic path keep everything. Each layout passes the symmetry
battery; checkpoints written before the option (no ``output_irreps``) load with every hidden irrep and predict the
same numbers; a resumed fit or a transfer whose layouts differ gets a one-line error or the pretrained layout."""

import json

import pytest
import torch
from e3nn import o3

from equiprop import Predictor
from equiprop.data.errors import ConfigError
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder
from equiprop.testing import assert_model_symmetries
from equiprop.train.module import MultiTaskModel
from equiprop.train.transfer import check_layout

HIDDEN = dict(cutoff=4.5, multiplicities=[16, 8, 4], num_layers=2, radial_hidden=16)


def model(tasks, **encoder_args) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(EquivariantEncoder(**{**HIDDEN, **encoder_args}), tasks)


@pytest.mark.parametrize("tasks, last", [
    (["Ef", "Eg", "K_VRH"], "16x0e"),
    (["Ef", "eps_total"], "16x0e+4x2e"),
    (["Ef", "elastic_tensor"], "16x0e+8x1o+4x2e"),  # its 4e comes from the quadratic path, which reads every irrep
])
def test_the_last_layer_carries_what_the_heads_read_and_the_checkpoint_records_it(tasks, last):
    built = model(tasks)
    assert built.encoder.irreps_out == o3.Irreps(last) == built.encoder.layers[-1].irreps_out
    assert built.encoder.layers[0].irreps_out == o3.Irreps("16x0e+8x1o+4x2e")
    assert built.encoder.config["output_irreps"] == ("hidden" if last == "16x0e+8x1o+4x2e" else last)
    full = model(tasks, output_irreps="hidden")
    assert full.encoder.irreps_out == o3.Irreps("16x0e+8x1o+4x2e")
    if last != "16x0e+8x1o+4x2e":
        assert sum(p.numel() for p in built.encoder.parameters()) < sum(p.numel() for p in full.encoder.parameters())
    with pytest.raises(ConfigError, match="must carry scalars"):
        EquivariantEncoder(**HIDDEN, output_irreps="4x2e")


@pytest.mark.parametrize("tasks", [["Ef", "Eg"], ["Ef", "eps_total"]])
def test_each_layout_passes_the_symmetry_battery(tasks, structures, float64):
    trimmed = model(tasks)
    trimmed.encoder.set_avg_num_neighbors(20.0)
    assert_model_symmetries(trimmed.double(), [from_pymatgen(s, str(i)) for i, s in enumerate(structures[:3])])


def test_a_checkpoint_from_before_the_option_loads_with_every_irrep_and_predicts_the_same(tmp_path, tiny_checkpoint,
                                                                                          structures):
    encoder = lambda: EquivariantEncoder(**HIDDEN, output_irreps="hidden")  # noqa: E731  today's layout
    path = tiny_checkpoint(tmp_path / "today.ckpt", ["Ef", "Eg"], encoder=encoder)
    before = Predictor.from_checkpoint(path, warn=False, allow_unseen_elements=True).predict(structures)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["equiprop"]["encoder"]["init_args"]["output_irreps"]  # as written before the option existed
    torch.save(checkpoint, tmp_path / "older.ckpt")
    older = Predictor.from_checkpoint(tmp_path / "older.ckpt", warn=False, allow_unseen_elements=True)
    assert older.models[0].encoder.irreps_out == o3.Irreps("16x0e+8x1o+4x2e")
    assert json.dumps(older.predict(structures), default=float) == json.dumps(before, default=float)

    # resumed (or tested) through a recipe whose encoder resolves to another layout: one line naming the setting
    with pytest.raises(ConfigError, match=r"output_irreps='hidden'.*set model.encoder.init_args.output_irreps"):
        check_layout(checkpoint["equiprop"]["encoder"], model(["Ef", "Eg"]).encoder)
    # a transfer from it keeps its layout, whatever the new heads read
    started = MultiTaskModel(EquivariantEncoder(**HIDDEN), ["K_VRH"], init_from=str(tmp_path / "older.ckpt"))
    assert started.encoder.irreps_out == o3.Irreps("16x0e+8x1o+4x2e")


def test_a_trimmed_model_round_trips_through_its_checkpoint(tmp_path, tiny_checkpoint, structures):
    path = tiny_checkpoint(tmp_path / "scalars.ckpt", ["Ef", "Eg"], encoder=lambda: EquivariantEncoder(**HIDDEN))
    loaded = Predictor.from_checkpoint(path, warn=False, allow_unseen_elements=True)
    stored = torch.load(path, weights_only=False)["equiprop"]["encoder"]["init_args"]
    assert stored["output_irreps"] == "16x0e" and loaded.models[0].encoder.irreps_out == o3.Irreps("16x0e")
    assert all(set(p) >= {"Ef", "Eg"} for p in loaded.predict(structures))
