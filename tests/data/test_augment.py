"""Augmentation of training batches (``equiprop.data.augment``, ``MultiTaskDataModule(augment=...)``) in real fits on
the bundled tiny set: training batches noised and strained on their device, validation batches untouched, fresh draws
every epoch that repeat with the seed, fractional coordinates kept under strain, tensor labels masked on strained
structures and every masked label counted; options checked with one-line errors naming them."""

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.augment import Augmentation, draw_strains, masked_tasks, original_geometry, strained
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError
from equiprop.data.graph import edge_vectors
from equiprop.data.kinds import KINDS
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.data.tasks import resolve_tasks
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

TASKS = ["Ef", "Eg", "eps_electronic"]
AUGMENT = {"noise": 0.05, "strain": 0.02, "strain_fraction": 0.5}


class Recorder(L.Callback):
    """The batches the model's steps receive (after ``on_after_batch_transfer``), by loop and epoch."""

    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((trainer.current_epoch, batch.clone()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch.clone())


def fit(folder, seed: int, epochs: int, augment=AUGMENT, logger=False):
    """A real fit on the tiny set, all 32 training structures in one batch per epoch: (data module, recorder)."""
    L.seed_everything(seed)
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5, batch_size=64,
                               split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(folder / "cache"), augment=augment)
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1), TASKS)
    recorder = Recorder()
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=logger, enable_progress_bar=False, log_every_n_steps=1,
              enable_checkpointing=False, enable_model_summary=False, limit_train_batches=1, limit_val_batches=1,
              num_sanity_val_steps=1, callbacks=[recorder]).fit(model, datamodule=data)
    return data, recorder


def nodes(batch: Batch, g: int) -> slice:
    return slice(int(batch.ptr[g]), int(batch.ptr[g + 1]))


def structures(batch: Batch):
    """(structure id, graph index, node slice) of each structure of a collated batch."""
    return [(sid, g, nodes(batch, g)) for g, sid in enumerate(batch.structure_id)]


def by_structure(batch: Batch, key: str) -> dict:
    """{structure id: its rows of ``key``} (per-atom keys by node slice, per-structure keys by graph index)."""
    per_atom = len(batch[key]) == batch.num_nodes
    return {sid: batch[key][atoms if per_atom else g] for sid, g, atoms in structures(batch)}


@pytest.fixture(scope="module")
def augmented_fit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("augment")
    data, recorder = fit(folder, seed=0, epochs=2, logger=CSVLogger(str(folder), name="logs"))
    clean = {split: {g[keys.STRUCTURE_ID]: g for g in data.subsets[split]} for split in ("train", "val")}
    return data, recorder, clean, folder


def test_training_batches_are_augmented_and_validation_batches_are_not(augmented_fit):
    data, recorder, clean, _ = augmented_fit
    assert [epoch for epoch, _ in recorder.train] == [0, 1]
    for _, batch in recorder.train:
        positions, cell = original_geometry(batch)  # undo strain and noise: the stored graph, to float32 rounding
        for sid, g, atoms in structures(batch):
            graph = clean["train"][sid]
            assert (batch.pos[atoms] - graph.pos).abs().max() > 1e-3  # every one moved (no one-atom cell here)
            assert torch.allclose(positions[atoms], graph.pos, atol=1e-4)
            assert torch.allclose(cell[g], graph.cell[0], atol=1e-4)
            assert torch.allclose(batch[keys.NOISE][atoms].mean(0), torch.zeros(3), atol=1e-6)  # no rigid shift
    assert 0.03 < float(recorder.train[0][1][keys.NOISE].std()) < 0.07  # noise: 0.05 Å
    assert recorder.val  # the sanity check and each epoch's validation
    for batch in recorder.val:
        assert keys.NOISE not in batch and keys.STRAIN not in batch
        for sid, g, atoms in structures(batch):
            assert torch.equal(batch.pos[atoms], clean["val"][sid].pos)
            assert torch.equal(batch.cell[g], clean["val"][sid].cell[0])


def test_each_epoch_draws_afresh_and_the_seed_repeats_the_draws(augmented_fit):
    data, recorder, _, folder = augmented_fit
    first, second = (by_structure(batch, keys.NOISE) for _, batch in recorder.train)
    assert all(not torch.allclose(first[sid], second[sid]) for sid in first)  # the same structures, new draws
    _, again = fit(folder, seed=0, epochs=1)
    _, other = fit(folder, seed=1, epochs=1)
    assert torch.equal(again.train[0][1].pos, recorder.train[0][1].pos)
    assert torch.equal(again.train[0][1][keys.STRAIN], recorder.train[0][1][keys.STRAIN])
    different = by_structure(other.train[0][1], keys.NOISE)
    assert all(not torch.allclose(first[sid], different[sid]) for sid in first)


def test_strain_keeps_fractional_coordinates_and_deforms_the_cell_by_i_plus_eps(augmented_fit, float64):
    data, recorder, clean, _ = augmented_fit
    batch = Batch.from_data_list([g.clone() for g in list(clean["train"].values())[:4]])
    for key in (keys.POSITIONS, keys.CELL, keys.EDGE_CELL_SHIFT):  # the stored float32 numbers, in float64
        batch[key] = batch[key].double()
    picked = torch.tensor([True, True, False, True])
    eps = draw_strains(4, 0.02, picked, torch.Generator().manual_seed(0), torch.float64)
    assert torch.equal(eps, eps.transpose(1, 2)) and eps.abs().max() <= 0.02 and eps.abs().max() > 0.01
    assert torch.equal(eps[2], torch.zeros(3, 3))
    positions, cell = strained(batch, eps)
    assert torch.allclose(cell, batch.cell @ (torch.eye(3) + eps), atol=1e-14)
    for g, atoms in enumerate(nodes(batch, g) for g in range(4)):
        fractional = batch.pos[atoms] @ torch.linalg.inv(batch.cell[g])
        assert torch.allclose(positions[atoms] @ torch.linalg.inv(cell[g]), fractional, atol=1e-12)
    moved = batch.clone()
    moved.pos, moved.cell = positions, cell  # the edges follow: each one deformed by the strain of its structure
    edge_strain = (torch.eye(3) + eps)[batch.batch[batch.edge_index[0]]]
    assert torch.allclose(edge_vectors(moved), torch.einsum("ei,eij->ej", edge_vectors(batch), edge_strain),
                          atol=1e-12)
    for _, fitted in recorder.train:  # in the fit: the cell the model saw is the stored one times (I + eps)
        for sid, g, _ in structures(fitted):
            expected = clean["train"][sid].cell[0] @ (torch.eye(3, dtype=torch.float32) + fitted[keys.STRAIN][g])
            assert torch.allclose(fitted.cell[g], expected, atol=1e-5)


def test_tensor_labels_are_masked_on_strained_structures_and_every_masked_label_is_counted(augmented_fit):
    data, recorder, clean, folder = augmented_fit
    seen, masked, strained_count = {t: 0 for t in TASKS}, {t: 0 for t in TASKS}, 0
    for _, batch in recorder.train:
        for sid, g, _ in structures(batch):
            is_strained = bool(batch[keys.STRAIN][g].abs().max() > 0)
            strained_count += is_strained
            for task in TASKS:
                had = bool(clean["train"][sid][keys.mask_key(task)])
                kept = bool(batch[keys.mask_key(task)][g])
                seen[task] += had
                masked[task] += had and not kept
                assert kept == (had and not (is_strained and task == "eps_electronic")), (sid, task)
    report = data.report["augmentation"]
    assert report["labels"] == seen and report["masked"] == masked
    assert masked["eps_electronic"] > 0 and masked["Ef"] == masked["Eg"] == 0
    assert report["strained"] == strained_count and 0 < strained_count < report["structures"] == 64
    assert report["noised"] == 64
    logged = (folder / "logs" / "version_0" / "metrics.csv").read_text()
    assert "augment/masked_fraction/eps_electronic" in logged and "augment/strained_fraction" in logged


def test_the_policy_masks_tensors_listed_scalars_and_labels_of_the_exact_geometry():
    tasks = resolve_tasks(["Ef", "K_VRH", "eps_electronic", "elastic_tensor"])
    policy = masked_tasks(tasks, Augmentation(strain=0.01, strain_masked=("K_VRH",)))
    assert policy == {"noise": set(), "strain": {"K_VRH", "eps_electronic", "elastic_tensor"}}
    if "forces" not in KINDS:
        pytest.skip("no forces kind in this checkout")
    tasks = resolve_tasks(["Eg", {"name": "energy", "key": "energy", "units": "eV", "pooling": "sum"},
                           {"name": "forces", "key": "forces", "kind": "forces", "level": "atom", "units": "eV/Å",
                            "energy": "energy"}])
    assert masked_tasks(tasks, Augmentation(noise=0.01)) == {"noise": {"energy", "forces"},
                                                             "strain": {"energy", "forces"}}


def test_options_are_checked_with_one_line_errors_naming_them():
    from equiprop.train.run import build_datamodule

    for options, named in (({"noise": -0.01}, "data.augment.noise"), ({"strain": 0.2}, "data.augment.strain"),
                           ({"strain_fraction": 1.5}, "data.augment.strain_fraction"),
                           ({"noise": float("nan")}, "data.augment.noise"),
                           ({"strain_masked": ["K_VRH"]}, "data.augment.strain_masked"),
                           ({"nosie": 0.01}, "data.augment: unknown options")):
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef"], augment=options)
    recipe = {"data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset",
                                    "init_args": {"dataset": "tiny"}}], "tasks": ["Ef", "K_VRH"],
                       "augment": {"strain": 0.01}}}
    data = build_datamodule(recipe, ["--data.augment.noise=0.02", "--data.augment.strain_masked=[K_VRH]"])
    assert data.augment == Augmentation(noise=0.02, strain=0.01, strain_masked=("K_VRH",))
    with pytest.raises(ConfigError, match=r"data\.augment\.noise must be in \[0, 0\.2\]"):
        build_datamodule(recipe, ["--data.augment.noise=-1"])
    assert not MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef"]).augment.active  # off by default
