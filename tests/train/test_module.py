"""The LightningModule (``equiprop.train.module``) in real fits on the tiny set: it overfits a handful of structures,
reloads, resumes, and reports validation and test metrics in physical units (``equiprop.train.metrics``); pooling of
extensive and intensive tasks; its learning-rate schedule."""


import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop import Predictor
from equiprop.data import keys
from equiprop.data.graph import record_to_graph
from equiprop.data.normalization import TaskStats
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel


def _trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    log_every_n_steps=1)  # tiny data: fewer batches than the default interval of 50
    return L.Trainer(default_root_dir=str(tmp_path), **{**defaults, **kwargs})


@pytest.mark.integration  # 120 optimiser steps
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


@pytest.mark.integration  # three real multi-epoch fits
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into a new folder on purpose
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

    # structures of the training split: the model refuses elements it never trained on
    train_ids = {g[keys.STRUCTURE_ID] for g in tiny_data.subsets["train"]}
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries if e["material_id"] in train_ids][:5]
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


@pytest.mark.integration  # a real fit, then validate and test (~10-20 s)
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


POOLING_TASKS = ["Ef", {"name": "E_cell", "key": "E_cell", "units": "eV", "pooling": "sum"},
                 {"name": "eps_sum", "key": "eps_sum", "units": "dimensionless", "kind": "tensor", "formula": "ij=ji",
                  "pooling": "sum"}, "eps_electronic"]


def _pooling_model(stats: dict | None = None):
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 2], num_layers=1, radial_hidden=16)
    encoder.set_avg_num_neighbors(20.0)
    model = MultiTaskModel(encoder, POOLING_TASKS).double().eval()
    if stats:
        model.normalizer.set_stats({name: TaskStats(*value, count=10) for name, value in stats.items()})
    return model


def _cells_and_supercells(tiny_entries):
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries[:3]]
    cells = [record_to_graph(from_pymatgen(s, str(i)), {}, 4.5) for i, s in enumerate(structures)]
    doubled = [record_to_graph(from_pymatgen(s.make_supercell([1, 2, 1], in_place=False), str(i)), {}, 4.5)
               for i, s in enumerate(structures)]
    return Batch.from_data_list(cells), Batch.from_data_list(doubled)


def test_sum_pooling_doubles_on_a_supercell_and_mean_pooling_does_not(tiny_entries):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = _pooling_model()
        cells, doubled = _cells_and_supercells(tiny_entries)
        with torch.no_grad():
            one, two = model(cells), model(doubled)  # the readouts' normalised outputs
    finally:
        torch.set_default_dtype(previous)
    assert float(one["E_cell"].abs().min()) > 1e-6
    torch.testing.assert_close(two["E_cell"], 2.0 * one["E_cell"], rtol=1e-9, atol=1e-12)  # extensive
    torch.testing.assert_close(two["eps_sum"], 2.0 * one["eps_sum"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(two["Ef"], one["Ef"], rtol=1e-9, atol=1e-12)  # intensive
    torch.testing.assert_close(two["eps_electronic"], one["eps_electronic"], rtol=1e-9, atol=1e-12)


def test_sum_pooled_physical_prediction_doubles_on_a_supercell_with_real_normalisation(tiny_entries):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        # statistics as a training split gives them; per atom for the sum-pooled E_cell (-4 eV/atom, std 1.5)
        model = _pooling_model({"E_cell": (-4.0, 1.5), "Ef": (-1.5, 0.9)})
        cells, doubled = _cells_and_supercells(tiny_entries)
        with torch.no_grad():
            one, two = model.predict_physical(cells), model.predict_physical(doubled)
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(two["Ef"], one["Ef"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(two["E_cell"], 2.0 * one["E_cell"], rtol=1e-9, atol=1e-9)


def test_plateau_schedule_monitors_val_loss_and_halves_the_lr_after_patience(tiny_data, small_model, tmp_path):
    model = small_model(scheduler="plateau", plateau_patience=2, lr=1e-3)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                       enable_checkpointing=False)
    trainer.fit(model, datamodule=tiny_data)
    (config,) = trainer.lr_scheduler_configs
    scheduler = config.scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config.monitor == "val/loss" and config.interval == "epoch"
    assert scheduler.mode == "min" and scheduler.factor == 0.5 and scheduler.patience == 2
    # the Trainer stepped it with the epoch's val/loss
    assert scheduler.best == pytest.approx(float(trainer.callback_metrics["val/loss"]))

    # the scenario itself, on the objects configure_optimizers returns
    optimizer = trainer.optimizers[0]
    lrs = lambda: [group["lr"] for group in optimizer.param_groups]  # noqa: E731
    start = lrs()
    assert start == [pytest.approx(1e-3)] * len(start)
    scheduler.step(scheduler.best * 0.5)  # an improvement
    for _ in range(2):  # patience epochs without improvement: lr kept
        scheduler.step(scheduler.best * 1.1)
        assert lrs() == start
    scheduler.step(scheduler.best * 1.1)  # one more: halved
    assert lrs() == [pytest.approx(lr / 2) for lr in start]


def test_sum_pooled_statistics_are_per_atom():
    from equiprop.data.normalization import compute_stats
    from equiprop.data.tasks import resolve_task

    task = resolve_task({"name": "E_cell", "key": "energy", "units": "eV", "pooling": "sum"})
    stats = compute_stats(torch.tensor([-8.0, -12.0, -40.0]), task, num_atoms=torch.tensor([2, 3, 10]))
    assert stats.shift == pytest.approx(-4.0) and stats.scale == 1.0  # -4 eV/atom each: no spread, unit scale
    stats = compute_stats(torch.tensor([-8.0, -15.0]), task, num_atoms=torch.tensor([2, 3]))
    assert stats.shift == pytest.approx(-4.5) and stats.scale == pytest.approx(0.5)  # of -4 and -5 eV/atom
