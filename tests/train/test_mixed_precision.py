"""Mixed precision (``--trainer.precision=bf16-mixed``) on the equivariant model: a real fit on the CPU, float32
results near the float32 model's, and features still equivariant to float32 rounding (data/precision.py: geometry and
e3nn's blocks leave autocast; the invariant MLPs keep it)."""

import lightning as L
import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.record import from_pymatgen
from equiprop.testing import assert_encoder_symmetries, assert_model_symmetries


def _relative_errors(mixed: dict, reference: dict) -> dict[str, float]:
    """Largest deviation of each output from float32's, over the largest float32 magnitude of that output."""
    return {name: float((value - reference[name]).abs().max() / reference[name].abs().max())
            for name, value in mixed.items()}


def test_bf16_mixed_fit_gives_float32_results_near_float32_and_equivariant_features(tiny_data, small_model,
                                                                                     tiny_entries):
    L.seed_everything(0)
    model = small_model(environment_channels=4)  # tensor heads also read neighbour-shell harmonics
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1, limit_train_batches=2,
                        limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=tiny_data)
    for name in ("train/loss", "val/loss"):
        assert torch.isfinite(trainer.callback_metrics[name]), name
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())

    model.eval()
    batch = next(iter(tiny_data.val_dataloader()))
    with torch.no_grad():
        reference = model(batch)
        with trainer.precision_plugin.forward_context():  # the autocast the fit ran under
            mixed, physical = model(batch), model.predict_physical(batch)
    assert all(v.dtype == torch.float32 for v in (*mixed.values(), *physical.values()))
    errors = _relative_errors(mixed, reference)
    # bf16 keeps 8 significant bits: the invariant MLPs' rounding moves each normalised output by < 6e-3 of its scale
    # here; autocast did run (not 0)
    assert 0 < max(errors.values()) and all(e <= 2e-2 for e in errors.values()), errors

    records = [from_pymatgen(Structure.from_dict(e["structure"]), str(i)) for i, e in enumerate(tiny_entries[:6])]
    with trainer.precision_plugin.forward_context():
        # to float32 rounding: only invariants were rounded to bf16 (a bf16 tensor product breaks this at 2e-4 of the
        # features' scale, bf16 edge vectors at 4e-3)
        assert_encoder_symmetries(model.encoder, records, rtol=1e-5)
        assert_model_symmetries(model, records, rtol=1e-3)  # the readouts' linears do round l>0 features


def test_float16_autocast_step_is_finite_and_near_float32(tiny_data, small_model):
    """float16 (``16-mixed`` on a GPU; the CPU autocasts it too): the same regions, a narrower exponent."""
    tiny_data.setup()
    L.seed_everything(0)
    model = small_model(environment_channels=4)
    model.normalizer.set_stats(tiny_data.normalization)
    model.encoder.set_avg_num_neighbors(30.0)
    batch = Batch.from_data_list([tiny_data.subsets["train"][i] for i in range(8)])
    with torch.no_grad():
        reference = model(batch)
        with torch.autocast("cpu", dtype=torch.float16):
            mixed = model(batch)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model.training_step(batch, 0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    errors = _relative_errors(mixed, reference)
    assert 0 < max(errors.values()) and all(e <= 5e-3 for e in errors.values()), errors
