"""The data module (``equiprop.data.datamodule``) on the bundled tiny set: masked labels, training-split-only
normalisation, its state, and its summary of sources, tasks and splits (``equiprop.data.report``)."""

import numpy as np
import pytest
import torch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources.records_json import BundledDataset
from equiprop.data.splits import RandomSplit

TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor"]


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory):
    module = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, split=RandomSplit(0.2, 0.2, seed=0),
                                 batch_size=8, cache_dir=str(tmp_path_factory.mktemp("cache")))
    module.setup("fit")
    return module


def test_batches_carry_labels_only_where_present(tiny_module):
    seen = {t: 0 for t in TASKS}
    for batch in tiny_module.train_dataloader():
        assert batch.num_graphs <= 8
        for t in TASKS:
            mask = batch[keys.mask_key(t)]
            assert mask.shape == (batch.num_graphs,) and mask.dtype == torch.bool
            seen[t] += int(mask.sum())
        assert batch[keys.label_key("elastic_tensor")].shape == (batch.num_graphs, 3, 3, 3, 3)
    assert seen == tiny_module.report["label_counts"]["train"]
    assert tiny_module.report["splits"]["train"] == len(tiny_module.subsets["train"])


def test_normalisation_comes_from_the_training_split_only(tiny_module):
    train = tiny_module.subsets["train"]
    ef = [float(g[keys.label_key("Ef")]) for g in train if bool(g[keys.mask_key("Ef")])]
    stats = tiny_module.normalization["Ef"]
    assert stats.count == len(ef) and stats.shift == pytest.approx(np.mean(ef)) and stats.scale == pytest.approx(
        np.std(ef))
    k = [float(g[keys.label_key("K_VRH")]) for g in train if bool(g[keys.mask_key("K_VRH")])]
    assert tiny_module.normalization["K_VRH"].shift == pytest.approx(np.mean(k))  # log10 GPa, model space
    assert 1.0 < np.mean(k) < 3.0
    eps = np.stack([g[keys.label_key("eps_electronic")][0].double().numpy() for g in train
                    if bool(g[keys.mask_key("eps_electronic")])])
    # irreps of a symmetric rank-2 tensor: 1x0e (trace / sqrt 3) then 1x2e; robust statistics per block
    stats = tiny_module.normalization["eps_electronic"]
    trace_component = np.trace(eps, axis1=1, axis2=2) / np.sqrt(3)
    assert stats.shift[0] == pytest.approx(np.median(trace_component), rel=1e-5)
    assert stats.scale[0] == pytest.approx(1.4826 * np.median(np.abs(trace_component - np.median(trace_component))),
                                           rel=1e-4)
    assert stats.shift[1:] == [0.0] * 5  # no shift on the traceless part: it would single out a direction
    traceless = eps - np.trace(eps, axis1=1, axis2=2)[:, None, None] * np.eye(3) / 3
    assert stats.scale[1] == pytest.approx(np.sqrt((traceless**2).sum(axis=(1, 2))).mean() / np.sqrt(5), rel=1e-4)


def test_state_dict_round_trip(tiny_module):
    state = tiny_module.state_dict()
    assert state["tasks"]["Ef"]["units"] == "eV/atom" and state["graph"]["cutoff"] == 5.0
    fresh = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS)
    fresh.load_state_dict(state)
    assert fresh.normalization["Eg"].to_dict() == tiny_module.normalization["Eg"].to_dict()


def test_summary_names_units_and_counts(tiny_module):
    text = tiny_module.summary()
    assert "eV/atom" in text and "log_scalar" in text and "bundled:tiny" in text
    assert "structures" in text.splitlines()[-1]
