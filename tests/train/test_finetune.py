"""Fine-tuning an encoder: layer-wise learning-rate decay per stack of layers, and heads first then the encoder
(Lightning's BackboneFinetuning) in a real fit from a recipe."""

import lightning as L
import pytest
import torch

from equiprop.data.errors import ConfigError
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel


def encoder_groups(model) -> list[tuple[float, set[int]]]:
    encoder = {id(p) for p in model.encoder.parameters()}
    return [(g["lr"], {id(p) for p in g["params"]}) for g in model.configure_optimizers().param_groups
            if {id(p) for p in g["params"]} <= encoder]


def test_each_layer_learns_at_decay_times_the_next_ones_rate():
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=3)
    model = MultiTaskModel(encoder, ["Ef"], lr=1e-3, encoder_lr_factor=0.1, layer_lr_decay=0.5, scheduler="none")
    groups = encoder_groups(model)
    layers = encoder.layer_modules()
    for depth, layer in enumerate(reversed(layers)):
        lr, ids = groups[depth]
        assert lr == pytest.approx(1e-4 * 0.5 ** depth) and ids == {id(p) for p in layer.parameters()}
    lr, below = groups[-1]  # embeddings and everything else below the layers
    assert lr == pytest.approx(1e-4 * 0.5 ** 3) and below and not below & {id(p) for l in layers for p in l.parameters()}
    assert set().union(*(ids for _, ids in groups)) == {id(p) for p in encoder.parameters()}  # each once
    flat = encoder_groups(MultiTaskModel(encoder, ["Ef"], lr=1e-3, encoder_lr_factor=0.1, scheduler="none"))
    assert [lr for lr, _ in flat] == [pytest.approx(1e-4)]
    with pytest.raises(ConfigError, match="layer_lr_decay must be in"):
        MultiTaskModel(encoder, ["Ef"], layer_lr_decay=0.0)


class EncoderSnapshots(L.Callback):
    def __init__(self):
        self.weights = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append([p.detach().clone() for p in pl_module.encoder.parameters()])


def test_heads_train_first_then_the_encoder_joins(cli_recipe, tmp_path, monkeypatch):
    from equiprop.train.run import build_run

    monkeypatch.chdir(tmp_path)
    cli_recipe["trainer"].update(max_epochs=3, callbacks=[{
        "class_path": "lightning.pytorch.callbacks.BackboneFinetuning",
        "init_args": {"unfreeze_backbone_at_epoch": 2, "backbone_initial_ratio_lr": 0.1}}])
    cli_recipe["model"].update(layer_lr_decay=0.5, scheduler="none")
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    trainer, model, datamodule = build_run(cli_recipe)
    start = [p.detach().clone() for p in model.encoder.parameters()]
    snapshots = EncoderSnapshots()
    trainer.callbacks.append(snapshots)
    trainer.fit(model, datamodule=datamodule)
    first, second, third = snapshots.weights
    assert all(torch.equal(a, b) for a, b in zip(start, first)) and all(torch.equal(a, b) for a, b in zip(first,
                                                                                                          second))
    assert any(not torch.equal(a, b) for a, b in zip(second, third))  # epoch 2: the encoder trains


@pytest.mark.integration  # two pretrained potentials
def test_each_backbone_is_its_own_stack():
    pytest.importorskip("sevenn")
    from equiprop.nn import FoundationEncoder

    encoder = FoundationEncoder(model=["7net-0", "7net-mf-0"], transfer="finetune", cache_features=False)
    model = MultiTaskModel(encoder, ["Ef"], lr=1e-3, layer_lr_decay=0.8, scheduler="none")
    lrs = sorted({round(lr, 12) for lr, _ in encoder_groups(model)}, reverse=True)
    assert lrs == [round(1e-3 * 0.8 ** d, 12) for d in range(6)]  # depths 0..4 in each backbone, then below
    assert [len(stack) for stack in encoder.layer_stacks()] == [5, 5]
