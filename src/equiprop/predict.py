"""Prediction on new structures from a checkpoint: Python API and ``equiprop predict``.

    from equiprop import Predictor
    Predictor.from_checkpoint("checkpoints/quickstart/best.ckpt").predict([structure, atoms])
    Predictor.from_checkpoint(path).to("cuda").predict(structures)     # on a GPU (loaded on the CPU)

    equiprop predict --checkpoint CKPT --input FILES_OR_FOLDERS --output out.{csv,json}
                     [--allow-unseen-elements] [--allow-failures] [--batch-size N]    (equiprop.workflows.predict)

With uncertainty (a standard deviation per output, in its units): ``equiprop.uncertainty.load_predictor`` over
several checkpoints (a deep ensemble), an ensemble manifest, or a model trained with ``model.dropout`` and
``mc_samples``; ``equiprop predict --checkpoint A B C`` / ``--mc-samples N`` adds ``<task>_std`` columns.

What is refused, and how it is reported:

- **Checkpoints** are loaded with ``torch.load(weights_only=True)``: tensors and plain types only, nothing
  unpickled. A missing, empty, truncated or non-checkpoint file is a one-line error naming it; so is a checkpoint
  whose weights hold non-finite values, or whose every output is non-finite on a probe crystal (simple cubic cell
  of an element it was trained on).
- **Graphs** are built as in training: cutoff, ``max_neighbors`` and ``min_neighbors`` from the checkpoint's
  ``graph`` section (older checkpoints: ``max_neighbors`` and the encoder's cutoff).
- **Tasks** whose ``train_label_counts`` entry is 0 (a head trained on nothing) are left out of the predictions,
  with one warning naming them.
- **Structures** are refused (a failed row naming the file and the problem) when they are not periodic in all three
  directions (a molecule in .xyz: equiprop predicts crystals), hold elements the model never saw in training
  (the checkpoint's ``species_seen``; ``--allow-unseen-elements`` / ``allow_unseen_elements=True`` predicts them
  anyway; a checkpoint that records no elements, from before ``species_seen`` was filled, cannot tell and says so
  once), are broken (overlapping or isolated atoms, ...), or when any of their predictions is non-finite (never
  written as a number).
- **Input folders** are read one level deep; files of unknown type and sub-folders in them are failed rows too
  (counted and named); hidden files (dotfiles) are skipped silently.
- **Output**: CSV columns ``id, file, formula, <task> [units] ..., status, error``; every input gets a row, in input
  order: ``status`` "ok", or "failed" with empty property cells and the reason in ``error``. JSON:
  ``{"checkpoint", "units", "predictions": [rows with status "ok"], "errors": [{"id", "file", "formula", "status":
  "failed", "reason", "error"}]}``. A binary task's output is the predicted probability of class 1, units
  "probability". The output's folder must exist and be writable: checked before anything is computed.
- **Exit status**: 0 when every input was predicted; 1 when any input failed (``--allow-failures``: 0 as long as
  something was predicted); 1 whenever nothing was predicted; 2 for a bad checkpoint, output path or argument.
"""

from __future__ import annotations

import inspect
import json
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_ase, from_pymatgen
from equiprop.nn.registry import build_encoder
from equiprop.train.export import restore_backbone
from equiprop.train.integrity import read_checkpoint
from equiprop.data.tensor_ops import voigt_bulk_modulus, voigt_shear_modulus

BINARY_UNITS = "probability"
PROBE_SPACING = 3.0  # Å, nearest-neighbour distance of the probe crystal (shortened for smaller cutoffs)


class CheckedPredictions:
    """``predict`` / ``predict_records`` over a class's ``checked_graphs`` and ``predict_graphs``: the refusals
    (not periodic, unseen elements, broken structures, non-finite predictions) shared by every predictor."""

    def predict(self, structures, progress: bool = False) -> list[dict]:
        """One dict per structure: {task: float | ndarray} in physical units, plus K_Voigt/G_Voigt (GPa) derived
        from a predicted elastic tensor. Elastic/piezo tensors are returned in Voigt form (6x6, 3x6); a binary task
        gives the probability of class 1. Raises DataError naming every structure that cannot be predicted
        (overlapping atoms, not periodic, elements unseen in training, a non-finite prediction, ...)."""
        outcomes = self.predict_records(structures, progress)
        failures = [err for err in outcomes if isinstance(err, DataError)]
        if failures:
            raise DataError("predict", "; ".join(map(str, failures)), "unusable structure")
        return outcomes

    def predict_records(self, structures, progress: bool = False) -> list[dict | DataError]:
        """Per structure, in order: its prediction dict, or the DataError saying why it has none."""
        graphs, kept, failures = self.checked_graphs(structures, checked=True)
        outcomes: list = [failures.get(i) for i in range(len(structures))]
        for (i, record), prediction in zip(kept.items(), self.predict_graphs(graphs, progress)):
            bad = non_finite_outputs(prediction)
            outcomes[i] = prediction if not bad else DataError(
                describe_record(record), f"non-finite prediction for {', '.join(bad)} (not reported as a number)",
                "non-finite prediction")
        return outcomes


class Predictor(CheckedPredictions):
    """A trained model ready to predict every trained task in physical units (tensors as Cartesian / Voigt arrays).

    Args:
        model: a ``MultiTaskModel``.
        max_neighbors, cutoff, min_neighbors: graph parameters as in training (cutoff: the encoder's by default;
            min_neighbors: 1, the graph builder's default, for checkpoints that predate it).
        batch_size: structures per forward pass.
        allow_unseen_elements: predict structures holding elements the model never saw in training (refused by
            default: the model's embedding of those elements was never trained).
        omit_tasks: tasks left out of the predictions (from_checkpoint: those with no training labels).

    ``notices`` holds what a user should know about the checkpoint (omitted tasks, unknown training elements).
    """

    def __init__(self, model, max_neighbors: int | None = None, batch_size: int = 32, *, cutoff: float | None = None,
                 min_neighbors: int | None = None, allow_unseen_elements: bool = False, omit_tasks=()):
        self.model = model.eval()
        self.tasks = model.tasks
        self.cutoff = float(cutoff) if cutoff is not None else model.encoder.cutoff
        self.max_neighbors, self.batch_size = max_neighbors, batch_size
        self.min_neighbors = 1 if min_neighbors is None else int(min_neighbors)
        self.allow_unseen_elements = allow_unseen_elements
        self.notices: list[str] = []
        self.omitted_tasks = [name for name in self.tasks if name in set(omit_tasks)]
        self.output_tasks = [name for name in self.tasks if name not in self.omitted_tasks]
        if self.omitted_tasks:
            self.notices.append(f"tasks with no training labels are left out of the predictions: "
                                f"{', '.join(self.omitted_tasks)}")
        self.species_seen = self._species_seen()

    # -- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, batch_size: int = 32, allow_unseen_elements: bool = False,
                        warn: bool = True) -> "Predictor":
        """Load a checkpoint written by ``equiprop fit``; DataError naming the file if it is unusable.
        ``warn``: issue each of ``notices`` as a Python warning (the CLI prints them itself)."""
        checkpoint = load_checkpoint(path)
        meta = checkpoint["equiprop"]
        graph = meta.get("graph") or {}
        predictor = cls(build_model(path, checkpoint), graph.get("max_neighbors", meta.get("max_neighbors")),
                        batch_size, cutoff=graph.get("cutoff"), min_neighbors=graph.get("min_neighbors"),
                        allow_unseen_elements=allow_unseen_elements, omit_tasks=untrained_tasks(meta))
        if not predictor.output_tasks:
            raise DataError(str(path), "none of the checkpoint's tasks had training labels: nothing to predict",
                            "bad checkpoint")
        predictor.check_probe(str(path))
        for notice in predictor.notices if warn else ():
            warnings.warn(notice, stacklevel=2)
        return predictor

    def _species_seen(self) -> np.ndarray | None:
        """Bool vector by atomic number, or None when the model records no elements (older checkpoints)."""
        seen = getattr(self.model, "species_seen", None)
        if seen is None or not bool(seen.any()):
            self.notices.append("the checkpoint does not record which elements it was trained on (all of "
                                "species_seen is False: an older checkpoint); structures with elements unseen in "
                                "training cannot be detected and are predicted")
            return None
        return seen.cpu().numpy().astype(bool)

    def check_probe(self, where: str) -> None:
        """Refuse a model whose every output is non-finite on a simple crystal (corrupted weights)."""
        probe = probe_crystal(self.species_seen, self.cutoff)
        z, spacing = int(probe.numbers[0]), float(probe.cell[0, 0])
        prediction = self.predict_graphs([self.graph(probe)])[0]
        if not any(np.isfinite(value).all() for value in prediction.values()):
            raise DataError(where, f"every prediction is non-finite on a probe crystal (simple cubic, Z={z}, "
                                   f"a={spacing:.3g} Å): corrupted weights", "bad checkpoint")

    # -- structures -> graphs -------------------------------------------------------------------------------------
    def _record(self, item, index: int) -> CrystalRecord:
        if isinstance(item, CrystalRecord):
            return item
        if hasattr(item, "lattice") and hasattr(item, "sites"):  # pymatgen Structure
            return from_pymatgen(item, f"structure_{index}")
        if hasattr(item, "get_positions"):  # ASE Atoms
            return from_ase(item, f"structure_{index}")
        raise TypeError(f"structure {index}: expected a pymatgen Structure, ASE Atoms or CrystalRecord")

    def graph(self, record: CrystalRecord):
        return record_to_graph(record, {}, self.cutoff, self.max_neighbors, self.min_neighbors)

    def unseen_elements(self, record: CrystalRecord) -> list[str]:
        """Symbols of the record's elements the model never saw in training ([] when the checkpoint cannot tell)."""
        from ase.data import chemical_symbols

        if self.species_seen is None:
            return []
        return [chemical_symbols[z] for z in sorted(set(int(z) for z in record.numbers))
                if z >= len(self.species_seen) or not self.species_seen[z]]

    def check_record(self, record: CrystalRecord) -> None:
        """DataError (naming the file or structure) for what the model must not be asked about."""
        where = describe_record(record)
        if not record.pbc.all():
            raise DataError(where, f"not periodic (pbc={[bool(p) for p in record.pbc]}): equiprop predicts "
                                   "crystals; give a cell periodic in all three directions (CIF, POSCAR, or extxyz "
                                   "with Lattice=\"...\" pbc=\"T T T\")", "not periodic")
        unseen = self.unseen_elements(record)
        if unseen and not self.allow_unseen_elements:
            raise DataError(where, f"holds elements the model never saw in training: {', '.join(unseen)} (allow "
                                   "with --allow-unseen-elements / allow_unseen_elements=True)",
                            "elements unseen in training")

    def checked_graphs(self, structures, checked: bool
                        ) -> tuple[list, dict[int, CrystalRecord], dict[int, DataError]]:
        """Graphs of the usable structures, {index: record} of those, {index: error} of the others."""
        graphs, kept, failures = [], {}, {}
        for i, item in enumerate(structures):
            record = None
            try:
                record = self._record(item, i)
                if checked:
                    self.check_record(record)
                graphs.append(self.graph(record.validate()))
                kept[i] = record
            except DataError as err:
                failures[i] = renamed(err, record)
        return graphs, kept, failures

    def graphs(self, structures) -> tuple[list, list[int], dict[int, str]]:
        """Graphs of the usable structures, their indices, and {index: error} for the others. Validity only
        (no periodicity or training-element check): for embeddings; ``predict_records`` checks everything."""
        graphs, kept, failures = self.checked_graphs(structures, checked=False)
        return graphs, list(kept), {i: str(err) for i, err in failures.items()}

    def to(self, device) -> "Predictor":
        """Predict on ``device`` (e.g. "cuda"): the model moves there, each batch follows it, results come back."""
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- prediction (predict, predict_records: CheckedPredictions) ------------------------------------------------
    @torch.no_grad()
    def predict_graphs(self, graphs: list, progress: bool = False) -> list[dict]:
        """Raw predictions of prepared graphs (no checks; values may be non-finite: see ``non_finite_outputs``)."""
        results = []
        chunks = range(0, len(graphs), self.batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="predict", unit="batch")
        for start in chunks:
            batch = Batch.from_data_list(graphs[start:start + self.batch_size]).to(self.device)
            results += per_structure(batch_outputs(self.model, batch, self.output_tasks), batch, self.tasks)
        return results

    def units(self) -> dict[str, str]:
        """Units of each output, one key per output: the task's units; "probability" for a binary task (its
        output is the predicted probability of class 1, in [0, 1]); K_Voigt/G_Voigt in GPa."""
        units = {name: BINARY_UNITS if self.tasks[name].kind == "binary" else self.tasks[name].units
                 for name in self.output_tasks}
        if "elastic_tensor" in units:
            units.update({"K_Voigt": "GPa", "G_Voigt": "GPa"})
        return units


# -- the one path from a batch of graphs to predictions (Predictor, UncertainPredictor, screening, calibration) ------
def batch_outputs(model, batch, tasks: list[str], features: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """{output: float64 array} of a batch in physical units and the users' form (Voigt where a task has one; binary:
    probability), one row per structure (per atom for a per-atom task), plus K_Voigt/G_Voigt (GPa) from a predicted
    elastic tensor. ``features``: the encoder's output when already computed (members sharing a frozen encoder)."""
    physical = model.predict_physical(batch, tasks, features)
    if "elastic_tensor" in physical:
        physical["K_Voigt"] = voigt_bulk_modulus(physical["elastic_tensor"])
        physical["G_Voigt"] = voigt_shear_modulus(physical["elastic_tensor"])
    return {name: model.tasks[name].to_user(value.double().cpu().numpy()) if name in model.tasks
            else value.double().cpu().numpy() for name, value in physical.items()}


def per_structure(outputs: dict[str, np.ndarray], batch, tasks: dict, suffix: str = "_std") -> list[dict]:
    """One dict per structure of a batch from batched ``outputs``: a float or array per structure, an array with one
    row per atom for a per-atom task (also for its ``<task><suffix>`` companion)."""
    ptr = batch.ptr.tolist() if hasattr(batch, "ptr") and batch.ptr is not None else [0, batch.num_nodes]
    per_atom = {name for name, task in tasks.items() if task.level == "atom"}
    per_atom |= {name + suffix for name in per_atom}
    rows = []
    for i in range(batch.num_graphs):
        rows.append({name: values[ptr[i]:ptr[i + 1]] if name in per_atom else
                     float(values[i]) if np.ndim(values[i]) == 0 else np.asarray(values[i])
                     for name, values in outputs.items()})
    return rows


def probe_crystal(species_seen: np.ndarray | None, cutoff: float) -> CrystalRecord:
    """A simple cubic crystal of the first element the model was trained on (Si if unknown), nearest neighbours
    inside the cutoff: a structure every checkpoint must predict finitely."""
    z = int(np.flatnonzero(species_seen)[0]) if species_seen is not None and species_seen.any() else 14
    return CrystalRecord("probe", np.eye(3) * min(PROBE_SPACING, 0.75 * cutoff), np.zeros((1, 3)), [z])


# -- checkpoint reading -------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint as plain types; ConfigError/DataError naming the file if it is missing or not a checkpoint."""
    checkpoint = read_checkpoint(path)  # weights_only: nothing unpickled
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("equiprop"), dict):
        raise DataError(str(path), "not an equiprop checkpoint (no 'equiprop' section)", "bad checkpoint")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise DataError(str(path), "not an equiprop checkpoint (no 'state_dict')", "bad checkpoint")
    return checkpoint


def build_model(path, checkpoint: dict):
    """The MultiTaskModel a checkpoint describes, with its weights; DataError naming the file otherwise."""
    from equiprop.train.module import MultiTaskModel

    meta, state = checkpoint["equiprop"], checkpoint["state_dict"]
    corrupted = non_finite_weights(state)
    if corrupted:
        raise DataError(str(path), f"corrupted weights: non-finite values in {len(corrupted)} tensors (e.g. "
                                   f"{', '.join(corrupted[:3])})", "bad checkpoint")
    try:  # only registered encoder classes: never import an arbitrary class named in a file
        # an encoder that is wholly the pretrained backbone (no weight of its own in the file) can be shared
        untouched = meta.get("backbone") and not any(k.startswith("encoder.") for k in state)
        encoder = backbone_encoder(meta) if untouched else build_encoder(meta["encoder"])
        # init_from is not replayed: the checkpoint already holds the fine-tuned weights
        accepted = set(inspect.signature(MultiTaskModel.__init__).parameters) - {"self", "encoder", "tasks",
                                                                                "init_from", "init_heads"}
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k in accepted}
        model = MultiTaskModel(encoder, tasks=list(meta["tasks"].values()), **hparams)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise DataError(str(path), f"cannot rebuild the model it describes ({type(err).__name__}: {err})",
                        "bad checkpoint") from None
    state = restore_backbone(meta, state, model.encoder, str(path))  # a shipped model's pretrained weights, checked
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing / unexpected keys, shape mismatches
        first_line = str(err).strip().splitlines()[0][:300]
        raise DataError(str(path), f"weights do not fit the model it describes ({first_line})",
                        "bad checkpoint") from None
    return model


_BACKBONE_ENCODERS: "weakref.WeakValueDictionary[str, object]" = weakref.WeakValueDictionary()


def backbone_encoder(meta: dict):
    """One encoder instance for every checkpoint whose encoder is the untouched pretrained backbone (the members of
    a shipped ensemble): the potential is built once, and ``UncertainPredictor`` runs it once per batch."""
    key = json.dumps([meta["encoder"], meta["backbone"].get("sha256")], sort_keys=True, default=str)
    encoder = _BACKBONE_ENCODERS.get(key)
    if encoder is None:
        encoder = build_encoder(meta["encoder"])
        _BACKBONE_ENCODERS[key] = encoder
    return encoder


def non_finite_weights(state_dict: dict) -> list[str]:
    return [name for name, value in state_dict.items() if torch.is_tensor(value) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]


def untrained_tasks(meta: dict) -> list[str]:
    """Tasks whose recorded number of training labels is 0 (older checkpoints record none: [])."""
    counts = meta.get("train_label_counts") or {}
    return [name for name, count in counts.items() if count == 0]


def non_finite_outputs(prediction: dict) -> list[str]:
    return [name for name, value in prediction.items() if not np.isfinite(value).all()]


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