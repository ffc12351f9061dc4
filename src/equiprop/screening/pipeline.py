"""One screening stage: each DataLoader worker reads a chunk of input items, builds batched graphs and predicts them;
the main process writes the chunk's rows (one file per chunk, atomically) in chunk order.

Inference runs in the workers (one torch thread each) rather than in the main process: on a machine with few cores
a main process predicting while the workers parse would compete with them for the same cores, while whole chunks
per worker keep every core busy with no hand-over of graphs between processes.

Per chunk, in the worker: records are checked (periodic; elements seen in training, vectorised over the chunk;
empty / unknown element / non-finite / zero-volume cells; atoms closer than 0.5 Å, from the graph's own edges rather
than a second neighbour list), graphs built with the checkpoint's cutoff / max / min neighbours and collated into
``Batch``es of ``batch_size``. Every item gets a row: "ok", or "failed" with the reason.

Workers end with the main process, even one killed with SIGKILL (``equiprop.data.processes.DieWithParent``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache

import numpy as np
import torch
from torch_geometric.data import Batch

from equiprop.data.errors import DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.processes import DieWithParent
from equiprop.data.record import MAX_ATOMIC_NUMBER, CrystalRecord
from equiprop.predict import describe_record, renamed
from equiprop.screening.inputs import InputFailure

META = ["index", "id", "file", "formula", "status", "reason", "error"]


@lru_cache(maxsize=65536)
def _formula(composition: tuple) -> str:
    from ase.data import chemical_symbols
    from ase.formula import Formula

    return Formula.from_dict({chemical_symbols[z]: n for z, n in composition}).format("metal")  # as predict's


def formula(numbers: np.ndarray) -> str:
    z, counts = np.unique(numbers, return_counts=True)
    return _formula(tuple(zip(z.tolist(), counts.tolist())))


def check_structure(record: CrystalRecord) -> None:
    """The predictor's periodicity check and ``CrystalRecord.check_cell``; the distance check waits for the graph."""
    if not record.pbc.all():
        raise DataError(record.id, f"not periodic (pbc={[bool(p) for p in record.pbc]}): equiprop predicts "
                                   "crystals", "not periodic")
    record.check_cell()


def check_graph(record: CrystalRecord, graph) -> None:
    """Atoms closer than 0.5 Å, from the graph's edges (every pair within the cutoff, the nearest always kept)."""
    i, j = graph.edge_index.numpy()
    vectors = record.positions[j] + graph.edge_cell_shift.numpy() @ record.cell - record.positions[i]
    record.check_distance(float(np.sqrt((vectors ** 2).sum(1)).min()) if len(i) else float("inf"))


def unseen_mask(records: list[CrystalRecord], seen: np.ndarray | None) -> np.ndarray:
    """(num_records,) whether each holds an element the model never saw (one lookup over all atoms)."""
    if seen is None or not records:
        return np.zeros(len(records), dtype=bool)
    table = np.zeros(MAX_ATOMIC_NUMBER + 1, dtype=bool)
    table[:len(seen)] = seen[:MAX_ATOMIC_NUMBER + 1]
    numbers = np.concatenate([r.numbers for r in records])
    starts = np.cumsum([0] + [r.num_atoms for r in records[:-1]])
    return np.add.reduceat(~table[numbers], starts) > 0


def unseen_error(record: CrystalRecord, seen: np.ndarray) -> DataError:
    from ase.data import chemical_symbols

    symbols = sorted({chemical_symbols[z] for z in record.numbers if z >= len(seen) or not seen[z]})
    return DataError(describe_record(record), f"holds elements the model never saw in training: {', '.join(symbols)} "
                                              "(allow with --allow-unseen-elements)", "elements unseen in training")


def failed_row(index: int, id: str, file: str, formula_: str, reason: str, error: str) -> dict:
    return {"index": index, "id": id, "file": file, "formula": formula_, "status": "failed", "reason": reason,
            "error": error}


class ChunkDataset(torch.utils.data.Dataset):
    """Item ``n``: the ``n``-th pending chunk, as (chunk id, rows), each row predicted or failed."""

    def __init__(self, plan, chunks: list[tuple[int, np.ndarray]], predictor, batch_size: int,
                 allow_unseen_elements: bool):
        self.plan, self.chunks, self.batch_size, self.predictor = plan, chunks, batch_size, predictor
        self.outputs = list(predictor.units())
        self.graph_args = (predictor.cutoff, predictor.max_neighbors, predictor.min_neighbors)
        self.seen = None if allow_unseen_elements else predictor.species_seen

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
            try:
                check_structure(item)
                records.append((len(rows) - 1, item))
            except DataError as err:
                rows[-1].update(status="failed", reason=err.kind, error=str(renamed(err, item)))
        unseen = unseen_mask([r for _, r in records], self.seen)
        graphs, positions = [], []
        for (position, record), bad in zip(records, unseen):
            try:
                if bad:
                    raise unseen_error(record, self.seen)
                graph = record_to_graph(record, {}, *self.graph_args)
                check_graph(record, graph)
            except DataError as err:
                rows[position].update(status="failed", reason=err.kind, error=str(renamed(err, record)))
                continue
            graphs.append(graph)
            positions.append(position)
        batches = [(positions[s:s + self.batch_size], Batch.from_data_list(graphs[s:s + self.batch_size]))
                   for s in range(0, len(graphs), self.batch_size)]
        with torch.inference_mode():
            predict_chunk(self.predictor, rows, batches, self.outputs)
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


def _cells(values: list[np.ndarray]) -> list:
    """CSV cells of one output, one per structure: floats, or JSON lists for tensors and per-atom values."""
    return [float(v) if np.ndim(v) == 0 else json.dumps(np.asarray(v).tolist()) for v in values]


def predict_chunk(predictor, rows: list[dict], batches, outputs: list[str]) -> None:
    """Fill each ok row's ``values`` (cells in ``value_columns`` order); non-finite predictions fail the row."""
    per_atom = {name for name, task in predictor.tasks.items() if task.level == "atom"}
    for positions, batch in batches:
        prediction = predictor.predict_batch(batch)
        finite = np.ones(len(positions), dtype=bool)
        bad = [[] for _ in positions]
        columns = []
        for name in outputs:
            mean, std = prediction[name]
            for array in (mean, std) if predictor.has_uncertainty else (mean,):
                values = np.split(array, batch.ptr[1:-1].tolist()) if name in per_atom else list(array)
                ok = np.array([np.isfinite(v).all() for v in values])
                for i in np.flatnonzero(~ok):
                    bad[i].append(name)
                finite &= ok
                columns.append(_cells(values))
        for i, position in enumerate(positions):
            row = rows[position]
            if finite[i]:
                row.update(status="ok", reason="", error="", values=[c[i] for c in columns])
            else:
                names = ", ".join(dict.fromkeys(bad[i]))
                row.update(status="failed", reason="non-finite prediction",
                           error=f"{row['file']} ({row['id']}): non-finite prediction for {names}")


def run_stage(predictor, plan, chunks, store, stage: str, batch_size: int, workers: int,
              allow_unseen_elements: bool, total: int, desc: str) -> dict:
    """Compute the pending chunks (those not on disk), writing each; stats of what this run computed."""
    from tqdm import tqdm

    header = META + value_columns(predictor.units(), predictor.has_uncertainty)
    pending = [(k, idx) for k, idx in chunks if not store.done(stage, k)]
    skipped = sum(len(idx) for k, idx in chunks if store.done(stage, k))
    dataset = ChunkDataset(plan, pending, predictor, batch_size, allow_unseen_elements)
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
