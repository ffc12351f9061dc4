import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import RecordsJSON
from equiprop.data.sources.records_json import bundled_path, read_json
from equiprop.data.splits import RandomSplit
from equiprop.nn import InvariantEncoder
from equiprop.data.kinds import KINDS, tensor_part_columns, tensor_task_loss
from equiprop.train.loss import FixedWeighting, UncertaintyWeighting
from equiprop.train.module import MultiTaskModel


def test_a_task_without_labels_in_the_batch_gets_exactly_zero_gradient(tiny_data, small_model):
    tiny_data.setup()
    model = small_model()
    graphs = [g for g in tiny_data.subsets["train"] if not bool(g[keys.mask_key("elastic_tensor")])][:6]
    assert any(bool(g[keys.mask_key("Ef")]) for g in graphs)
    batch = Batch.from_data_list(graphs)
    model.training_step(batch, 0).backward()
    for name, param in model.heads["elastic_tensor"].named_parameters():
        assert param.grad is None or not param.grad.any(), name
    assert model.weighting.log_variance["elastic_tensor"].grad is None
    assert model.heads["Ef"].mlp[-1].weight.grad.abs().sum() > 0
    assert model.weighting.log_variance["Ef"].grad is not None


def test_uncertainty_weighting_formula():
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_variance["a"].fill_(0.5)
    total = weighting({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": KINDS["scalar"].weighting_factor, "b": KINDS["binary"].weighting_factor})
    expected = 0.5 * np.exp(-0.5) * 2.0 + 0.25 + 1.0 * 3.0 + 0.0
    assert float(total.detach()) == float(torch.tensor(expected, dtype=torch.float32))


@pytest.mark.integration  # 12 epochs of training
def test_noisier_task_learns_the_larger_variance(tmp_path):
    """Kendall et al.: the same property with and without strong label noise; the noisy copy ends less trusted."""
    content = read_json(bundled_path("default"))
    rng = np.random.default_rng(0)
    records = [r for r in content["records"] if "Ef" in r["labels"]][:256]
    for r in records:
        r["labels"] = {"Ef": r["labels"]["Ef"], "Ef_noisy": r["labels"]["Ef"] + rng.normal(0.0, 2.0)}
    path = tmp_path / "noisy.json"
    path.write_text(__import__("json").dumps({"meta": {}, "records": records}))
    tasks = ["Ef", {"name": "Ef_noisy", "key": "Ef_noisy", "units": "eV/atom"}]
    data = MultiTaskDataModule(sources=[RecordsJSON(str(path))], tasks=tasks, cutoff=4.5, batch_size=32,
                               split=RandomSplit(0.1, 0.0, seed=0), cache_dir=str(tmp_path / "cache"))
    L.seed_everything(0)
    model = MultiTaskModel(InvariantEncoder(cutoff=4.5, num_features=32, num_layers=2), tasks, lr=0.01,
                           scheduler="none")
    trainer = L.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False, log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[])
    trainer.fit(model, datamodule=data)
    s = {name: float(p.detach()) for name, p in model.weighting.log_variance.items()}
    assert s["Ef_noisy"] > s["Ef"] + 0.2, s
    weights = model.weighting.task_weights()
    assert weights["Ef"] > weights["Ef_noisy"]
    assert "weight/Ef" in trainer.callback_metrics  # logged every epoch


def test_huber_loss_on_known_numbers():
    prediction = torch.tensor([0.0, 1.0, -2.0, 3.5])
    target = torch.tensor([0.5, -1.0, 1.0, 3.5])
    # |d| = 0.5, 2, 3, 0; delta = 1: 0.5 d^2 where |d| <= 1, |d| - 0.5 beyond
    by_hand = (0.5 * 0.5**2 + (2.0 - 0.5) + (3.0 - 0.5) + 0.0) / 4  # 1.03125
    scalar = KINDS["scalar"]
    assert float(scalar.loss(prediction, target, "huber")[0]) == pytest.approx(by_hand, rel=1e-7)
    assert float(nn.functional.huber_loss(prediction, target)) == pytest.approx(by_hand, rel=1e-7)
    assert float(scalar.loss(prediction, target, "mse")[0]) > float(scalar.loss(prediction, target, "huber")[0])
    # tensors: the same elementwise Huber loss, averaged over the isotropic and the anisotropic components apart
    columns = tensor_part_columns([True, False, False])
    total, parts = tensor_task_loss(prediction[:3].reshape(1, 3), target[:3].reshape(1, 3), columns, "huber",
                                    isotropic_weight=2.0, anisotropic_weight=0.5)
    assert float(parts["isotropic"]) == pytest.approx(0.125)
    assert float(parts["anisotropic"]) == pytest.approx((1.5 + 2.5) / 2)
    assert float(total) == pytest.approx(2.0 * 0.125 + 0.5 * 2.0)


def test_fixed_weighting_is_the_weighted_sum_with_default_one():
    weighting = FixedWeighting(["a", "b", "c"], {"a": 2.0, "c": 0.25})
    total = weighting({"a": torch.tensor(1.5), "b": torch.tensor(4.0)}, {"a": 0.5, "b": 0.5})
    assert float(total) == pytest.approx(2.0 * 1.5 + 1.0 * 4.0)  # c absent from the batch: left out
    assert weighting.task_weights() == {"a": 2.0, "b": 1.0, "c": 0.25}


def test_model_with_fixed_weights_returns_the_weighted_sum_of_its_task_losses(tiny_data, small_model):
    """The total of a training step equals sum_t w_t L_t, with each L_t the same model's total under a one-hot weight
    vector (the weights enter nowhere but the total, so this isolates the weighting)."""
    tiny_data.setup()
    batch = Batch.from_data_list([tiny_data.subsets["train"][i] for i in range(8)])
    tasks = ["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor"]  # the tiny tasks
    weights = dict(zip(tasks, (2.0, 0.5, 3.0, 0.1, 1.5, 0.7, 0.25)))
    torch.manual_seed(0)
    model = small_model(weighting="fixed", task_weights=weights)
    assert isinstance(model.weighting, FixedWeighting) and model.weighting.task_weights() == weights
    model.normalizer.set_stats(tiny_data.normalization)
    model.encoder.set_avg_num_neighbors(20.0)
    present = [t for t in tasks if bool(batch[keys.mask_key(t)].any())]
    assert len(present) >= 4

    def total(w: dict) -> float:
        model.weighting.weights = {t: w.get(t, 1.0) for t in tasks}
        with torch.no_grad():
            return float(model.training_step(batch, 0))

    weighted = total(weights)
    per_task = {t: total({u: float(u == t) for u in tasks}) for t in present}
    assert all(v > 0 for v in per_task.values())
    assert weighted == pytest.approx(sum(weights[t] * per_task[t] for t in present), rel=1e-5)
    assert total({}) == pytest.approx(sum(per_task.values()), rel=1e-5)  # default weight 1
