"""The denoising readout (``equiprop.nn.denoise``) on real crystals of the bundled tiny set: its output rotates with
the structure (proper and improper rotations), its loss is zero for the true displacements and blind to a rigid
translation, and a few Adam steps teach encoder and readout to denoise draws they never saw; in a fit
(``model.denoise_weight``), its loss is added on noised training batches only."""

import inspect

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.augment import Augmentation, augment_batch, batch_generator
from equiprop.data.errors import ConfigError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder, InvariantEncoder
from equiprop.nn.denoise import DenoisingReadoutBlock, denoising_loss
from equiprop.testing import transformed

CUTOFF = 4.5


@pytest.fixture(scope="module")
def records(tiny_entries):
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    picked = [s for s in structures if len(s.composition) >= 2 and 4 <= len(s) <= 8][:2]
    return [from_pymatgen(s, s.composition.reduced_formula) for s in picked]


def batch_of(records) -> Batch:
    return Batch.from_data_list([record_to_graph(r, {}, CUTOFF) for r in records])


def noised(records, noise: float, step: int) -> Batch:
    return augment_batch(batch_of(records), {}, Augmentation(noise=noise),
                         batch_generator(torch.device("cpu"), 0, 0, step))[0]


def test_the_displacement_rotates_with_the_structure(records, float64):
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=CUTOFF, max_ell=2, multiplicities=[8, 4, 2], num_layers=2).eval()
    head = DenoisingReadoutBlock(encoder.irreps_out).eval()
    assert str(head.irreps_out) == "1x1o"
    with torch.no_grad():
        reference = head(encoder(batch_of(records)))
    assert reference.shape == (sum(r.num_atoms for r in records), 3) and reference.abs().max() > 1e-6
    rng = np.random.default_rng(0)
    for sign in (1.0, -1.0):  # a rotation, then a rotation times the inversion: a polar vector follows both
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        q = sign * (q if np.linalg.det(q) > 0 else -q)
        with torch.no_grad():
            rotated = head(encoder(batch_of([transformed(rec, q) for rec in records])))
        assert torch.allclose(rotated, reference @ torch.as_tensor(q).T, atol=1e-10)


def test_the_loss_is_zero_for_the_true_displacements_and_blind_to_a_rigid_shift(records, float64):
    batch = noised(records, 0.05, step=3)
    noise = batch[keys.NOISE]
    assert float(noise.pow(2).mean()) == pytest.approx(0.05**2, rel=0.5)
    assert float(denoising_loss(noise, batch)) < 1e-30
    shifted = noise + torch.tensor([0.3, -0.1, 0.2])  # the same rigid translation of every atom: invisible
    assert float(denoising_loss(shifted, batch)) < 1e-30
    assert float(denoising_loss(torch.zeros_like(noise), batch)) == pytest.approx(float(noise.pow(2).mean()))


def test_a_few_adam_steps_learn_to_denoise_unseen_draws(records):
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=CUTOFF, max_ell=1, multiplicities=[8, 4], num_layers=1)
    head = DenoisingReadoutBlock(encoder.irreps_out)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-2)
    held_out = noised([records[0]] * 4, 0.1, step=10**6)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(denoising_loss(head(encoder(held_out)), held_out))

    before = held_out_loss()
    for step in range(12):  # a fresh draw every step, as training batches get
        batch = noised([records[0]] * 2, 0.1, step)
        loss = denoising_loss(head(encoder(batch)), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out_loss() < 0.6 * before, (before, held_out_loss())


def test_an_encoder_without_vectors_is_refused():
    with pytest.raises(ConfigError, match="model.denoise_weight.*1o"):
        DenoisingReadoutBlock(InvariantEncoder(cutoff=CUTOFF, num_features=8, num_layers=1).irreps_out)


def test_a_fit_adds_the_denoising_loss_on_noised_training_batches_only(tmp_path, quiet_trainer):
    from lightning.pytorch.loggers import CSVLogger

    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.sources import BundledDataset
    from equiprop.data.splits import RandomSplit
    from equiprop.train.module import MultiTaskModel

    if "denoise_weight" not in inspect.signature(MultiTaskModel).parameters:
        pytest.skip("train/module.py has no model.denoise_weight yet")
    torch.manual_seed(0)
    encoder = EquivariantEncoder(cutoff=CUTOFF, max_ell=1, multiplicities=[8, 4], num_layers=1)
    model = MultiTaskModel(encoder, ["Ef"], denoise_weight=400.0)
    assert "1o" in str(encoder.irreps_out)  # a scalar task alone would not keep 1o in the last layer
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef"], cutoff=CUTOFF, batch_size=16,
                               split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(tmp_path / "cache"),
                               augment={"noise": 0.05})
    quiet_trainer(logger=CSVLogger(str(tmp_path), name="logs"), log_every_n_steps=1, limit_train_batches=2,
                  limit_val_batches=1).fit(model, datamodule=data)
    logged = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/denoise/loss" in logged and not [c for c in logged if c.startswith("val/denoise")]
