"""The one predictor: a trained model, or several (a deep ensemble; Monte-Carlo dropout), ready to predict every
trained task in physical units, with a standard deviation where there is more than one draw.

    from equiprop import Predictor
    p = Predictor.load("equiprop-mp-v3")                         # a shipped model by name, a manifest .json,
    p = Predictor.load(["m_s0/best.ckpt", "m_s1/best.ckpt"])     # checkpoints (a deep ensemble) or one checkpoint
    p.predict([structure, atoms])   # [{"Ef": -1.2, "Ef_std": 0.05, "eps_electronic": (3, 3) array, ...}]
    p.to("cuda")                    # predict on a GPU (loaded on the CPU)

Every member is run once, or ``mc_samples`` times with its feature dropout active when it was trained with
``model.dropout > 0``. The prediction is the mean over all draws, its standard deviation the spread of the draws
(population std: the law of total variance over members and dropout masks), per output component; identical members
give exactly zero. A manifest written by ``equiprop calibrate`` also holds a per-output variance scale fitted on the
validation split: the std is multiplied by it. Members with one frozen encoder (a shipped model's head sets on a
pretrained potential) run it once per batch.

What is refused, and how it is reported (``equiprop.inference.checks``; the CLI: ``equiprop.workflows.predict``):

- **Checkpoints**: read with ``torch.load(weights_only=True)``; a missing, empty, truncated or non-checkpoint file,
  non-finite weights, or a model whose every output is non-finite on a probe crystal (simple cubic cell of an
  element it was trained on) is one error naming the file (``equiprop.inference.checkpoints``).
- **Graphs** are built as in training: cutoff, ``max_neighbors`` and ``min_neighbors`` from the checkpoint.
- **Tasks** with no training labels are left out, with one notice naming them; a manifest's ``opt_in_tasks`` are
  predicted only when asked for (``tasks=``), each with the measured reason.
- **Structures** are refused (a ``DataError`` naming the file) when not periodic in all three directions, holding
  elements the model never saw in training (``allow_unseen_elements=True`` predicts them anyway; a checkpoint that
  records no elements cannot tell and says so once), broken (overlapping or isolated atoms, ...), or when any of
  their predictions is non-finite (never reported as a number).

``notices`` holds what a user should know about the model (omitted tasks, unknown training elements, ...).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch_geometric.data import Batch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import per_atom_tasks
from equiprop.inference import checkpoints as io
from equiprop.inference import checks
from equiprop.inference.outputs import STD_SUFFIX, batch_outputs, latent_vectors, output_units, per_structure


class Predictor:
    """Mean (and standard deviation) of one or more members' predictions, in physical units (tensors as Cartesian
    arrays; elastic and piezoelectric in Voigt form, 6x6 and 3x6; a binary task's probability of class 1).

    Args:
        models: one ``MultiTaskModel`` or several with the same tasks (``Predictor.load`` reads them from files).
        graph: (cutoff in Å, max_neighbors, min_neighbors) as in training (default: the encoder's cutoff, no
            maximum, 1).
        batch_size: structures per forward pass.
        allow_unseen_elements: predict structures holding elements a member never saw in training.
        output_tasks: the tasks predicted (default: all).
        mc_samples: dropout draws per member (0: one deterministic pass; members trained without dropout always
            give one pass).
        std_scale: per output, the factor the std is multiplied by (recalibration; default 1).
        species_seen: per atomic number, whether every member saw it in training (None: cannot tell).
        seed: seeds the dropout masks, so a prediction is reproducible.
    """

    def __init__(self, models, graph: tuple | None = None, batch_size: int = 32, *,
                 allow_unseen_elements: bool = False, output_tasks: list[str] | None = None, mc_samples: int = 0,
                 std_scale: dict[str, float] | None = None, species_seen: np.ndarray | None = None, seed: int = 0,
                 notices: list[str] | None = None):
        self.models = [m.eval() for m in (models if isinstance(models, (list, tuple)) else [models])]
        if not self.models:
            raise ConfigError("a predictor needs at least one model")
        if mc_samples < 0:
            raise ConfigError(f"mc_samples must be >= 0, got {mc_samples}")
        first = self.models[0]
        self.tasks = first.tasks
        cutoff, max_neighbors, min_neighbors = graph if graph is not None else (None, None, 1)
        self.cutoff = float(cutoff) if cutoff is not None else first.encoder.cutoff
        self.max_neighbors, self.min_neighbors, self.batch_size = max_neighbors, int(min_neighbors), batch_size
        self.allow_unseen_elements = allow_unseen_elements
        self.output_tasks = list(output_tasks if output_tasks is not None else self.tasks)
        self.mc_samples, self.seed = int(mc_samples), seed
        self.std_scale = dict(std_scale or {})
        self.species_seen = species_seen
        self.notices = list(notices or [])
        self.draws = [self.mc_samples if self.mc_samples and has_dropout(m) else 1 for m in self.models]
        self.shared_encoder = len(self.models) > 1 and all(io.same_frozen_encoder(first.encoder, m.encoder)
                                                           for m in self.models[1:])
        if self.mc_samples and not any(d > 1 for d in self.draws):
            self.notices.append(f"mc_samples={self.mc_samples} ignored: no member was trained with model.dropout")

    # -- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, source, *, tasks: list[str] | None = None, mc_samples: int | None = None, batch_size: int = 32,
             allow_unseen_elements: bool = False, seed: int = 0, warn: bool = True) -> "Predictor":
        """A shipped model's name (``equiprop models``), one manifest .json (its members, MC samples, variance
        scales, opt-in tasks; ``mc_samples`` overrides the manifest's) or checkpoint paths (one, or several: a deep
        ensemble). ``tasks``: the outputs to predict (default: every task with training labels except the
        manifest's ``opt_in_tasks``). ``warn``: issue each notice as a Python warning (the CLI prints them)."""
        sources = io.read_sources(source)
        members = [io.load_member(path) for path in sources.paths]
        available = [name for name in members[0].model.tasks if name not in members[0].untrained]
        io.check_members_agree(members, [output_units(m.model.tasks, available) for m in members])
        chosen, opt_in_notices = io.chosen_outputs(available, tasks, sources.opt_in)
        seen = [m.species_seen for m in members]
        # an element any member never saw is unseen for the ensemble: that member's prediction is untrained
        predictor = cls([m.model for m in members], members[0].graph, batch_size,
                        allow_unseen_elements=allow_unseen_elements, output_tasks=chosen,
                        mc_samples=sources.mc_samples if mc_samples is None else mc_samples,
                        std_scale=sources.std_scale, seed=seed,
                        species_seen=None if any(s is None for s in seen) else np.logical_and.reduce(seen),
                        notices=[*sources.notices, *dict.fromkeys(n for m in members for n in m.notices)])
        for member in members:
            predictor.check_probe(member.model, member.path)
        if sources.manifest is not None:
            io.check_manifest_units(sources.where, sources.manifest.get("units", {}), predictor.units())
        predictor.notices += opt_in_notices
        for notice in predictor.notices if warn else ():
            warnings.warn(notice, stacklevel=2)
        return predictor

    @classmethod
    def from_checkpoint(cls, path, batch_size: int = 32, allow_unseen_elements: bool = False,
                        warn: bool = True) -> "Predictor":
        """One checkpoint written by ``equiprop fit`` (``load`` with a single path)."""
        return cls.load([str(path)], batch_size=batch_size, allow_unseen_elements=allow_unseen_elements, warn=warn)

    def compile_backbones(self) -> int:
        """Run the pretrained backbones' layers of every member through torch.compile (``FoundationEncoder``'s
        ``compile_layers``: a one-off compilation, then faster passes); how many encoders take it."""
        return sum(bool(model.encoder.compile_passes(True)) for model in self.models
                   if hasattr(model.encoder, "compile_passes"))

    def check_probe(self, model, where: str) -> None:
        """Refuse a model whose every output is non-finite on a simple crystal (corrupted weights)."""
        probe = checks.probe_crystal(self.species_seen, self.cutoff)
        with torch.no_grad():
            batch = Batch.from_data_list([self.graph(probe)]).to(next(model.parameters()).device)
            outputs = batch_outputs(model, batch, self.output_tasks)
        if not any(np.isfinite(value).all() for value in outputs.values()):
            raise DataError(where, f"every prediction is non-finite on a probe crystal (simple cubic, "
                                   f"Z={int(probe.numbers[0])}, a={float(probe.cell[0, 0]):.3g} Å): corrupted "
                                   "weights", "bad checkpoint")

    # -- structures -> graphs -------------------------------------------------------------------------------------
    def graph(self, record: CrystalRecord):
        return record_to_graph(record, {}, self.cutoff, self.max_neighbors, self.min_neighbors)

    def unseen_elements(self, record: CrystalRecord) -> list[str]:
        """Symbols of the record's elements the model never saw in training ([] when the model cannot tell)."""
        return checks.unseen_symbols(record, self.species_seen)

    def checked_graphs(self, structures, checked: bool = True
                       ) -> tuple[list, dict[int, CrystalRecord], dict[int, DataError]]:
        """Graphs of the usable structures, {index: record} of those, {index: error} of the others. ``checked``:
        also refuse non-periodic structures and unseen elements (False: validity only, for latent maps)."""
        graphs, kept, failures, records = [], {}, {}, {}
        for i, item in enumerate(structures):
            try:
                records[i] = checks.as_record(item, i)
            except DataError as err:
                failures[i] = err
        seen = self.species_seen if checked and not self.allow_unseen_elements else None
        unseen = dict(zip(records, checks.unseen_mask(list(records.values()), seen)))
        for i, record in records.items():
            try:
                if checked:
                    checks.check_periodic(record)
                if unseen[i]:
                    raise checks.unseen_error(record, seen)
                record.check_cell()
                graph = self.graph(record)
                checks.check_graph_distances(record, graph)
            except DataError as err:
                failures[i] = checks.renamed(err, record)
                continue
            graphs.append(graph)
            kept[i] = record
        return graphs, kept, dict(sorted(failures.items()))

    # -- prediction -----------------------------------------------------------------------------------------------
    def predict(self, structures, progress: bool = False) -> list[dict]:
        """One dict per structure: {output: float | ndarray} in physical units (and ``<output>_std`` with more than
        one draw), plus K_Voigt/G_Voigt (GPa) from a predicted elastic tensor. Raises DataError naming every
        structure that cannot be predicted (overlapping atoms, not periodic, unseen elements, non-finite output)."""
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
            bad = checks.non_finite_outputs(prediction)
            outcomes[i] = prediction if not bad else checks.non_finite_error(record, bad)
        return outcomes

    def predict_graphs(self, graphs: list, progress: bool = False) -> list[dict]:
        """Raw predictions of prepared graphs, one dict per graph (no checks; values may be non-finite)."""
        rows = []
        for batch in self.batches(graphs, progress):
            outputs = {}
            for name, (mean, std) in self.predict_batch(batch).items():
                outputs[name] = mean
                if std is not None:
                    outputs[name + STD_SUFFIX] = std
            rows += per_structure(outputs, batch, self.tasks, STD_SUFFIX)
        return rows

    def batches(self, graphs: list, progress: bool = False):
        starts = range(0, len(graphs), self.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="predict", unit="batch")
        for start in starts:
            yield Batch.from_data_list(graphs[start:start + self.batch_size])

    def predict_batch(self, batch, form: str = "user") -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """{output: (mean, std)}, each (num_graphs or num_nodes, *shape); std None when there is a single draw.
        ``form``: "user" (Voigt where a task has one) or "cartesian"."""
        return {name: self.mean_std(name, values) for name, values in self.samples(batch, form).items()}

    @torch.no_grad()
    def samples(self, batch, form: str = "user", latents: list | None = None) -> dict[str, np.ndarray]:
        """{output: (draws, num_graphs or num_nodes, *shape)} predictions of every member and dropout draw.
        ``latents``: a list the first member's latent vectors of the batch are appended to (its encoder runs once)."""
        batch = batch.to(self.device)
        draws: dict[str, list[np.ndarray]] = {}
        first = self.models[0]
        features = first.encoder(batch) if self.shared_encoder or latents is not None else None
        if latents is not None:
            latents.append(latent_vectors(first.encoder.irreps_out, features, batch).double().cpu().numpy())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for k, (model, n) in enumerate(zip(self.models, self.draws)):
                block = model.feature_dropout if n > 1 else None
                if block is not None:
                    block.sampling = True
                try:
                    for _ in range(n):
                        shared = features if self.shared_encoder or k == 0 else None
                        for name, value in self.outputs(model, batch, shared, form).items():
                            draws.setdefault(name, []).append(value)
                finally:
                    if block is not None:
                        block.sampling = False
        return {name: np.stack(values) for name, values in draws.items()}

    def outputs(self, model, batch, features, form: str) -> dict[str, np.ndarray]:
        if form == "user":
            return batch_outputs(model, batch, self.output_tasks, features)
        if form != "cartesian":
            raise ValueError(f"form must be 'user' or 'cartesian', got {form!r}")
        return {name: value.double().cpu().numpy()
                for name, value in model.predict_physical(batch, self.output_tasks, features).items()}

    def mean_std(self, name: str, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and (recalibrated) std over the first axis of ``draws`` of output ``name`` (or of a quantity
        derived from it per draw); std None for a single draw."""
        std = draws.std(axis=0) * self.std_scale.get(name, 1.0) if len(draws) > 1 else None
        return draws.mean(axis=0), std

    @torch.no_grad()
    def latents(self, graphs: list) -> np.ndarray:
        """(num_graphs, d) latent vector of each graph (the first member's encoder; ``outputs.latent_vectors``)."""
        encoder, out = self.models[0].encoder, []
        for batch in self.batches(graphs):
            batch = batch.to(self.device)
            out.append(latent_vectors(encoder.irreps_out, encoder(batch), batch).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    # -- what it predicts -----------------------------------------------------------------------------------------
    @property
    def has_uncertainty(self) -> bool:
        return sum(self.draws) > 1

    def units(self) -> dict[str, str]:
        """Units of each output: the task's; "probability" for a binary task; K_Voigt/G_Voigt in GPa."""
        return output_units(self.tasks, self.output_tasks)

    def output_shapes(self) -> dict[str, tuple]:
        """{output: shape of one structure's value} (() for scalars, (3, 3), (6, 6) Voigt, (3, 6) ...), from a probe
        crystal, before any input is read. Per-atom outputs are left out (a list per structure, not selectable)."""
        probe = self.graph(checks.probe_crystal(self.species_seen, self.cutoff))
        prediction = self.predict_batch(Batch.from_data_list([probe]))
        per_atom = per_atom_tasks(self.tasks)
        return {name: tuple(mean.shape[1:]) for name, (mean, _) in prediction.items() if name not in per_atom}

    def to(self, device) -> "Predictor":
        """Predict on ``device`` (e.g. "cuda"): the models move there, each batch follows them, results come back."""
        for model in self.models:
            model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.models[0].parameters()).device


def has_dropout(model) -> bool:
    block = getattr(model, "feature_dropout", None)
    return block is not None and block.dropout is not None


def load_predictor(paths, mc_samples: int | None = None, batch_size: int = 32, allow_unseen_elements: bool = False,
                   seed: int = 0, warn: bool = True, tasks: list[str] | None = None) -> Predictor:
    """``Predictor.load`` (kept for ``from equiprop.uncertainty import load_predictor``)."""
    return Predictor.load(paths, tasks=tasks, mc_samples=mc_samples, batch_size=batch_size,
                          allow_unseen_elements=allow_unseen_elements, seed=seed, warn=warn)
