"""Weights-only export (what ships in checkpoints/): the same seed gives the same weights, the pretrained backbone is
dropped and restored from the installed package, and the exported model predicts exactly what the training
checkpoint predicts."""

import numpy as np
import pytest
import torch

from equiprop.cli import main

pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")
pytestmark = pytest.mark.integration  # two short fits on SevenNet-0 features

RECIPE = """
run_name: {name}
seed_everything: 0
trainer: {{max_epochs: 2, accelerator: cpu, limit_train_batches: 3, limit_val_batches: 1, enable_progress_bar: false,
          enable_model_summary: false, logger: false}}
model:
  encoder:
    class_path: equiprop.nn.FoundationEncoder
    init_args: {{model: 7net-0, transfer: frozen, parity: true, cache_dir: {cache}}}
  environment_channels: 4
data:
  sources: [{{class_path: equiprop.data.sources.BundledDataset, init_args: {{dataset: tiny}}}}]
  tasks: [Ef, {{name: elastic_tensor, parametrization: spd_log}}]
  cutoff: 5.0
  batch_size: 8
  cache_dir: {cache}
  split: {{class_path: equiprop.data.splits.RandomSplit, init_args: {{val_fraction: 0.2, test_fraction: 0.0, seed: 0}}}}
"""


def test_same_seed_same_weights_and_the_export_predicts_as_the_checkpoint(tmp_path, monkeypatch, tiny_entries):
    from pymatgen.core import Structure

    from equiprop.nn.registry import build_encoder
    from equiprop.inference import Predictor
    from equiprop.train.export import export_weights

    monkeypatch.chdir(tmp_path)
    exported = []
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(RECIPE.format(name=name, cache=tmp_path / "cache"))
        assert main(["fit", "-c", f"{name}.yaml"]) == 0
        checkpoint = torch.load(tmp_path / "runs" / name / "last.ckpt", map_location="cpu", weights_only=True)
        encoder = build_encoder(checkpoint["equiprop"]["encoder"])
        exported.append(export_weights(checkpoint, encoder))
    first, second = (e["state_dict"] for e in exported)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert not [k for k in first if k.startswith("encoder.")]  # the frozen potential is referenced, not copied
    assert exported[0]["equiprop"]["backbone"]["dropped_tensors"] > 100
    torch.save(exported[0], tmp_path / "member.ckpt")
    structures = [Structure.from_dict(e["structure"]) for e in tiny_entries[:3]]
    ours = Predictor.from_checkpoint(tmp_path / "member.ckpt", allow_unseen_elements=True).predict(structures)
    trained = Predictor.from_checkpoint(tmp_path / "runs" / "first" / "last.ckpt",
                                        allow_unseen_elements=True).predict(structures)
    for a, b in zip(ours, trained):
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9)
