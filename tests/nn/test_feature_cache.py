"""The feature cache streams rows from one SQLite file with bounded memory and never reads damaged bytes as
numbers: a row failing its checksum (which covers its key, dtype and shape too) or whose dtype and shape cannot
describe its bytes is deleted with a warning naming the file and structure, rows of the previous format are deleted
once with a count, an unreadable file is moved aside, and either way the structures are recomputed; a read-only
folder is read as it is, with new features kept in memory."""

import hashlib
import io
import multiprocessing
import os
import sqlite3
import warnings
import zlib

import numpy as np
import pytest
import torch

from equiprop.nn.feature_cache import FeatureCache, row_crc, structure_keys

NAMESPACE = {"encoder": "test", "weights": "0"}


def _flip(path, value: torch.Tensor):
    """Overwrite the stored numbers of ``value`` in the file with NaN bytes (a silent corruption: SQLite's pages stay
    valid, only the payload changes)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(value.numpy().tobytes())
    assert at >= 0
    nan = torch.full_like(value, float("nan")).numpy().tobytes()
    data[at:at + len(nan)] = nan
    path.write_bytes(bytes(data))


def _stored_start(path, key: str) -> torch.Tensor:
    """The first 8 stored numbers of a row, as stored (to find them in the file)."""
    dtype, payload = sqlite3.connect(path).execute("SELECT dtype, payload FROM features WHERE key = ?", (key,)).fetchone()
    return torch.from_numpy(np.frombuffer(payload, dtype=np.dtype(dtype))[:8].copy())


def _close(cache):  # checkpoint the WAL into the main file, as a finished process leaves it
    cache.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.connection.close()


def test_rows_round_trip_with_their_dtype_and_shape_and_memory_stays_bounded(tmp_path):
    values = {f"s{i}": torch.randn(5 + i, 7, dtype=torch.float64 if i % 2 else torch.float32) for i in range(40)}
    writer = FeatureCache(tmp_path, NAMESPACE, memory_limit=2_000)
    for i in range(0, 40, 8):  # one transaction per batch of 8
        writer.put({k: values[k] for k in list(values)[i:i + 8]})
    assert writer.memory_bytes <= 2_000 and len(writer.memory) < 40  # the oldest rows left memory, not the disk
    reader = FeatureCache(tmp_path, NAMESPACE, memory_limit=2_000)
    got = reader.get_many(list(values) + ["missing"])
    assert got[-1] is None and (reader.hits, reader.misses) == (40, 1)
    for (key, value), back in zip(values.items(), got):
        assert back.dtype == value.dtype and torch.equal(back, value), key
    assert reader.memory_bytes <= 2_000
    assert sqlite3.connect(reader.path).execute("SELECT count(*) FROM features").fetchone() == (40,)


def test_a_row_with_flipped_bytes_is_a_miss_with_a_warning_naming_it(tmp_path):
    value = torch.linspace(1.0, 2.0, 12).reshape(4, 3)
    writer = FeatureCache(tmp_path, NAMESPACE)
    writer.put({"a": value})
    writer.put({"b": value + 1})
    _close(writer)
    _flip(writer.path, value)
    reader = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match=f"{writer.path}: the row of structure a fails its checksum.*deleted"):
        assert reader.get("a") is None  # never NaN rows
    assert torch.equal(reader.get("b"), value + 1)  # the other row is intact
    reader.put({"a": value})  # recomputed by its encoder, cached again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), value)


def test_an_unreadable_file_is_moved_aside_and_the_cache_starts_again(tmp_path):
    cache = FeatureCache(tmp_path, NAMESPACE)
    cache.put({"a": torch.ones(3)})
    _close(cache)
    cache.path.write_bytes(b"this is not an SQLite file" * 100)
    reader = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match=f"feature cache {cache.path} is unreadable.*moved to"):
        assert reader.get("a") is None
    assert list(cache.directory.glob("features.sqlite.corrupt-*"))
    reader.put({"a": torch.zeros(3)})
    assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), torch.zeros(3))


def _legacy_shard(directory, entries) -> bytes:
    buffer = io.BytesIO()
    torch.save(entries, buffer)
    data = buffer.getvalue()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{hashlib.sha256(data).hexdigest()}.pt").write_bytes(data)
    return data


def test_shards_of_the_previous_format_are_verified_and_imported(tmp_path):
    directory = FeatureCache(tmp_path, NAMESPACE).directory
    _legacy_shard(directory, {"a": torch.arange(6.0).reshape(2, 3)})
    bad = _legacy_shard(directory, {"b": torch.ones(2)})
    damaged = directory / f"{hashlib.sha256(bad).hexdigest()}.pt"
    damaged.write_bytes(bad[:50])  # a truncated copy: its bytes no longer match its name
    with pytest.warns(UserWarning, match=f"shard {damaged} is corrupted.*not imported"):
        reader = FeatureCache(tmp_path, NAMESPACE)
        assert torch.equal(reader.get("a"), torch.arange(6.0).reshape(2, 3))
    assert reader.get("b") is None and not list(directory.glob("*.pt"))  # imported once, shards gone


def _write_many(root, start):
    cache = FeatureCache(root, NAMESPACE)
    for i in range(start, start + 50):
        cache.put({f"k{i}": torch.full((3,), float(i))})


def test_two_processes_writing_at_once_keep_every_row(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(tmp_path, s)) for s in (0, 25)]  # keys 25-49 overlap
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [w.exitcode for w in workers] == [0, 0]
    rows = FeatureCache(tmp_path, NAMESPACE).get_many([f"k{i}" for i in range(75)])
    assert all(torch.equal(r, torch.full((3,), float(i))) for i, r in enumerate(rows))


@pytest.mark.integration  # SevenNet featurisation of two small crystals
def test_the_foundation_encoder_recomputes_a_corrupted_row(tiny_entries, tmp_path):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")
    from pymatgen.core import Structure
    from torch_geometric.data import Batch

    from equiprop.data.graph import record_to_graph
    from equiprop.data.record import from_pymatgen
    from equiprop.nn import FoundationEncoder

    records = [from_pymatgen(Structure.from_dict(e["structure"]), f"tiny-{i}") for i, e in enumerate(tiny_entries[:2])]
    batch = Batch.from_data_list([record_to_graph(r, {}, 5.0) for r in records])
    with torch.no_grad():
        first = FoundationEncoder(cache_dir=str(tmp_path))
        original = first(batch)  # frozen: the whole output is cached
        cache = first.feature_cache()
        _close(cache)
        for key in structure_keys(batch):
            _flip(cache.path, _stored_start(cache.path, key))
        again = FoundationEncoder(cache_dir=str(tmp_path))  # a new process reading the damaged cache
        with pytest.warns(UserWarning, match="fails its checksum"):
            features = again(batch)
    assert again.feature_cache().misses == 2 and bool(torch.isfinite(features).all())
    assert torch.equal(features, original)


def test_a_used_cache_copies_and_pickles_and_the_copy_reads_the_file(tmp_path):
    import copy
    import pickle

    cache = FeatureCache(tmp_path, NAMESPACE, memory_limit=0)  # nothing kept in memory: reads go to the file
    cache.put({"a": torch.arange(4.0)})
    assert torch.equal(cache.get("a"), torch.arange(4.0))  # the connection is open
    for clone in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):  # e.g. an EMA copy, a spawned rank
        assert torch.equal(clone.get("a"), torch.arange(4.0))
        clone.put({"b": torch.ones(2)})
    assert torch.equal(cache.get("b"), torch.ones(2))


# -- corruption battery: every column of a row, old rows, read-only folders ------------------------------------------
def _one_row_cache(tmp_path, value):
    writer = FeatureCache(tmp_path, NAMESPACE)
    writer.put({"a": value, "b": value + 1})
    _close(writer)
    return writer.path


def _edit(path, statement, params=()):
    with sqlite3.connect(path) as connection:
        connection.execute(statement, params)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # into the main file, as a finished process leaves it
    connection.close()


def _recomputed_crc(path, **columns):
    """A hand edit that also recomputes the CRC: the row is consistent, so only the decode guard stands."""
    key, dtype, shape, _, payload = sqlite3.connect(path).execute("SELECT * FROM features WHERE key = 'a'").fetchone()
    row = {"key": key, "dtype": dtype, "shape": shape, "payload": payload, **columns}
    crc = row_crc(row["key"], row["dtype"], row["shape"], row["payload"])
    _edit(path, "UPDATE features SET dtype = ?, shape = ?, payload = ?, crc = ? WHERE key = 'a'",
          (row["dtype"], row["shape"], row["payload"], crc))


COLUMN_DAMAGE = {  # (edit, what the warning says)
    "dtype float64": ("UPDATE features SET dtype = '<f8' WHERE key = 'a'", "fails its checksum"),
    "dtype int32": ("UPDATE features SET dtype = '<i4' WHERE key = 'a'", "fails its checksum"),
    "dtype object": ("UPDATE features SET dtype = '|O' WHERE key = 'a'", "fails its checksum"),
    "dtype nonsense": ("UPDATE features SET dtype = 'garbage' WHERE key = 'a'", "fails its checksum"),
    "dtype null": ("UPDATE features SET dtype = NULL WHERE key = 'a'", "fails its checksum"),
    "shape transposed": ("UPDATE features SET shape = '[3, 4]' WHERE key = 'a'", "fails its checksum"),
    "shape too large": ("UPDATE features SET shape = '[5, 3]' WHERE key = 'a'", "fails its checksum"),
    "shape not JSON": ("UPDATE features SET shape = '[4,' WHERE key = 'a'", "fails its checksum"),
    "crc text": ("UPDATE features SET crc = 'x' WHERE key = 'a'", "fails its checksum"),
    "payload text": ("UPDATE features SET payload = 'text' WHERE key = 'a'", "fails its checksum"),
    "payload truncated": ("UPDATE features SET payload = substr(payload, 1, 20) WHERE key = 'a'", "fails its checksum"),
    "key of another row": ("UPDATE features SET key = 'c' WHERE key = 'a'", "fails its checksum"),
    "object dtype, CRC recomputed": ({"dtype": "|O"}, "has an impossible dtype or shape"),
    "float64 over float32 bytes, CRC recomputed": ({"dtype": "<f8"}, "has an impossible dtype or shape"),
    "shape too large, CRC recomputed": ({"shape": "[5, 3]"}, "has an impossible dtype or shape"),
    "negative shape, CRC recomputed": ({"shape": "[-4, -3]"}, "has an impossible dtype or shape"),
    "shape not JSON, CRC recomputed": ({"shape": "[4,"}, "has an impossible dtype or shape"),
    "shape not a list, CRC recomputed": ({"shape": "12"}, "has an impossible dtype or shape"),
}


@pytest.mark.parametrize("damage", list(COLUMN_DAMAGE))
def test_a_changed_column_is_a_recomputed_row_never_a_traceback(tmp_path, damage):
    value = torch.linspace(1.0, 2.0, 12).reshape(4, 3)  # float32
    path = _one_row_cache(tmp_path, value)
    edit, expect = COLUMN_DAMAGE[damage]
    _recomputed_crc(path, **edit) if isinstance(edit, dict) else _edit(path, edit)
    key = "c" if damage == "key of another row" else "a"
    reader = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match=f"{path}: the row of structure {key} {expect}.*deleted; it is recomputed"):
        assert reader.get(key) is None
    assert torch.equal(reader.get("b"), value + 1)  # the other row is intact
    assert sqlite3.connect(path).execute("SELECT count(*) FROM features WHERE key = ?", (key,)).fetchone() == (0,)
    reader.put({"a": value})  # recomputed by its encoder, cached again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = FeatureCache(tmp_path, NAMESPACE).get("a")
    assert back.dtype == value.dtype and torch.equal(back, value)


def test_rows_of_the_previous_format_are_deleted_once_with_a_count(tmp_path):
    """Format 1 rows (a CRC of the bytes only: their dtype and shape unchecked) are recomputed, not trusted."""
    directory = FeatureCache(tmp_path, NAMESPACE).directory
    directory.mkdir(parents=True)
    with sqlite3.connect(directory / "features.sqlite") as old:
        old.execute("CREATE TABLE features (key TEXT PRIMARY KEY, dtype TEXT, shape TEXT, crc INTEGER, payload BLOB)")
        for key in ("a", "b"):
            payload = torch.ones(3).numpy().tobytes()
            old.execute("INSERT INTO features VALUES (?, '<f4', '[3]', ?, ?)", (key, zlib.crc32(payload), payload))
    old.close()
    with pytest.warns(UserWarning, match="2 rows of an older format .dtype and shape outside their checksum. deleted"):
        reader = FeatureCache(tmp_path, NAMESPACE)
        assert reader.get_many(["a", "b"]) == [None, None]
    reader.put({"a": torch.zeros(3)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # upgraded once: no second warning, the new row reads back
        assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), torch.zeros(3))


def test_a_truncated_file_is_moved_aside_and_recomputed(tmp_path):
    path = _one_row_cache(tmp_path, torch.arange(600.0))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    reader = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match=f"feature cache {path} is unreadable.*moved to"):
        assert reader.get("a") is None
    reader.put({"a": torch.arange(600.0)})
    assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), torch.arange(600.0))


def test_a_read_only_folder_is_read_and_new_features_stay_in_memory(tmp_path, read_only):
    value = torch.linspace(1.0, 2.0, 12).reshape(4, 3)
    path = _one_row_cache(tmp_path, value)
    with read_only(tmp_path):
        reader = FeatureCache(tmp_path, NAMESPACE)
        with pytest.warns(UserWarning, match=f"feature cache {path} is not writable.*kept in memory only"):
            assert torch.equal(reader.get("a"), value)  # intact rows still read (and checked)
        reader.put({"new": torch.ones(2)})
        assert torch.equal(reader.get("new"), torch.ones(2))
    check = FeatureCache(tmp_path, NAMESPACE)
    assert check.get("new") is None  # nothing was written
    _close(check)
    _edit(path, "UPDATE features SET dtype = '<f8' WHERE key = 'a'")
    with read_only(tmp_path), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert FeatureCache(tmp_path, NAMESPACE).get("a") is None  # damaged, and cannot be deleted: a miss
    assert any("the row of structure a fails its checksum" in str(w.message) for w in caught)
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only(empty), pytest.warns(UserWarning, match="is not writable.*kept in memory only"):
        fresh = FeatureCache(empty, NAMESPACE)  # no folder can be made there: memory only, no traceback
        fresh.put({"x": torch.ones(3)})
        assert torch.equal(fresh.get("x"), torch.ones(3)) and fresh.get("y") is None


def test_a_read_only_folder_with_a_live_wal_is_read_without_crashing(tmp_path, read_only):
    """A cache copied (or frozen) while in use holds ``-wal`` and ``-shm`` files: SQLite must not map a read-only
    WAL index (a bus error, not even a traceback); the file is read as it is instead."""
    writer = FeatureCache(tmp_path, NAMESPACE)
    writer.put({"a": torch.ones(4)})
    writer.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.put({"b": torch.zeros(4)})  # still in the WAL, connection open
    assert (writer.directory / "features.sqlite-shm").exists()
    with read_only(tmp_path), pytest.warns(UserWarning, match="is not writable.*-shm.*read-only"):
        reader = FeatureCache(tmp_path, NAMESPACE)
        assert torch.equal(reader.get("a"), torch.ones(4))  # the checkpointed row; "b" is recomputed
    _close(writer)


def test_writing_first_to_a_damaged_file_moves_it_aside(tmp_path):
    cache = FeatureCache(tmp_path, NAMESPACE)
    cache.put({"a": torch.ones(3)})
    _close(cache)
    cache.path.write_bytes(b"not SQLite" * 300)
    writer = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match="is unreadable.*moved to"):
        writer.put({"a": torch.zeros(3)})  # a put before any get: no traceback either
    assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), torch.zeros(3))
