"""The feature cache never reads a damaged shard as numbers: a shard whose bytes do not match the sha256 in its name,
or that does not load, is deleted with a warning naming it, and its structures are recomputed."""

import hashlib
import warnings

import numpy as np
import pytest
import torch

from equiprop.nn.feature_cache import FeatureCache

NAMESPACE = {"encoder": "test", "weights": "0"}


def _flip(shard, value: torch.Tensor):
    """Overwrite the stored numbers of ``value`` in ``shard`` with NaN bytes (a silent corruption: the zip stays valid)."""
    data = bytearray(shard.read_bytes())
    at = bytes(data).find(value.numpy().tobytes())
    assert at >= 0
    nan = torch.full_like(value, float("nan")).numpy().tobytes()
    data[at:at + len(nan)] = nan
    shard.write_bytes(bytes(data))


def test_shards_are_named_by_the_sha256_of_their_bytes(tmp_path):
    FeatureCache(tmp_path, NAMESPACE).put({"a": torch.arange(6.0).reshape(2, 3)})
    (shard,) = tmp_path.glob("*/*.pt")
    assert shard.stem == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), torch.arange(6.0).reshape(2, 3))


def test_a_shard_with_flipped_bytes_is_a_miss_with_a_warning_naming_it(tmp_path):
    value = torch.linspace(1.0, 2.0, 12).reshape(4, 3)
    FeatureCache(tmp_path, NAMESPACE).put({"a": value})
    FeatureCache(tmp_path, NAMESPACE).put({"b": value + 1})
    bad = next(p for p in tmp_path.glob("*/*.pt") if "a" in torch.load(p, weights_only=True))
    _flip(bad, value)
    reader = FeatureCache(tmp_path, NAMESPACE)
    with pytest.warns(UserWarning, match=f"shard {bad} is corrupted.*do not match the sha256.*deleted"):
        assert reader.get("a") is None  # never NaN rows
    assert torch.equal(reader.get("b"), value + 1)  # the other shard is intact
    assert not bad.exists()
    reader.put({"a": value})  # recomputed by its encoder, cached again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(FeatureCache(tmp_path, NAMESPACE).get("a"), value)


def test_a_truncated_or_foreign_shard_is_a_miss_with_a_warning(tmp_path):
    cache = FeatureCache(tmp_path, NAMESPACE)
    cache.put({"a": torch.ones(3)})
    (shard,) = cache.directory.glob("*.pt")
    shard.write_bytes(shard.read_bytes()[:100])  # a truncated copy
    data = b"not a torch file"
    foreign = cache.directory / f"{hashlib.sha256(data).hexdigest()}.pt"  # checksum right, content wrong
    foreign.write_bytes(data)
    with pytest.warns(UserWarning) as caught:
        assert FeatureCache(tmp_path, NAMESPACE).get("a") is None
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and all("is corrupted" in m for m in messages)
    assert any(str(shard) in m for m in messages) and any(f"{foreign}" in m and "does not load" in m for m in messages)


@pytest.mark.integration  # SevenNet featurisation of two small crystals
def test_the_foundation_encoder_recomputes_a_corrupted_shard(tiny_entries, tmp_path):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")
    from pymatgen.core import Structure
    from torch_geometric.data import Batch

    from equiprop.data.graph import record_to_graph
    from equiprop.data.record import from_pymatgen
    from equiprop.nn import FoundationEncoder

    records = [from_pymatgen(Structure.from_dict(e["structure"]), f"tiny-{i}") for i, e in enumerate(tiny_entries[:2])]
    batch = Batch.from_data_list([record_to_graph(r, {}, 5.0) for r in records])
    with torch.no_grad():
        original = FoundationEncoder(cache_dir=str(tmp_path))(batch)  # frozen: the whole output is cached
        (shard,) = tmp_path.glob("*/*.pt")
        _flip(shard, original[:2])
        again = FoundationEncoder(cache_dir=str(tmp_path))  # a new process reading the damaged cache
        with pytest.warns(UserWarning, match=f"shard {shard} is corrupted"):
            features = again(batch)
    assert again.feature_cache().misses == 2 and bool(torch.isfinite(features).all())
    assert torch.equal(features, original)
    np.testing.assert_array_equal([p.stem for p in tmp_path.glob("*/*.pt")],
                                  [hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*/*.pt")])
