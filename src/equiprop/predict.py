"""Prediction on new structures from a checkpoint: Python API and ``equiprop predict``.

    from equiprop import Predictor
    Predictor.from_checkpoint("checkpoints/quickstart/best.ckpt").predict([structure, atoms])

Checkpoints are loaded with ``torch.load(weights_only=True)``: tensors and plain types only, nothing unpickled.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_ase, from_pymatgen, read_structure_file, structure_format
from equiprop.nn.base import build_encoder
from equiprop.train.metrics import voigt_bulk_modulus, voigt_shear_modulus


class Predictor:
    """A trained model ready to predict every task in physical units (tensors as Cartesian / Voigt arrays)."""

    def __init__(self, model, max_neighbors: int | None = None, batch_size: int = 32):
        self.model = model.eval()
        self.tasks = model.tasks
        self.cutoff, self.max_neighbors, self.batch_size = model.encoder.cutoff, max_neighbors, batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, batch_size: int = 32) -> "Predictor":
        from equiprop.train.module import MultiTaskModel

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if "equiprop" not in checkpoint:
            raise DataError(str(path), "not an equiprop checkpoint (no 'equiprop' section)", "bad checkpoint")
        meta = checkpoint["equiprop"]
        try:  # only registered encoder classes: never import an arbitrary class named in a file
            encoder = build_encoder(meta["encoder"])
        except ConfigError as err:
            raise DataError(str(path), str(err), "bad checkpoint") from None
        # init_from is not replayed: the checkpoint already holds the fine-tuned weights
        accepted = set(inspect.signature(MultiTaskModel.__init__).parameters) - {"self", "encoder", "tasks", "init_from"}
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k in accepted}
        model = MultiTaskModel(encoder, tasks=list(meta["tasks"].values()), **hparams)
        model.load_state_dict(checkpoint["state_dict"])
        return cls(model, meta.get("max_neighbors"), batch_size)

    def _record(self, item, index: int) -> CrystalRecord:
        if isinstance(item, CrystalRecord):
            return item
        if hasattr(item, "lattice") and hasattr(item, "sites"):  # pymatgen Structure
            return from_pymatgen(item, f"structure_{index}")
        if hasattr(item, "get_positions"):  # ASE Atoms
            return from_ase(item, f"structure_{index}")
        raise TypeError(f"structure {index}: expected a pymatgen Structure, ASE Atoms or CrystalRecord")

    def graphs(self, structures) -> tuple[list, list[int], dict[int, str]]:
        """Graphs of the usable structures, their indices, and {index: error} for the others."""
        graphs, kept, errors = [], [], {}
        for i, item in enumerate(structures):
            try:
                record = self._record(item, i).validate()
                graphs.append(record_to_graph(record, {}, self.cutoff, self.max_neighbors))
                kept.append(i)
            except DataError as err:
                errors[i] = str(err)
        return graphs, kept, errors

    def predict(self, structures, progress: bool = False) -> list[dict]:
        """One dict per structure: {task: float | ndarray} in physical units, plus K_Voigt/G_Voigt (GPa) derived
        from a predicted elastic tensor. Elastic/piezo tensors are returned in Voigt form (6x6, 3x6). A structure
        that cannot be used (overlapping atoms, isolated atom, ...) raises DataError naming it."""
        graphs, _, errors = self.graphs(structures)
        if errors:
            raise DataError("predict", "; ".join(errors.values()), "unusable structure")
        return self.predict_graphs(graphs, progress)

    @torch.no_grad()
    def predict_graphs(self, graphs: list, progress: bool = False) -> list[dict]:
        results = []
        chunks = range(0, len(graphs), self.batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="predict", unit="batch")
        for start in chunks:
            batch = Batch.from_data_list(graphs[start:start + self.batch_size])
            physical = self.model.predict_physical(batch)
            if "elastic_tensor" in physical:
                physical["K_Voigt"] = voigt_bulk_modulus(physical["elastic_tensor"])
                physical["G_Voigt"] = voigt_shear_modulus(physical["elastic_tensor"])
            for i in range(batch.num_graphs):
                results.append({name: self._user_value(name, values[i]) for name, values in physical.items()})
        return results

    def _user_value(self, name: str, value: torch.Tensor):
        array = value.double().numpy()
        if name in self.tasks and self.tasks[name].kind == "tensor":
            return self.tasks[name].to_user(array)
        return float(array)

    def units(self) -> dict[str, str]:
        units = {name: task.units for name, task in self.tasks.items()}
        units.update({"probability" if t.kind == "binary" else n: units[n] for n, t in self.tasks.items()
                      if t.kind == "binary"})
        if "elastic_tensor" in units:
            units.update({"K_Voigt": "GPa", "G_Voigt": "GPa"})
        return units


def collect_files(inputs: list[str]) -> list[Path]:
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and structure_format(p))
        else:
            files.append(path)
    return files


def predict_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="equiprop predict", description="Predict properties of structures.")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `equiprop fit`")
    parser.add_argument("--input", nargs="+", required=True, help="CIF/POSCAR/extxyz files or folders of them")
    parser.add_argument("--output", required=True, help="out.csv or out.json")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix not in (".csv", ".json"):
        parser.error("--output must end in .csv or .json")
    predictor = Predictor.from_checkpoint(args.checkpoint, args.batch_size)
    records, errors = [], []
    for path in collect_files(args.input):
        try:
            for record in read_structure_file(path):
                record.source = str(path)
                records.append(record)
        except DataError as err:
            errors.append({"file": str(path), "error": str(err)})
    graphs, kept, unusable = predictor.graphs(records)  # bad structures are reported, not fatal
    errors += [{"file": records[i].source, "error": message} for i, message in unusable.items()]
    records = [records[i] for i in kept]
    predictions = predictor.predict_graphs(graphs, progress=True)
    rows = [{"id": r.id, "file": r.source, "formula": r.formula, **p} for r, p in zip(records, predictions)]
    write_predictions(output, rows, predictor.units(), errors, args.checkpoint)
    for e in errors:
        print(f"equiprop predict: skipped {e['error']}", file=sys.stderr)
    print(f"wrote {len(rows)} predictions to {output} ({len(errors)} files skipped)")
    return 0


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def write_predictions(path: Path, rows: list[dict], units: dict, errors: list, checkpoint: str) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({"checkpoint": str(checkpoint), "units": units, "errors": errors,
                                    "predictions": [{k: _plain(v) for k, v in row.items()} for row in rows]},
                                   indent=1))
        return
    names = [k for k in (rows[0] if rows else {}) if k not in ("id", "file", "formula")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "file", "formula"] + [f"{n} [{units.get(n, '')}]" for n in names])
        for row in rows:
            writer.writerow([row["id"], row["file"], row["formula"]] +
                            [json.dumps(_plain(row[n])) if isinstance(row[n], np.ndarray) else row[n] for n in names])
