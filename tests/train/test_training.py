
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop import Predictor
from equiprop.data import keys


def _trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(default_root_dir=str(tmp_path), **{**defaults, **kwargs})


def test_overfitting_a_handful_of_structures(tiny_data, small_model):
    tiny_data.setup()
    L.seed_everything(0)
    model = small_model(weighting="fixed", lr=5e-3, scheduler="none")
    model.normalizer.set_stats(tiny_data.normalization)
    model.encoder.set_avg_num_neighbors(30.0)
    batch = Batch.from_data_list([tiny_data.subsets["train"][i] for i in range(6)])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(120):
        optimizer.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


class StopAfterFirstEpoch(L.Callback):
    """Simulates a run killed after its first epoch (of two planned: the lr schedule spans both)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_fit_reload_predict_and_resume(tiny_data, small_model, tmp_path, tiny_entries):
    L.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "run", filename="best", monitor="val/loss", save_last=True)
    model = small_model()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[checkpoint, StopAfterFirstEpoch()])
    trainer.fit(model, datamodule=tiny_data)
    last = tmp_path / "run" / "last.ckpt"
    assert (tmp_path / "run" / "best.ckpt").exists() and last.exists()

    # the checkpoint holds what prediction needs, and loads without unpickling objects
    raw = torch.load(last, weights_only=True)
    assert raw["equiprop"]["tasks"]["Ef"]["units"] == "eV/atom"
    assert "normalizer.shift_Ef" in raw["state_dict"]

    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries[:5]]
    predictor = Predictor.from_checkpoint(last)
    predicted = predictor.predict(structures)
    model.eval()
    expected = Predictor(model).predict(structures)
    for a, b in zip(predicted, expected):
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert predicted[0]["elastic_tensor"].shape == (6, 6) and predicted[0]["eps_total"].shape == (3, 3)
    assert predicted[0]["K_Voigt"] > 0

    # resume: one more epoch from last.ckpt equals an uninterrupted two-epoch run
    L.seed_everything(0)
    resumed_model = small_model()
    resumed = _trainer(tmp_path, max_epochs=2, callbacks=[
        ModelCheckpoint(dirpath=tmp_path / "r", filename="best", monitor="val/loss", save_last=True)])
    resumed.fit(resumed_model, datamodule=tiny_data, ckpt_path=str(last))
    L.seed_everything(0)
    straight_model = small_model()
    straight = _trainer(tmp_path, max_epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "s", save_last=True)])
    straight.fit(straight_model, datamodule=tiny_data)
    assert resumed.global_step == straight.global_step == 2 * trainer.global_step
    for (name, a), (_, b) in zip(resumed_model.state_dict().items(), straight_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_validate_and_test_report_metrics_in_physical_units(tiny_data, small_model, tmp_path):
    model = small_model()
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, datamodule=tiny_data)
    metrics = trainer.test(model, datamodule=tiny_data, verbose=False)[0]
    assert "test/Ef/mae" in metrics and "test/eps_total/frobenius_error" in metrics
    assert "test/eps_total/isotropic_mae" in metrics
    # the physical MAE of Ef is what a direct computation on the test split gives
    test = tiny_data.subsets["test"]
    batch = Batch.from_data_list(list(test))
    model.eval()
    with torch.no_grad():
        pred = model.predict_physical(batch)["Ef"]
    mask = batch[keys.mask_key("Ef")]
    mae = float((pred[mask] - batch[keys.label_key("Ef")][mask]).abs().mean())
    assert abs(metrics["test/Ef/mae"] - mae) < 1e-5
