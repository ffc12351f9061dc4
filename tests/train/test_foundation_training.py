"""Multi-task training on the FoundationEncoder with a real Trainer: frozen weights stay bit-identical, every head
(tensors included) trains, and a checkpoint predicts the same numbers after loading (no network involved)."""

import lightning as L
import pytest
import torch

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.train.module import MultiTaskModel

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")

from equiprop.nn import FoundationEncoder  # noqa: E402
from equiprop.inference import Predictor  # noqa: E402

pytestmark = pytest.mark.integration  # trains on SevenNet features

TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor"]  # the tiny set has no piezo labels to train on


@pytest.fixture
def data(tmp_path):
    return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=5.0,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(tmp_path / "graphs"))


def _fit(model, data, tmp_path, epochs=2):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path), enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return trainer


def test_frozen_fit_keeps_pretrained_weights_and_trains_heads(data, tmp_path):
    encoder = FoundationEncoder(transfer="frozen", cache_dir=str(tmp_path / "features"))
    pretrained = {k: v.clone() for k, v in encoder.potential.state_dict().items()}
    model = MultiTaskModel(encoder, TASKS, lr=3e-3)
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    trainer = _fit(model, data, tmp_path)
    after = encoder.potential.state_dict()
    assert all(torch.equal(pretrained[k], after[k]) for k in pretrained)
    assert any(not torch.equal(heads_before[k], v) for k, v in model.heads.state_dict().items())
    # every structure was featurised once (first epoch), later epochs and validation read the cache
    cache = encoder.feature_cache()
    assert cache.hits > 0 and cache.misses <= len(data.dataset)
    trainer.save_checkpoint(tmp_path / "frozen.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "frozen.ckpt")
    assert isinstance(predictor.models[0].encoder, FoundationEncoder)
    structures = [data.dataset[i] for i in range(4)]
    direct = model.eval()
    from torch_geometric.data import Batch

    with torch.no_grad():
        expected = direct.predict_physical(Batch.from_data_list(structures))
    loaded = predictor.predict_graphs(structures)
    assert predictor.latents(structures).shape == (4, 640 + 2 * (64 + 32))
    for i in range(4):
        assert loaded[i]["Ef"] == pytest.approx(float(expected["Ef"][i]), rel=1e-5)
        assert torch.allclose(torch.as_tensor(loaded[i]["elastic_tensor"]).float(),
                              torch.as_tensor(predictor.tasks["elastic_tensor"].to_user(
                                  expected["elastic_tensor"][i].double().numpy())).float(), rtol=1e-5, atol=1e-4)


def test_partial_finetune_trains_only_the_last_layer(data, tmp_path):
    encoder = FoundationEncoder(transfer="finetune", trainable_layers=1, cache_dir=str(tmp_path / "features"))
    before = {k: v.clone() for k, v in encoder.potential.state_dict().items()}
    model = MultiTaskModel(encoder, TASKS, lr=3e-3, encoder_lr_factor=0.1)
    _fit(model, data, tmp_path, epochs=1)
    changed = {k.split("_", 1)[0] for k, v in encoder.potential.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"4"}


def test_physics_priors_train_save_and_predict(data, tmp_path):
    """A fit with every prior: the Ef references are fitted on the training split, gains train, and a loaded
    checkpoint predicts what the trained model does (the priors travel with it)."""
    tasks = ["Ef", "Eg", "K_VRH", {"name": "eps_electronic", "parametrization": "spd_log"},
             {"name": "elastic_tensor", "parametrization": "spd_log"}]
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=tasks, cutoff=5.0,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(tmp_path / "graphs"))
    encoder = FoundationEncoder(transfer="frozen", cache_dir=str(tmp_path / "features"))
    priors = {"Ef": "potential_energy", "K_VRH": "potential_bulk_modulus", "eps_electronic": "penn",
              "elastic_tensor": "potential_stiffness"}
    model = MultiTaskModel(encoder, tasks, lr=3e-3, priors=priors)
    trainer = _fit(model, data, tmp_path, epochs=1)
    references = model.priors.reference_energies
    assert int((references != 0).sum()) >= 5 and bool(references[[8, 14]].ne(0).any())
    assert all(not torch.equal(g, torch.ones_like(g)) for g in model.priors.gains.values())
    trainer.save_checkpoint(tmp_path / "priors.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "priors.ckpt")
    assert torch.equal(predictor.models[0].priors.reference_energies, references)
    structures = [data.dataset[i] for i in range(4)]
    from torch_geometric.data import Batch

    with torch.no_grad():
        expected = model.eval().predict_physical(Batch.from_data_list(structures))
    loaded = predictor.predict_graphs(structures)
    for i in range(4):
        assert loaded[i]["Ef"] == pytest.approx(float(expected["Ef"][i]), rel=1e-5)
        assert loaded[i]["K_VRH"] == pytest.approx(float(expected["K_VRH"][i]), rel=1e-5)


def test_gamma_phonon_descriptors_run_inside_a_trainer(tmp_path):
    """Forces by autograd inside validation and prediction (no_grad / inference mode): this crashed every fit."""
    from equiprop.data.splits import IdListSplit

    ids = ["mp-11261", "mp-11290", "mp-1190", "mp-1483", "mp-2", "mp-21855", "mp-2567", "mp-30481", "mp-3871"]
    # nine crystals (phonons cost ~2 s each); mp-2 is a conventional fcc cell whose primitive cell has one atom and
    # no optical mode: its mean optical frequency was NaN and turned every weight NaN
    split = IdListSplit(ids[:6], ids[6:8], ids[8:])
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["K_VRH"], cutoff=5.0, split=split,
                               batch_size=4, cache_dir=str(tmp_path / "graphs"))
    encoder = FoundationEncoder(transfer="frozen", descriptors=["gamma_phonons"], cache_dir=str(tmp_path / "f"))
    trainer = _fit(MultiTaskModel(encoder, ["K_VRH"], lr=3e-3), data, tmp_path, epochs=1)
    trainer.save_checkpoint(tmp_path / "phonons.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "phonons.ckpt")
    with torch.inference_mode():
        predictions = predictor.predict_graphs([data.subsets["test"][0], data.subsets["val"][0]])
    assert all(p["K_VRH"] > 0 for p in predictions)


def test_two_backbones_from_a_recipe_line_fit_save_and_predict(cli_recipe, tmp_path, monkeypatch, tiny_entries):
    """``model: [7net-0, chgnet-0.3.0]`` through ``equiprop fit``, then the checkpoint predicts through ``Predictor``
    with both backbones restored (their sha256 recorded in the checkpoint's backbone record)."""
    pytest.importorskip("chgnet")
    from pymatgen.core import Structure

    from equiprop.cli import main

    monkeypatch.chdir(tmp_path)
    cli_recipe["model"]["encoder"] = {"class_path": "equiprop.nn.FoundationEncoder",
                                      "init_args": {"model": ["7net-0", "chgnet-0.3.0"]}}
    cli_recipe["data"].update(cutoff=5.0, tasks=["Ef", "eps_electronic"], cache_dir=str(tmp_path / "graphs"))
    import yaml

    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cli_recipe))
    assert main(["fit", "-c", "recipe.yaml", "--trainer.max_epochs=2"]) == 0
    predictor = Predictor.from_checkpoint(tmp_path / "runs" / "tiny" / "best.ckpt", warn=False)
    assert [b.info.name for b in predictor.models[0].encoder.backbones] == ["7net-0", "chgnet-0.3.0"]
    source = predictor.models[0].encoder.pretrained_source()
    assert [p["model"] for p in source["parts"]] == ["7net-0", "chgnet-0.3.0"]
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries[:4]]
    rows = [r for r in predictor.predict_records(structures) if isinstance(r, dict)]  # others: unseen elements
    assert rows and all(torch.isfinite(torch.as_tensor(r["Ef"])) for r in rows)
    assert all(r["eps_electronic"].shape == (3, 3) for r in rows)
