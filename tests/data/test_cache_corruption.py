"""Corruption battery over the graph caches equiprop reads back: the in-memory cache (``<key>.pt`` and its report)
and the SQLite graph store (``<key>.sqlite`` and its report). Real files, damaged as a disk, a copy or a hand edit
would: every case is either a one-line DataError/ConfigError naming the file and the problem, or a rebuild with a
warning whose graphs, labels and splits equal a fresh build's. Never numbers from damaged bytes."""

import json
import os
import shutil
import sqlite3
import traceback

import numpy as np
import pytest
import torch

from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.graph_store import INDEX_COLUMNS, GraphStore, build_store, row_crc
from equiprop.data.stored_graphs import StoredGraphs
from equiprop.data.record import from_pymatgen_dict
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import GroupedSplit
from equiprop.data.tasks import resolve_tasks

TASKS = ["Ef", "Eg", "eps_electronic"]
GRAPH = {"cutoff": 4.5, "max_neighbors": None, "min_neighbors": 1, "merge_cell_tol": 1e-3}


def module(cache, storage: str) -> MultiTaskDataModule:
    """The tiny dataset, split by chemical system (so a changed chemical system would move crystals)."""
    return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5, storage=storage,
                               split=GroupedSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(cache))


def outcome(dm: MultiTaskDataModule) -> dict:
    """Everything a fit takes from the data: every graph (tensors by key), the split's structure ids, the
    normalisation and the training statistics."""
    graphs = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in g.to_dict().items()} for g in dm.dataset]
    return {"graphs": graphs, "splits": {n: [g[keys.STRUCTURE_ID] for g in s] for n, s in dm.subsets.items()},
            "normalization": {n: s.to_dict() for n, s in dm.normalization.items()},
            "statistics": dm.train_statistics, "label_counts": dm.report["label_counts"]}


def assert_same(a: dict, b: dict) -> None:
    assert a["splits"] == b["splits"] and a["normalization"] == b["normalization"]
    assert a["statistics"] == b["statistics"] and a["label_counts"] == b["label_counts"]
    assert len(a["graphs"]) == len(b["graphs"])
    for x, y in zip(a["graphs"], b["graphs"]):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def one_line(err: Exception, *words: str) -> None:
    """A message the CLI prints as one line, naming what it must (file, structure, problem)."""
    message = str(err)
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert str(word) in message, (word, message)
    assert err.__cause__ is None or isinstance(err.__cause__, (DataError, ConfigError)), "a raw exception leaked"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """What a fresh build gives, memory and disk (the two are identical: tests/data/test_graph_store.py)."""
    result = {}
    for storage in ("memory", "disk"):
        dm = module(tmp_path_factory.mktemp(f"fresh-{storage}"), storage)
        dm.setup("fit")
        result[storage] = outcome(dm)
    return result


def built(tmp_path, storage: str):
    """A cache folder holding a complete cache, and its files (graphs file, report)."""
    dm = module(tmp_path, storage)
    dm.setup("fit")
    path = dm.report["cache_path"]
    report = path + ".json" if storage == "disk" else path[:-len(".pt")] + ".json"
    return tmp_path, path, report


def reload(cache, storage: str, fresh: dict, expect: str) -> dict:
    """Load the damaged cache: a warning matching ``expect``, a rebuild, and the fresh build's results."""
    dm = module(cache, storage)
    with pytest.warns(UserWarning, match=expect):
        dm.setup("fit")
    assert dm.report["from_cache"] is False and dm.report["rebuilt"]
    assert_same(outcome(dm), fresh[storage])
    again = module(cache, storage)  # the rebuilt cache is whole: read back without a warning
    again.setup("fit")
    assert again.report["from_cache"] is True and "rebuilt" not in again.report
    return dm.report


# -- the in-memory cache ----------------------------------------------------------------------------------------------
def test_low_mantissa_bits_flipped_in_the_memory_cache_are_rebuilt(tmp_path, fresh):
    cache, path, _ = built(tmp_path, "memory")
    data, _ = torch.load(path, weights_only=True)
    positions = data[keys.POSITIONS].numpy()
    raw = bytearray(open(path, "rb").read())
    at = bytes(raw).find(positions.tobytes())
    assert at >= 0
    flipped = 0
    for k in range(0, positions.size, 100):  # the reporter's trial: one low mantissa bit in every 100th number
        raw[at + k * positions.itemsize] ^= 1
        flipped += 1
    open(path, "wb").write(bytes(raw))
    assert flipped > 1
    report = reload(cache, "memory", fresh, "fails its checksum.*rebuilt")
    assert path in report["rebuilt"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "report bad JSON", "report edited", "report without digest",
                                    "report deleted", "other key's graphs"])
def test_a_damaged_memory_cache_or_report_is_rebuilt(tmp_path, fresh, damage):
    cache, path, report = built(tmp_path, "memory")
    content = open(report).read()
    if damage == "truncated":
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
    elif damage == "empty":
        open(path, "wb").close()
    elif damage == "report bad JSON":
        open(report, "w").write(content[:-20] + "{{not json")
    elif damage == "report edited":  # valid JSON, another number
        open(report, "w").write(content.replace('"num_graphs": ', '"num_graphs": 1'))
    elif damage == "report without digest":  # as an older equiprop wrote it
        stored = json.loads(content)
        stored.pop("digest")
        open(report, "w").write(json.dumps(stored))
    elif damage == "report deleted":
        os.unlink(report)
    else:  # a valid graph file of another dataset under this key
        other = module(tmp_path / "other", "memory")
        other.tasks = resolve_tasks(["Ef"])
        _, other_report = other.load_graphs()
        shutil.copy(other_report["cache_path"], path)
    reload(cache, "memory", fresh, f"{os.path.basename(path) if 'report' not in damage else 'report'}.*rebuilt")


def test_a_memory_cache_in_a_read_only_folder(tmp_path, fresh, read_only):
    cache, path, _ = built(tmp_path, "memory")
    with read_only(cache):
        dm = module(cache, "memory")  # intact: read as it is
        dm.setup("fit")
        assert dm.report["from_cache"] and outcome(dm)["splits"] == fresh["memory"]["splits"]
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x10
    open(path, "wb").write(bytes(raw))
    with read_only(cache), pytest.raises(DataError) as err:  # damaged, and no room for the rebuild
        module(cache, "memory").setup("fit")
    one_line(err.value, path, "fails its checksum", "not writable", "EQUIPROP_CACHE")
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only(empty), pytest.raises(ConfigError) as err:
        module(empty, "memory").setup("fit")
    one_line(err.value, empty, "not writable", "EQUIPROP_CACHE")


# -- the graph store ----------------------------------------------------------------------------------------------
def sql(path, statement: str, params=()) -> None:
    with sqlite3.connect(path) as connection:
        if callable(statement):
            statement(connection)
        else:
            for one in statement.split(";"):
                connection.execute(one, params)
    connection.close()


def crc_recomputed(connection) -> None:
    """A hand edit that also recomputes the row's CRC: left to the shard and store digests."""
    row = connection.execute(f"SELECT {INDEX_COLUMNS}, payload FROM graphs WHERE id = 4").fetchone()
    crc = row_crc(row[0], row[1], "Zz", row[3], row[4], row[6])
    connection.execute("UPDATE graphs SET chemical_system = 'Zz', crc = ? WHERE id = 4", (crc,))


STORE_DAMAGE = {  # the reporter's edits and their kin, each with what the warning must say
    "chemical system": ("UPDATE graphs SET chemical_system = 'Zz' WHERE id % 7 = 0", "fails its checksum"),
    "rows deleted": ("DELETE FROM graphs WHERE id BETWEEN 10 AND 19", "holds 42 graphs but 52 were written"),
    "row added": ("INSERT INTO graphs SELECT id + 1000, structure_id, chemical_system, num_nodes, num_edges, crc, "
                  "payload FROM graphs WHERE id = 3", "holds 53 graphs"),
    "num_nodes off by one": ("UPDATE graphs SET num_nodes = num_nodes + 1 WHERE id = 5", "(row 5) fails its checksum"),
    "num_edges": ("UPDATE graphs SET num_edges = 0 WHERE id = 6", "(row 6) fails its checksum"),
    "structure id": ("UPDATE graphs SET structure_id = 'mp-1' WHERE id = 8", "(row 8) fails its checksum"),
    "ids swapped": ("UPDATE graphs SET id = -1 WHERE id = 1; UPDATE graphs SET id = 1 WHERE id = 2; "
                    "UPDATE graphs SET id = 2 WHERE id = -1", "(row 1) fails its checksum"),
    "crc column": ("UPDATE graphs SET crc = crc + 1 WHERE id = 4", "(row 4) fails its checksum"),
    "crc recomputed by hand": (crc_recomputed, "shard 0 does not match its recorded digest"),
    "count in meta": ("UPDATE meta SET value = '57' WHERE name = 'count'", "holds 52 graphs but 57"),
    "meta not JSON": ("UPDATE meta SET value = '{{' WHERE name = 'digest'", "'digest' is not JSON"),
    "older format": ("DELETE FROM meta WHERE name = 'format'", "format None, not 2"),
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_a_changed_column_or_row_of_the_graph_store_is_rebuilt(tmp_path, fresh, damage):
    cache, path, _ = built(tmp_path, "disk")
    statement, expect = STORE_DAMAGE[damage]
    sql(path, statement)
    reload(cache, "disk", fresh, f"{path}: .*{expect.replace('(', '.').replace(')', '.')}.*rebuilt")
    assert not list(cache.glob("*.rebuild.sqlite"))  # moved over the damaged store


def test_the_same_changes_through_the_store_api_are_one_line_errors(tmp_path):
    _, path, _ = built(tmp_path, "disk")
    store = GraphStore(path)
    index = ids, names, *_ = store.index()
    sql(path, "UPDATE graphs SET num_nodes = num_nodes + 1 WHERE id = 5")
    with pytest.raises(DataError) as err:
        store.index()
    one_line(err.value, path, names[5], "fails its checksum")
    with pytest.raises(DataError) as err:  # a reader that skips the index is stopped at the row itself
        StoredGraphs(store, resolve_tasks(TASKS), index)[5]
    one_line(err.value, path, names[5], "fails its checksum")
    sql(path, "UPDATE graphs SET num_nodes = num_nodes - 1 WHERE id = 5")
    sql(path, "DELETE FROM graphs WHERE id BETWEEN 10 AND 19")
    with pytest.raises(DataError) as err:
        store.index()
    one_line(err.value, path, "holds 42 graphs but 52 were written")


@pytest.mark.parametrize("damage", ["payload byte", "payload truncated", "payload not bytes"])
def test_a_damaged_payload_found_by_setup_is_rebuilt(tmp_path, fresh, damage):
    cache, path, _ = built(tmp_path, "disk")
    payload = bytearray(sqlite3.connect(path).execute("SELECT payload FROM graphs WHERE id = 9").fetchone()[0])
    value = {"payload byte": bytes(payload[:40]) + bytes([payload[40] ^ 1]) + bytes(payload[41:]),
             "payload truncated": bytes(payload[:-8]), "payload not bytes": "text"}[damage]
    sql(path, "UPDATE graphs SET payload = ? WHERE id = 9", (value,))  # the CRC column untouched
    names = GraphStore(path).index()[1]
    reload(cache, "disk", fresh, f"{names[9]} .row 9. fails its checksum.*rebuilt")


@pytest.mark.parametrize("damage", ["truncated", "not SQLite", "report bad JSON", "report edited", "report deleted"])
def test_a_damaged_store_file_or_report_is_rebuilt(tmp_path, fresh, damage):
    cache, path, report = built(tmp_path, "disk")
    if damage == "truncated":
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
    elif damage == "not SQLite":
        open(path, "wb").write(b"not a database" * 500)
    elif damage == "report bad JSON":
        open(report, "w").write("{\"sources\": [")
    elif damage == "report edited":
        open(report, "w").write(open(report).read().replace('"num_edges": ', '"num_edges": 9'))
    else:
        os.unlink(report)
    rebuilt = reload(cache, "disk", fresh, "rebuilt")
    if damage.startswith("report"):  # the store was whole: its shards were verified and kept
        assert rebuilt["build"] == {"shards_built": 0, "shards_resumed": 1}


def test_a_store_in_a_read_only_folder(tmp_path, fresh, read_only):
    cache, path, _ = built(tmp_path, "disk")
    with read_only(cache):
        dm = module(cache, "disk")  # intact: read as it is
        dm.setup("fit")
        assert dm.report["from_cache"] and outcome(dm)["splits"] == fresh["disk"]["splits"]
    sql(path, "DELETE FROM graphs WHERE id = 3")
    with read_only(cache), pytest.raises(DataError) as err:
        module(cache, "disk").setup("fit")
    one_line(err.value, path, "holds 51 graphs", "not writable", "EQUIPROP_CACHE")
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only(empty), pytest.raises(ConfigError) as err:
        module(empty, "disk").setup("fit")
    one_line(err.value, empty, "not writable", "EQUIPROP_CACHE")
    assert "delete" not in str(err.value)
    with read_only(empty), pytest.raises(ConfigError) as err:  # the store API: not "delete it and rebuild"
        build_store(GraphStore(empty / "g.sqlite"), iter([]), {}, GRAPH, workers=1, progress=False)
    one_line(err.value, empty, "not writable", "EQUIPROP_CACHE")
    assert "delete" not in str(err.value)


def test_a_damaged_shard_of_a_killed_build_is_rebuilt_on_resume(tmp_path, tiny_entries):
    tasks = resolve_tasks(["Ef"])
    records = [from_pymatgen_dict(e["structure"], e["material_id"], "tiny", {"Ef": e.get("Ef")})
               for e in tiny_entries[:30]]

    def killed_after(n):
        for i, record in enumerate(records):
            if i == n:
                raise KeyboardInterrupt
            yield record

    store = GraphStore(tmp_path / "g.sqlite")
    with pytest.raises(KeyboardInterrupt):
        build_store(store, killed_after(25), tasks, GRAPH, shard_size=10, workers=1, progress=False)
    sql(store.path, "UPDATE graphs SET chemical_system = 'Zz' WHERE id = 12")  # inside finished shard 1
    with pytest.warns(UserWarning, match="1 finished shard.*shard 1.*rebuilt"):
        result = build_store(GraphStore(store.path), iter(records), tasks, GRAPH, shard_size=10, workers=1,
                             progress=False)
    assert (result["shards_resumed"], result["shards_built"]) == (1, 2)
    resumed = GraphStore(store.path)
    graphs = StoredGraphs(resumed, tasks, resumed.index())
    for graph, record in zip(graphs, records):
        expected = record_to_graph(record, tasks, 4.5)
        assert graph[keys.CHEMICAL_SYSTEM] == expected[keys.CHEMICAL_SYSTEM]
        assert torch.equal(graph[keys.POSITIONS], expected[keys.POSITIONS])
    assert len(graphs) == 30 and np.array_equal(resumed.index()[0], np.arange(30))


def test_no_traceback_text_reaches_the_user_for_any_store_damage(tmp_path):
    """Whatever the damage, what escapes the store API is a DataError or ConfigError (whose text the CLI prints)."""
    _, path, _ = built(tmp_path, "disk")
    original = open(path, "rb").read()
    for cut in (100, 1000, 4096, 20000):
        open(path, "wb").write(original[:cut])
        try:
            GraphStore(path).index()
        except (DataError, ConfigError) as err:
            one_line(err, path)
        except Exception:  # noqa: BLE001
            pytest.fail(f"truncated at {cut}: {traceback.format_exc()}")
