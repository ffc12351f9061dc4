"""Per-structure cache of frozen encoder features, content-keyed like the graph cache.

A frozen encoder (or the frozen first layers of a partly fine-tuned one) gives the same per-atom features for a
structure every epoch: they are computed once, kept in memory and written to disk, so later epochs, runs, folds and
predictions only look them up. The key of a structure hashes what the features depend on: atomic numbers,
positions, cell, periodicity and the graph's edges with their image shifts (so another cutoff or neighbour cap is
another key). The cache folder is named by a hash of the encoder's frozen state: its class, its configuration, where
the cache sits in the network, and a digest of the frozen weights, so a changed model or weight is a cache miss.

Files are ``torch.save`` shards of ``{key: tensor}`` read with ``weights_only=True`` (nothing is unpickled) and
written atomically (a killed run leaves no half-written shard). A shard is named by the sha256 of its bytes, so name
and checksum arrive in one rename: a shard whose bytes no longer match its name (a flipped bit, a truncated copy) or
that does not load as ``{key: tensor}`` is never read as numbers. It is deleted with a warning naming it, and its
structures are cache misses that the encoder recomputes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import warnings
from pathlib import Path

import torch

from equiprop.data import keys

CACHE_FORMAT_VERSION = 2  # 2: shards named by the sha256 of their bytes, checked on read
DEFAULT_FEATURE_CACHE = "~/.cache/equiprop/features"


def default_cache_dir() -> Path:
    base = os.environ.get("EQUIPROP_CACHE")
    return (Path(base) / "features" if base else Path(DEFAULT_FEATURE_CACHE)).expanduser()


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def structure_keys(data) -> list[str]:
    """One content key per graph of a PyG ``Batch`` (or of a single ``Data``)."""
    num_graphs = int(getattr(data, "num_graphs", 1) or 1)
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long)
    node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch, minlength=num_graphs).cumsum(0)])
    edge_graph = batch[data[keys.EDGE_INDEX][0]]
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                          torch.bincount(edge_graph, minlength=num_graphs).cumsum(0)])
    numbers, positions = data[keys.ATOMIC_NUMBERS].cpu(), data[keys.POSITIONS].detach().double().cpu()
    cells, pbc = data[keys.CELL].detach().double().cpu(), data[keys.PBC].cpu()
    edges, shifts = data[keys.EDGE_INDEX].cpu(), data[keys.EDGE_CELL_SHIFT].detach().double().cpu()
    result = []
    for g in range(num_graphs):
        n0, n1, e0, e1 = int(node_ptr[g]), int(node_ptr[g + 1]), int(edge_ptr[g]), int(edge_ptr[g + 1])
        h = hashlib.sha256()
        for part in (numbers[n0:n1], positions[n0:n1], cells[g], pbc[g], edges[:, e0:e1] - n0, shifts[e0:e1]):
            h.update(part.contiguous().numpy().tobytes())
        result.append(h.hexdigest()[:32])
    return result


class FeatureCache:
    """Per-atom feature tensors by structure key, in memory and on disk under ``root/<namespace hash>/``."""

    def __init__(self, root: str | Path | None, namespace: dict):
        self.namespace = {"version": CACHE_FORMAT_VERSION, **namespace}
        digest = hashlib.sha256(json.dumps(self.namespace, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.directory = (Path(root).expanduser() if root else default_cache_dir()) / digest
        self.memory: dict[str, torch.Tensor] = {}
        self.loaded = False
        self.hits = self.misses = 0

    def _load(self) -> None:
        self.loaded = True
        if not self.directory.exists():
            return
        for shard in sorted(self.directory.glob("*.pt")):
            entries = read_shard(shard)
            if entries is not None:
                self.memory.update(entries)

    def get(self, key: str) -> torch.Tensor | None:
        if not self.loaded:
            self._load()
        value = self.memory.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, entries: dict[str, torch.Tensor]) -> None:
        """Add entries in memory and write them as one new shard (atomic rename; concurrent writers never clash)."""
        if not entries:
            return
        entries = {k: v.detach().cpu().contiguous() for k, v in entries.items()}
        self.memory.update(entries)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "namespace.json").exists():
            (self.directory / "namespace.json").write_text(json.dumps(self.namespace, indent=1, default=str))
        buffer = io.BytesIO()
        torch.save(entries, buffer)
        data = buffer.getvalue()
        tmp = self.directory / f".{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.directory / f"{hashlib.sha256(data).hexdigest()}.pt")


def read_shard(shard: Path) -> dict[str, torch.Tensor] | None:
    """The shard's ``{key: tensor}``, or None (after deleting it with a warning) if it fails its checksum or to load."""
    data = shard.read_bytes()
    problem = None
    if hashlib.sha256(data).hexdigest() != shard.stem:
        problem = "its bytes do not match the sha256 in its name"
    else:
        try:
            buffer = io.BytesIO(data)
            entries = torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable shard is a cache miss, never a crash
            problem = f"it does not load ({type(err).__name__})"
        else:
            if not (isinstance(entries, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in entries.items())):
                problem = "it does not hold {key: tensor}"
    if problem is None:
        return entries
    try:
        shard.unlink(missing_ok=True)
        action = "deleted"
    except OSError as err:  # a read-only cache: still never read
        action = f"skipped (not deleted: {err.strerror})"
    warnings.warn(f"feature cache shard {shard} is corrupted ({problem}): {action}; its structures are recomputed")
    return None
