import lightning as L
import numpy as np
import torch
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import RecordsJSON
from equiprop.data.sources.records_json import bundled_path, read_json
from equiprop.data.splits import RandomSplit
from equiprop.nn import InvariantEncoder
from equiprop.train.loss import UncertaintyWeighting
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
    total = weighting({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": "scalar", "b": "binary"})
    expected = 0.5 * np.exp(-0.5) * 2.0 + 0.25 + 1.0 * 3.0 + 0.0
    assert float(total) == float(torch.tensor(expected, dtype=torch.float32))


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
    trainer = L.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[])
    trainer.fit(model, datamodule=data)
    s = {name: float(p) for name, p in model.weighting.log_variance.items()}
    assert s["Ef_noisy"] > s["Ef"] + 0.2, s
    weights = model.weighting.task_weights()
    assert weights["Ef"] > weights["Ef_noisy"]
    assert "weight/Ef" in trainer.callback_metrics  # logged every epoch
