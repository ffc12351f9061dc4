"""The on-disk graph store: identical batches, statistics and training to the in-memory path, a killed build that
resumes without recomputing finished shards, corruption refused with a one-line error, and a streamed extxyz."""

import sqlite3

import ase.io
import lightning as L
import numpy as np
import pytest
import torch
from pymatgen.io.ase import AseAtomsAdaptor

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.graph_store import GraphStore, build_store
from equiprop.data.stored_graphs import StoredGraphs
from equiprop.data.record import CrystalRecord, from_pymatgen_dict
from equiprop.data.sources import BundledDataset, ExtXYZ
from equiprop.data.splits import RandomSplit
from equiprop.data.tasks import resolve_tasks
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor"]
GRAPH = {"cutoff": 4.5, "max_neighbors": None, "min_neighbors": 1, "merge_cell_tol": 1e-3}


def datamodule(storage: str, tmp_path, sources=None) -> MultiTaskDataModule:
    dm = MultiTaskDataModule(sources=sources or [BundledDataset("tiny")], tasks=TASKS, cutoff=4.5,
                             split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, storage=storage,
                             cache_dir=str(tmp_path / storage))
    dm.setup("fit")
    return dm


def assert_same_graph(a, b) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    return datamodule("memory", tmp), datamodule("disk", tmp)


def test_disk_and_memory_give_identical_graphs_batches_and_statistics(both):
    memory, disk = both
    assert isinstance(disk.dataset, StoredGraphs) and disk.report["storage"] == "disk"
    assert memory.structure_ids == disk.structure_ids
    for name in ("train", "val", "test"):
        assert len(memory.subsets[name]) == len(disk.subsets[name])
        for a, b in zip(memory.subsets[name], disk.subsets[name]):
            assert_same_graph(a, b)
    for a, b in zip(memory.val_dataloader(), disk.val_dataloader()):
        assert_same_graph(a, b)
    assert {n: s.to_dict() for n, s in memory.normalization.items()} == \
        {n: s.to_dict() for n, s in disk.normalization.items()}
    assert memory.train_statistics == disk.train_statistics
    assert memory.report["label_counts"] == disk.report["label_counts"]
    assert memory.report["num_edges"] == disk.report["num_edges"]


def test_disk_and_memory_train_identically(both, quiet_trainer):
    weights = []
    for dm in both:
        L.seed_everything(0)
        model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1),
                               TASKS)
        trainer = quiet_trainer(limit_train_batches=3, limit_val_batches=1)
        trainer.fit(model, datamodule=dm)
        weights.append(model.state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def _records(tiny_entries, n=30):
    return [from_pymatgen_dict(e["structure"], e["material_id"], "tiny", {"Ef": e.get("Ef")})
            for e in tiny_entries[:n]]


def test_a_killed_build_resumes_without_recomputing_finished_shards(tmp_path, tiny_entries):
    tasks = resolve_tasks(["Ef"])
    records = _records(tiny_entries)

    def killed_after(n):
        for i, record in enumerate(records):
            if i == n:
                raise KeyboardInterrupt  # the user's Ctrl-C in the middle of the third shard
            yield record

    store = GraphStore(tmp_path / "g.sqlite")
    with pytest.raises(KeyboardInterrupt):
        build_store(store, killed_after(25), tasks, GRAPH, shard_size=10, workers=1, progress=False)
    assert sorted(store.done_shards()) == [0, 1] and not store.meta("complete")
    built = build_store(GraphStore(tmp_path / "g.sqlite"), iter(records), tasks, GRAPH, shard_size=10, workers=1,
                        progress=False)
    assert (built["shards_resumed"], built["shards_built"]) == (2, 1)
    once = GraphStore(tmp_path / "once.sqlite")
    build_store(once, iter(records), tasks, GRAPH, shard_size=10, workers=2, progress=False)
    resumed = StoredGraphs(GraphStore(tmp_path / "g.sqlite"), tasks, GraphStore(tmp_path / "g.sqlite").index())
    assert len(resumed) == len(records)
    for a, b, record in zip(resumed, StoredGraphs(once, tasks, once.index()), records):
        assert_same_graph(a, b)
        assert_same_graph(a, record_to_graph(record, tasks, 4.5))


def test_a_corrupted_graph_is_refused_not_read(tmp_path, tiny_entries):
    tasks = resolve_tasks(["Ef"])
    store = GraphStore(tmp_path / "g.sqlite")
    records = _records(tiny_entries, 5)
    build_store(store, iter(records), tasks, GRAPH, shard_size=4, workers=1, progress=False)
    payload = bytearray(store.connection.execute("SELECT payload FROM graphs WHERE id = 2").fetchone()[0])
    payload[17] ^= 0xFF  # one flipped byte inside the positions
    with store.connection:
        store.connection.execute("UPDATE graphs SET payload = ? WHERE id = 2", (bytes(payload),))
    graphs = StoredGraphs(store, tasks, store.index())
    assert_same_graph(graphs[0], record_to_graph(records[0], tasks, 4.5))  # intact rows still read
    with pytest.raises(DataError, match="fails its checksum"):
        graphs[2]
    (tmp_path / "truncated.sqlite").write_bytes((tmp_path / "g.sqlite").read_bytes()[:3000])
    with pytest.raises(DataError, match="truncated.sqlite"):
        GraphStore(tmp_path / "truncated.sqlite").index()


def test_a_streamed_extxyz_is_never_held_whole(tmp_path, tiny_entries):
    frames = []
    for record in _records(tiny_entries):
        atoms = record.to_ase()
        atoms.info.update(id=record.id, Ef=record.labels["Ef"] if record.labels["Ef"] is not None else np.nan)
        frames.append(atoms)
    path = tmp_path / "crystals.extxyz"
    ase.io.write(path, frames, format="extxyz")
    source = ExtXYZ(str(path))
    result, stream = source.stream(resolve_tasks(["Ef"]))
    first = next(stream)
    assert isinstance(first, CrystalRecord) and result.records == []  # passed on, not kept
    dm = {s: MultiTaskDataModule(sources=[ExtXYZ(str(path))], tasks=["Ef"], cutoff=4.5, storage=s,
                                 split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(tmp_path / s))
          for s in ("memory", "disk")}
    for module in dm.values():
        module.setup("fit")
    assert dm["disk"].report["sources"][0]["labels"] == dm["memory"].report["sources"][0]["labels"]
    for a, b in zip(dm["memory"].subsets["train"], dm["disk"].subsets["train"]):
        assert_same_graph(a, b)


def _write_extxyz(path, records, labels):
    frames = []
    for record, values in zip(records, labels):
        atoms = record.to_ase()
        atoms.info.update(id=record.id, **values)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def test_several_streamed_sources_merge_on_disk_as_in_memory(tmp_path, tiny_entries):
    records = _records(tiny_entries, 24)
    first = [{"Ef": r.labels["Ef"] if r.labels["Ef"] is not None else np.nan} for r in records[:16]]
    _write_extxyz(tmp_path / "a.extxyz", records[:16], first)
    second, moved = records[8:], records[12]  # 8..15 overlap: Eg combines with a's Ef
    second_labels = [{"Eg": 1.0 + 0.1 * k} for k in range(len(second))]
    conflicting = next(k for k in range(len(second)) if second[k].labels["Ef"] is not None and k != 4)
    second_labels[conflicting]["Ef"] = second[conflicting].labels["Ef"] + 0.5  # the first source's Ef is kept
    strained = CrystalRecord(moved.id, moved.cell * 1.01, moved.positions * 1.01, moved.numbers)
    second[4] = strained  # record 12 with another cell: kept apart as <id>@<source>
    _write_extxyz(tmp_path / "b.extxyz", second, second_labels)
    sources = lambda: [ExtXYZ(str(tmp_path / "a.extxyz")), ExtXYZ(str(tmp_path / "b.extxyz"))]  # noqa: E731
    dm = {s: MultiTaskDataModule(sources=sources(), tasks=["Ef", "Eg"], cutoff=4.5, storage=s,
                                 split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(tmp_path / s))
          for s in ("memory", "disk")}
    for module in dm.values():
        module.setup("fit")
    memory, disk = dm["memory"].report, dm["disk"].report
    assert disk["merge"] == memory["merge"] and disk["num_graphs"] == memory["num_graphs"] > 16
    assert memory["merge"]["merged"] and memory["merge"]["frame_mismatches"] and memory["merge"]["label_conflicts"]
    assert [s["labels"] for s in disk["sources"]] == [s["labels"] for s in memory["sources"]]
    assert dm["disk"].structure_ids == dm["memory"].structure_ids
    for a, b in zip(dm["memory"].dataset, dm["disk"].dataset):
        assert_same_graph(a, b)
    assert not list((tmp_path / "disk").glob("*.staging.sqlite"))  # removed after the build


def test_auto_storage_counts_extxyz_frames_before_loading_them(tmp_path, tiny_entries, monkeypatch):
    import equiprop.data.datamodule as datamodule_module

    records = _records(tiny_entries, 20)
    _write_extxyz(tmp_path / "a.extxyz", records, [{"Ef": r.labels["Ef"] if r.labels["Ef"] is not None else np.nan}
                                                  for r in records])
    assert ExtXYZ(str(tmp_path / "a.extxyz")).count() == 20
    for threshold, stored in ((19, True), (20, False)):  # above the threshold: disk, streamed; else memory
        monkeypatch.setattr(datamodule_module, "AUTO_DISK_STRUCTURES", threshold)
        dm = MultiTaskDataModule(sources=[ExtXYZ(str(tmp_path / "a.extxyz"))], tasks=["Ef"], cutoff=4.5,
                                 split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(tmp_path / f"auto{threshold}"))
        dm.setup("fit")
        assert isinstance(dm.dataset, StoredGraphs) is stored
        assert dm.report.get("storage") == ("disk" if stored else None)


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_prepare_data_builds_once_and_other_ranks_read_the_cache(tmp_path, storage):
    def module():
        return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef"], cutoff=4.5, storage=storage,
                                   split=RandomSplit(0.2, 0.2, seed=0), cache_dir=str(tmp_path))

    first, other = module(), module()
    first.prepare_data()  # Lightning: local rank 0, before the barrier
    assert first.dataset is None and first._prepared[1]["from_cache"] is False
    first.setup("fit")  # takes what prepare_data built: not built twice
    other.setup("fit")  # another rank, after the barrier: from the cache
    assert first.report["from_cache"] is False and other.report["from_cache"] is True
    assert first.structure_ids == other.structure_ids
    for a, b in zip(first.subsets["train"], other.subsets["train"]):
        assert_same_graph(a, b)
