import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from equiprop import Predictor
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

pytestmark = pytest.mark.integration  # each test trains a model to fine-tune from (~10-20 s)

ENCODER = dict(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 4], num_layers=2)
PRETRAIN_TASKS = ["Ef", "Eg", "G_VRH", "eps_total"]  # together these cover every tiny structure


def _data(tmp_path, tasks):
    return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=tasks, cutoff=4.5, batch_size=8,
                               split=RandomSplit(0.2, 0.0, seed=0), cache_dir=str(tmp_path / "cache"))


def _fit(model, data, tmp_path, name):
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[ModelCheckpoint(dirpath=tmp_path / name, save_last=True)])
    trainer.fit(model, datamodule=data)
    return tmp_path / name / "last.ckpt"


@pytest.fixture
def pretrained(tmp_path):
    L.seed_everything(0)
    model = MultiTaskModel(EquivariantEncoder(**ENCODER), PRETRAIN_TASKS)
    return _fit(model, _data(tmp_path, PRETRAIN_TASKS), tmp_path, "pretrain"), model


def test_frozen_encoder_stays_bit_identical_and_new_heads_train(pretrained, tmp_path):
    path, source = pretrained
    tuned = MultiTaskModel(EquivariantEncoder(**ENCODER), ["Ef", "K_VRH"], init_from=str(path),
                           finetune="frozen_encoder")
    assert tuned.reused_tasks == ["Ef"]
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(before[f"encoder.{k}"], v)
    for k, v in source.heads["Ef"].state_dict().items():
        assert torch.equal(before[f"heads.Ef.{k}"], v)
    # the pretraining structures (and split) plus K_VRH labels: a frozen encoder needs the elements it was trained on
    tuned_checkpoint = _fit(tuned, _data(tmp_path, PRETRAIN_TASKS + ["K_VRH"]), tmp_path, "tuned")
    after = tuned.state_dict()
    encoder_keys = [k for k in after if k.startswith("encoder.")]
    assert all(torch.equal(after[k], before[k]) for k in encoder_keys)
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("heads.K_VRH."))
    # the reused head kept the pretrained normalisation; the new task got the new data's
    assert torch.equal(after["normalizer.shift_Ef"], before["normalizer.shift_Ef"])
    assert float(after["normalizer.shift_K_VRH"]) > 1.0  # log10 GPa of real moduli
    # the reused head learned from both datasets' labels, and the checkpoint says so
    pretrained_counts = torch.load(path, weights_only=True)["equiprop"]["train_label_counts"]
    tuned_counts = torch.load(tuned_checkpoint, weights_only=True)["equiprop"]["train_label_counts"]
    own = tuned.trainer.datamodule.report["label_counts"]["train"]
    assert tuned_counts == {"Ef": own["Ef"] + pretrained_counts["Ef"], "K_VRH": own["K_VRH"]}
    # the fine-tuned checkpoint stands alone: prediction does not need the pretrained file any more
    path.unlink()
    predictor = Predictor.from_checkpoint(tuned_checkpoint)
    assert torch.equal(predictor.models[0].state_dict()["encoder.species.embedding.weight"],
                       after["encoder.species.embedding.weight"])


def test_last_layers_only(pretrained, tmp_path):
    path, _ = pretrained
    tuned = MultiTaskModel(EquivariantEncoder(**ENCODER), ["K_VRH"], init_from=str(path), finetune="last_layers",
                           trainable_layers=1)
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    _fit(tuned, _data(tmp_path, ["K_VRH"]), tmp_path, "tuned")
    after = tuned.state_dict()
    changed = {k.split(".")[2] for k in after if k.startswith("encoder.layers.") and not torch.equal(after[k], before[k])}
    assert changed == {"1"}
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("encoder.species."))


def test_mismatches_are_clear_errors(pretrained, tmp_path):
    path, _ = pretrained
    with pytest.raises(ConfigError, match="cutoff: pretrained 4.5 vs 5.0"):
        MultiTaskModel(EquivariantEncoder(**{**ENCODER, "cutoff": 5.0}), ["Ef"], init_from=str(path))
    with pytest.raises(ConfigError, match=r"multiplicities: pretrained \[8, 4, 4\]"):
        MultiTaskModel(EquivariantEncoder(**{**ENCODER, "multiplicities": [16, 4, 4]}), ["Ef"], init_from=str(path))
    with pytest.raises(ConfigError, match="not found"):
        MultiTaskModel(EquivariantEncoder(**ENCODER), ["Ef"], init_from=str(tmp_path / "nope.ckpt"))
    tuned = MultiTaskModel(EquivariantEncoder(**ENCODER), ["Ef"], init_from=str(path), finetune="frozen_encoder")
    tuned.species_seen[8] = False  # pretend the pretraining data had no oxygen
    with pytest.raises(ConfigError, match=r"never saw: \['O'\].*finetune='frozen_encoder'"):
        _fit(tuned, _data(tmp_path, PRETRAIN_TASKS), tmp_path, "tuned")
    # finetune: all trains the new element's embedding, and the model then counts it as seen
    tuned = MultiTaskModel(EquivariantEncoder(**ENCODER), ["Ef"], init_from=str(path))
    tuned.species_seen[8] = False
    _fit(tuned, _data(tmp_path, PRETRAIN_TASKS), tmp_path, "tuned_all")
    assert bool(tuned.species_seen[8])


def test_init_heads_starts_a_new_task_from_a_pretrained_readout(pretrained, tmp_path):
    path, source = pretrained
    tuned = MultiTaskModel(EquivariantEncoder(**ENCODER), ["Ef", "K_VRH"], init_from=str(path),
                           init_heads={"K_VRH": "G_VRH"})
    assert tuned.reused_tasks == ["Ef"]  # K_VRH is not reused (another task); only its readout's weights start there
    for k, v in source.heads["G_VRH"].state_dict().items():
        assert torch.equal(tuned.heads["K_VRH"].state_dict()[k], v)
    checkpoint = _fit(tuned, _data(tmp_path, PRETRAIN_TASKS + ["K_VRH"]), tmp_path, "tuned_heads")
    predictor = Predictor.from_checkpoint(checkpoint)  # a checkpoint of such a fit predicts without init_* replayed
    assert "K_VRH" in predictor.output_tasks
    with pytest.raises(ConfigError, match="does not fit 'eps_electronic'"):
        MultiTaskModel(EquivariantEncoder(**ENCODER), ["eps_electronic"], init_from=str(path),
                       init_heads={"eps_electronic": "G_VRH"})
    with pytest.raises(ConfigError, match="has no task 'K_VRH'"):
        MultiTaskModel(EquivariantEncoder(**ENCODER), ["G_Voigt"], init_from=str(path), init_heads={"G_Voigt": "K_VRH"})
    with pytest.raises(ConfigError, match="reuses its own head already"):
        MultiTaskModel(EquivariantEncoder(**ENCODER), ["Eg"], init_from=str(path), init_heads={"Eg": "Ef"})
    with pytest.raises(ConfigError, match="init_heads needs model.init_from"):
        MultiTaskModel(EquivariantEncoder(**ENCODER), ["K_VRH"], init_heads={"K_VRH": "G_VRH"})
