"""``evaluate_split`` (``equiprop.inference.evaluate``), the one evaluator of a predictor on a split: its rows are the
split's labelled structures, its true values the dataset's labels back in physical units (GPa, not log10 GPa), its
predictions those ``Predictor.predict`` gives for the same structures, and its MAE the trainer's own test metric."""

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop import Predictor
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.inference.evaluate import evaluate_split

TASKS = ["Ef", "K_VRH"]


def test_the_split_evaluator_agrees_with_the_labels_the_predictor_and_the_trainer(tmp_path, tiny_checkpoint,
                                                                                 tiny_entries, quiet_trainer):
    checkpoint = tiny_checkpoint(tmp_path / "m.ckpt", TASKS, train_batches=3, split=(0.25, 0.25))
    # a test split holds elements the training split lacks: the evaluator, like trainer.test, predicts them all
    predictor = Predictor.from_checkpoint(checkpoint, warn=False, allow_unseen_elements=True)
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5,
                               split=RandomSplit(0.25, 0.25, seed=0), batch_size=8, cache_dir=str(tmp_path / "cache"))
    data.setup("test")
    evaluated = evaluate_split(predictor, data, "test")
    assert set(evaluated) == set(TASKS)

    entries = {e["material_id"]: e for e in tiny_entries}
    split_ids = set(data.subsets["test"].structure_ids())
    for name, rows in evaluated.items():
        labelled = {i for i in split_ids if entries[i].get(name) is not None}
        assert sorted(rows.ids) == sorted(labelled) and rows.std is None
        np.testing.assert_allclose(rows.true, [entries[i][name] for i in rows.ids], rtol=1e-5)  # physical units
        direct = predictor.predict([Structure.from_dict(entries[i]["structure"]) for i in rows.ids])
        np.testing.assert_allclose(rows.mean, [d[name] for d in direct], rtol=1e-4, atol=1e-6)

    (metrics,) = quiet_trainer().test(predictor.models[0], datamodule=data, verbose=False)
    for name, rows in evaluated.items():
        assert np.abs(rows.mean - rows.true).mean() == pytest.approx(metrics[f"test/{name}/mae"], rel=1e-4)
