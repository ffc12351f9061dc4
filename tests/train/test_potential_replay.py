"""The potential replay of a fine-tuned backbone: its targets are the pretrained potential's energies and forces on
fixed rattled copies, the loss is zero before the weights move and grows when they do, and a real fit keeps the
backbone closer to its potential than plain fine-tuning does."""

import lightning as L
import pytest
import torch
from torch_geometric.data import Batch

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn import FoundationEncoder  # noqa: E402
from equiprop.train.potential_replay import PotentialReplay  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    module = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["K_VRH"], cutoff=5.0,
                                 split=RandomSplit(0.2, 0.2, seed=0), batch_size=8,
                                 cache_dir=str(tmp_path_factory.mktemp("graphs")))
    module.setup("fit")
    return module


def test_targets_are_the_pretrained_potential_on_fixed_rattled_copies(data):
    encoder = FoundationEncoder(transfer="finetune", trainable_layers=1, cache_features=False)
    replay = PotentialReplay(encoder, rattle=0.05)
    batch = Batch.from_data_list([data.dataset[i] for i in range(4)])
    energy, forces = (t.detach() for t in replay(encoder.backbones[0], batch))
    # not moved yet: zero to float32 rounding (1e-7 of -6 eV/atom is 6e-5 of the 10 meV scale, squared 4e-9)
    assert len(replay.targets) == 4 and float(energy) < 1e-6 and float(forces) < 1e-6
    rattled = [replay.targets[k][1] for k in replay.targets]
    assert all(float(f.abs().max()) > 1e-3 for f in rattled)  # the rattle gives real forces to match
    assert float(replay(encoder.backbones[0], batch)[1]) < 1e-6 and len(replay.targets) == 4  # same copies, cached
    last = encoder.backbones[0].layer_modules()[-1]
    with torch.no_grad():
        for p in last.parameters():
            p.add_(0.05 * torch.randn_like(p))
    energy, forces = replay(encoder.backbones[0], batch)
    assert float(energy) > 1e-4 and float(forces) > 1e-4
    (energy + forces).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in last.parameters() if p.requires_grad)
    assert not any(p.grad is not None for p in replay.reference(batch.pos).parameters())  # the copy never trains
    few = PotentialReplay(encoder, structures=2)  # a step replays only the batch's first structures
    few(encoder.backbones[0], batch)
    assert set(few.targets) == set(list(replay.targets)[:2])


def test_replay_needs_a_fine_tuned_backbone():
    with pytest.raises(ConfigError, match="transfer: finetune"):
        MultiTaskModel(FoundationEncoder(transfer="frozen"), ["K_VRH"], potential_replay=1.0)
    with pytest.raises(ConfigError, match="transfer: finetune"):
        MultiTaskModel(EquivariantEncoder(cutoff=5.0, multiplicities=[8, 4, 4]), ["K_VRH"], potential_replay=1.0)
    with pytest.raises(ConfigError, match="potential_replay must be >= 0"):
        MultiTaskModel(FoundationEncoder(transfer="frozen"), ["K_VRH"], potential_replay=-1.0)


@pytest.mark.integration
def test_a_fit_with_replay_stays_closer_to_the_potential(data, tmp_path):
    """Same seed, data and steps: the backbone fine-tuned with the replay drifts less from its potential (measured by
    the replay's own terms on the training crystals) than one fine-tuned on the property alone."""
    drift = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        encoder = FoundationEncoder(transfer="finetune", trainable_layers=1, cache_dir=str(tmp_path / "features"))
        model = MultiTaskModel(encoder, ["K_VRH"], lr=3e-3, encoder_lr_factor=3.0, potential_replay=weight,
                               replay_structures=4)
        L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                  default_root_dir=str(tmp_path), enable_model_summary=False).fit(model, datamodule=data)
        probe = PotentialReplay(encoder)
        batch = Batch.from_data_list([data.subsets["train"][i] for i in range(8)])
        drift[weight] = sum(float(t) for t in probe(encoder.backbones[0], batch))
    assert drift[10.0] < 0.6 * drift[0.0]  # measured 0.82 vs 2.09
