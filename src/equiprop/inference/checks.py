"""What a model must not be asked about, in one place for every inference command: the checks a structure passes
before it is predicted (periodic; elements seen in training; a sane cell; no atoms closer than 0.5 Å, read from the
graph's own edges rather than a second neighbour list) and after (no non-finite output), each a ``DataError`` that
names the file (and the structure's id where the file holds several)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiprop.data.errors import DataError
from equiprop.data.record import MAX_ATOMIC_NUMBER, CrystalRecord, from_ase, from_pymatgen

PROBE_SPACING = 3.0  # Å, nearest-neighbour distance of the probe crystal (shortened for smaller cutoffs)


def as_record(item, index: int) -> CrystalRecord:
    """A CrystalRecord from what a user hands the Python API (pymatgen Structure, ASE Atoms or a record)."""
    if isinstance(item, CrystalRecord):
        return item
    if hasattr(item, "lattice") and hasattr(item, "sites"):  # pymatgen Structure
        return from_pymatgen(item, f"structure_{index}")
    if hasattr(item, "get_positions"):  # ASE Atoms
        return from_ase(item, f"structure_{index}")
    raise TypeError(f"structure {index}: expected a pymatgen Structure, ASE Atoms or CrystalRecord")


def check_periodic(record: CrystalRecord) -> None:
    if not record.pbc.all():
        raise DataError(describe_record(record), f"not periodic (pbc={[bool(p) for p in record.pbc]}): equiprop "
                        "predicts crystals; give a cell periodic in all three directions (CIF, POSCAR, or extxyz "
                        "with Lattice=\"...\" pbc=\"T T T\")", "not periodic")


def unseen_mask(records: list[CrystalRecord], seen: np.ndarray | None) -> np.ndarray:
    """(num_records,) whether each holds an element the model never saw (one lookup over all atoms)."""
    if seen is None or not records:
        return np.zeros(len(records), dtype=bool)
    table = np.zeros(MAX_ATOMIC_NUMBER + 1, dtype=bool)
    table[:len(seen)] = seen[:MAX_ATOMIC_NUMBER + 1]
    numbers = np.concatenate([r.numbers for r in records])
    starts = np.cumsum([0] + [r.num_atoms for r in records[:-1]])
    return np.add.reduceat(~table[numbers], starts) > 0


def unseen_symbols(record: CrystalRecord, seen: np.ndarray | None) -> list[str]:
    """Symbols of the record's elements the model never saw in training ([] when the model cannot tell)."""
    from ase.data import chemical_symbols

    if seen is None:
        return []
    return [chemical_symbols[z] for z in sorted(set(int(z) for z in record.numbers)) if z >= len(seen) or not seen[z]]


def unseen_error(record: CrystalRecord, seen: np.ndarray) -> DataError:
    return DataError(describe_record(record), f"holds elements the model never saw in training: "
                     f"{', '.join(unseen_symbols(record, seen))} (allow with --allow-unseen-elements / "
                     "allow_unseen_elements=True)", "elements unseen in training")


def check_graph_distances(record: CrystalRecord, graph) -> None:
    """Atoms closer than 0.5 Å, from the graph's edges (every pair within the cutoff, the nearest always kept)."""
    i, j = graph.edge_index.numpy()
    vectors = record.positions[j] + graph.edge_cell_shift.numpy() @ record.cell - record.positions[i]
    record.check_distance(float(np.sqrt((vectors ** 2).sum(1)).min()) if len(i) else float("inf"))


def non_finite_outputs(prediction: dict) -> list[str]:
    return [name for name, value in prediction.items() if not np.isfinite(value).all()]


def non_finite_error(record: CrystalRecord, bad: list[str]) -> DataError:
    return DataError(describe_record(record), f"non-finite prediction for {', '.join(bad)} (not reported as a "
                     "number)", "non-finite prediction")


def probe_crystal(species_seen: np.ndarray | None, cutoff: float) -> CrystalRecord:
    """A simple cubic crystal of the first element the model was trained on (Si if unknown), nearest neighbours
    inside the cutoff: a structure every checkpoint must predict finitely."""
    z = int(np.flatnonzero(species_seen)[0]) if species_seen is not None and species_seen.any() else 14
    return CrystalRecord("probe", np.eye(3) * min(PROBE_SPACING, 0.75 * cutoff), np.zeros((1, 3)), [z])


def describe_record(record: CrystalRecord) -> str:
    """The file a record came from (and its id where the file holds several), else its id."""
    if not record.source:
        return record.id
    return record.source if Path(record.source).stem == record.id else f"{record.source} ({record.id})"


def renamed(err: DataError, record: CrystalRecord | None) -> DataError:
    """The error located at the record's file rather than its bare id (what a user can find)."""
    if record is None or err.where != record.id:
        return err
    return DataError(describe_record(record), err.problem, err.kind)
