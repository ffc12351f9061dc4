"""The dataset protocol (``equiprop.data.table``): the in-memory and the on-disk dataset answer it alike, for the
whole dataset and for every split; the workflows that read labels and ids through it give the same numbers from
either; and nothing outside the two datasets reads their private storage."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import equiprop
from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.data.table import StructureTable

TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor", "piezo_tensor"]
REPO = Path(equiprop.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    out = []
    for storage in ("memory", "disk"):
        dm = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5,
                                 split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, storage=storage,
                                 cache_dir=str(tmp / storage))
        dm.setup("fit")
        out.append(dm)
    return out


def assert_same_table(a, b, tasks) -> None:
    assert isinstance(a, StructureTable) and isinstance(b, StructureTable)
    assert len(a) == len(b) and a.structure_ids() == b.structure_ids()
    assert a.chemical_systems() == b.chemical_systems()
    assert a.statistics() == b.statistics()
    labels_a, labels_b = a.labels(tasks), b.labels(tasks)
    for name in tasks:
        la, lb = labels_a[name], labels_b[name]
        assert torch.equal(la.values, lb.values) and torch.equal(la.atoms, lb.atoms), name
        assert np.array_equal(la.structures, lb.structures), name


def test_memory_and_disk_answer_the_protocol_alike(both):
    memory, disk = both
    assert_same_table(memory.dataset, disk.dataset, memory.tasks)
    for name in ("train", "val", "test"):
        assert_same_table(memory.subsets[name], disk.subsets[name], memory.tasks)
    # a subset of a subset, out of order: positions are the subset's own
    assert_same_table(memory.subsets["train"].subset([3, 0, 2]), disk.subsets["train"].subset([3, 0, 2]),
                      memory.tasks)


def test_labels_are_the_graphs_own(both):
    memory, _ = both
    train = memory.subsets["train"]
    labels = train.labels(memory.tasks)["eps_electronic"]
    graphs = [train[int(p)] for p in labels.structures]
    assert labels.count == len(graphs) > 0 and len(labels.structures) < len(train)  # some lack the label
    label, mask = keys.label_key("eps_electronic"), keys.mask_key("eps_electronic")
    expected = torch.cat([g[label][g[mask]] for g in graphs])
    assert torch.equal(labels.values, expected)
    assert labels.atoms.tolist() == [g.num_nodes for g in graphs]
    ids = train.structure_ids()
    assert [ids[int(p)] for p in labels.structures] == [g[keys.STRUCTURE_ID] for g in graphs]


def test_workflows_read_the_same_numbers_from_memory_and_disk(both, tmp_path, monkeypatch):
    from equiprop.workflows.distill import held_out, real_label_sets
    from equiprop.workflows.scoreboard_inputs import split_ids, training_labels

    memory, disk = both
    for name in TASKS:
        assert np.array_equal(training_labels(memory, name), training_labels(disk, name))
    assert split_ids(memory) == split_ids(disk)
    assert held_out(memory) == held_out(disk)
    real = real_label_sets(memory, TASKS)
    assert real == real_label_sets(disk, TASKS) and any(len(v) < len(TASKS) for v in real.values())


def test_the_median_baseline_runs_on_disk(cli_recipe, tmp_path, monkeypatch):
    from equiprop.workflows.curves import median_baseline

    monkeypatch.chdir(tmp_path)
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "graphs")
    results = [median_baseline(cli_recipe, "Ef", None, 0, Path("runs") / f"median_{storage}",
                               [f"--data.storage={storage}"]) for storage in ("memory", "disk")]
    assert results[0] == results[1] and results[0]["n_train"] > 0


PRIVATE = re.compile(r"\._data\b|\.indices\(\)|\._index\b|\._names\b|\._systems\b")
OWNERS = {"src/equiprop/data/dataset.py", "src/equiprop/data/stored_graphs.py"}


def test_nothing_outside_the_datasets_reads_their_private_storage():
    offenders = []
    for folder in ("src", "benchmarks", "scripts", "recipes"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = str(path.relative_to(REPO))
            if relative in OWNERS:
                continue
            offenders += [f"{relative}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                          if PRIVATE.search(line)]
    assert offenders == []
