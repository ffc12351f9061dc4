"""One screening stage: each DataLoader worker reads a chunk of input items, builds batched graphs and predicts them;
the main process writes the chunk's rows (one file per chunk, atomically) in chunk order.

Inference runs in the workers (one torch thread each) rather than in the main process: on a machine with few cores
a main process predicting while the workers parse would compete with them for the same cores, while whole chunks
per worker keep every core busy with no hand-over of graphs between processes.

Per chunk, in the worker, the predictor does what it does for ``equiprop predict`` (``Predictor.predict_records``:
the checks of ``equiprop.inference.checks``, graphs with the checkpoint's cutoff / max / min neighbours, batches of
its ``batch_size``, non-finite outputs refused). Every item gets a row: "ok", or "failed" with the reason.

Workers end with the main process, even one killed with SIGKILL (``equiprop.data.processes.DieWithParent``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache

import numpy as np
import torch

from equiprop.data.errors import DataError
from equiprop.data.processes import DieWithParent
from equiprop.inference import STD_SUFFIX
from equiprop.data.inputs import InputFailure

META = ["index", "id", "file", "formula", "status", "reason", "error"]


@lru_cache(maxsize=65536)
def _formula(composition: tuple) -> str:
    from ase.data import chemical_symbols
    from ase.formula import Formula

    return Formula.from_dict({chemical_symbols[z]: n for z, n in composition}).format("metal")  # as predict's


def formula(numbers: np.ndarray) -> str:
    z, counts = np.unique(numbers, return_counts=True)
    return _formula(tuple(zip(z.tolist(), counts.tolist())))


def failed_row(index: int, id: str, file: str, formula_: str, reason: str, error: str) -> dict:
    return {"index": index, "id": id, "file": file, "formula": formula_, "status": "failed", "reason": reason,
            "error": error}


class ChunkDataset(torch.utils.data.Dataset):
    """Item ``n``: the ``n``-th pending chunk, as (chunk id, rows), each row predicted or failed."""

    def __init__(self, plan, chunks: list[tuple[int, np.ndarray]], predictor):
        self.plan, self.chunks, self.predictor = plan, chunks, predictor
        outputs = list(predictor.units())
        self.columns = [c for name in outputs for c in ((name, name + STD_SUFFIX) if predictor.has_uncertainty
                                                        else (name,))]

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, n: int):
        k, indices = self.chunks[n]
        rows, records = [], []
        for index, item in self.plan.read(indices):
            if isinstance(item, InputFailure):
                rows.append(failed_row(index, item.id, item.file, "", item.reason, item.error))
                continue
            rows.append({"index": index, "id": item.id, "file": item.source, "formula": formula(item.numbers)})
            records.append(item)
        positions = [n for n, row in enumerate(rows) if "status" not in row]
        with torch.inference_mode():  # the predictor's checks, batches and non-finite refusal, as `predict`'s
            outcomes = self.predictor.predict_records(records)
        for position, outcome in zip(positions, outcomes):
            if isinstance(outcome, DataError):
                rows[position].update(status="failed", reason=outcome.kind, error=str(outcome))
            else:
                rows[position].update(status="ok", reason="", error="",
                                      values=[_cell(outcome[c]) for c in self.columns])
        return k, rows


def _identity(x):
    return x


def value_columns(units: dict[str, str], with_std: bool, prefix: str = "") -> list[str]:
    columns = []
    for name, unit in units.items():
        columns.append(f"{prefix}{name} [{unit}]")
        if with_std:
            columns.append(f"{prefix}{name}_std [{unit}]")
    return columns


def _cell(value) -> float | str:
    """A CSV cell of one output of one structure: a float, or a JSON list for tensors and per-atom values."""
    return float(value) if np.ndim(value) == 0 else json.dumps(np.asarray(value).tolist())


def run_stage(predictor, plan, chunks, store, stage: str, workers: int, total: int, desc: str) -> dict:
    """Compute the pending chunks (those not on disk), writing each; stats of what this run computed."""
    from tqdm import tqdm

    header = META + value_columns(predictor.units(), predictor.has_uncertainty)
    pending = [(k, idx) for k, idx in chunks if not store.done(stage, k)]
    skipped = sum(len(idx) for k, idx in chunks if store.done(stage, k))
    dataset = ChunkDataset(plan, pending, predictor)
    # workers die with this process (kill -9 included): a worker blocked sending a chunk would otherwise live on
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_identity,
                                         prefetch_factor=2 if workers else None, worker_init_fn=DieWithParent())
    start, computed, reasons = time.perf_counter(), 0, Counter()
    with tqdm(total=total, initial=skipped, desc=desc, unit="structure", smoothing=0.1) as bar:
        for k, rows in loader:  # DataLoader workers run with one torch thread each
            store.write_chunk(stage, k, header, [chunk_row(r, len(header) - len(META)) for r in rows])
            computed += len(rows)
            reasons.update(r["reason"] for r in rows if r["status"] == "failed")
            bar.update(len(rows))
    seconds = time.perf_counter() - start
    return {"structures_computed": computed, "structures_resumed": skipped, "chunks_computed": len(pending),
            "chunks_resumed": len(chunks) - len(pending),
            "chunks_damaged": sum(path.parent.name == stage for path in store.damaged),  # computed again
            "seconds": round(seconds, 3),
            "structures_per_second": round(computed / seconds, 1) if computed and seconds > 0 else None}


def chunk_row(row: dict, num_values: int) -> list:
    values = row.get("values") or [""] * num_values
    return [row["index"], row["id"], row["file"], row["formula"], row["status"], row["reason"], row["error"]] + values
