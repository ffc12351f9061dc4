"""Predictions with a standard deviation in physical units: deep ensembles and Monte-Carlo dropout.

    from equiprop.uncertainty import load_predictor
    p = load_predictor(["checkpoints/m_s0/best.ckpt", "checkpoints/m_s1/best.ckpt"])   # or one ensemble .json
    p.predict([structure])  # [{"Ef": -1.2, "Ef_std": 0.05, "eps_electronic": (3, 3) array, ...}]

Every member (a checkpoint) is run once, or ``mc_samples`` times with its feature dropout active when it was trained
with ``model.dropout > 0``. The prediction is the mean over all draws, its standard deviation the spread of the draws
(population std, the law of total variance over members and dropout masks), per output component: per scalar, per
Cartesian/Voigt component of a tensor, per derived K_Voigt/G_Voigt. Identical members give exactly zero. A manifest
written by ``equiprop calibrate`` also holds a per-output variance scale fitted on the validation split: the std is
multiplied by it (``equiprop.uncertainty.calibration``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.predict import CheckedPredictions, Predictor, batch_outputs, per_structure
from equiprop.train.integrity import read_manifest

STD_SUFFIX = "_std"


class UncertainPredictor(CheckedPredictions):
    """Mean and standard deviation of several members' (and dropout masks') predictions, in physical units.

    Args:
        members: ``Predictor`` objects of checkpoints with the same tasks and graph parameters.
        mc_samples: dropout draws per member (0: one deterministic pass; members trained without dropout always
            give one pass).
        std_scale: per output, the factor the std is multiplied by (recalibration; default 1).
        seed: seeds the dropout masks, so a prediction is reproducible.
    """

    def __init__(self, members: list[Predictor], mc_samples: int = 0, std_scale: dict[str, float] | None = None,
                 seed: int = 0):
        if not members:
            raise ConfigError("an ensemble needs at least one checkpoint")
        if mc_samples < 0:
            raise ConfigError(f"mc_samples must be >= 0, got {mc_samples}")
        self.members, self.mc_samples, self.seed = members, int(mc_samples), seed
        first = members[0]
        for other in members[1:]:
            for attribute in ("cutoff", "max_neighbors", "min_neighbors", "output_tasks"):
                if getattr(other, attribute) != getattr(first, attribute):
                    raise ConfigError(f"ensemble members differ in {attribute}: {getattr(first, attribute)} vs "
                                      f"{getattr(other, attribute)}; members must come from one recipe")
        check_same_units(members)
        self.tasks, self.output_tasks = first.tasks, first.output_tasks
        self.cutoff, self.max_neighbors, self.min_neighbors = first.cutoff, first.max_neighbors, first.min_neighbors
        self.notices = sorted({notice for m in members for notice in m.notices})
        seen = [m.species_seen for m in members]
        # an element any member never saw is unseen for the ensemble: that member's prediction is untrained
        self.species_seen = None if any(s is None for s in seen) else np.logical_and.reduce(seen)
        first.species_seen = self.species_seen
        self.allow_unseen_elements = first.allow_unseen_elements
        self.std_scale = dict(std_scale or {})
        self.draws = [self.mc_samples if self.mc_samples and self._dropout(m) else 1 for m in members]
        self.shared_encoder = len(members) > 1 and all(same_frozen_encoder(first.model.encoder, m.model.encoder)
                                                       for m in members[1:])
        if self.mc_samples and not any(d > 1 for d in self.draws):
            self.notices.append(f"mc_samples={self.mc_samples} ignored: no member was trained with model.dropout")

    @staticmethod
    def _dropout(member: Predictor) -> bool:
        block = getattr(member.model, "feature_dropout", None)
        return block is not None and block.dropout is not None

    @property
    def has_uncertainty(self) -> bool:
        return sum(self.draws) > 1

    def graph(self, record):
        return self.members[0].graph(record)

    def check_record(self, record) -> None:
        self.members[0].check_record(record)

    def unseen_elements(self, record) -> list[str]:
        return self.members[0].unseen_elements(record)

    def units(self) -> dict[str, str]:
        return self.members[0].units()

    # -- prediction -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self, batch) -> dict[str, np.ndarray]:
        """{output: (draws, num_graphs or num_nodes, *user_shape)} physical predictions of every member and dropout draw."""
        draws: dict[str, list[np.ndarray]] = {}
        # members with one frozen encoder (a shipped model's head sets on SevenNet) run it once per batch
        features = self.members[0].model.encoder(batch) if self.shared_encoder else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for member, n in zip(self.members, self.draws):
                block = member.model.feature_dropout if n > 1 else None
                if block is not None:
                    block.sampling = True
                try:
                    for _ in range(n):
                        for name, value in self._physical(member, batch, features).items():
                            draws.setdefault(name, []).append(value)
                finally:
                    if block is not None:
                        block.sampling = False
        return {name: np.stack(values) for name, values in draws.items()}

    def _physical(self, member: Predictor, batch, features=None) -> dict[str, np.ndarray]:
        return batch_outputs(member.model, batch, member.output_tasks, features)

    def predict_batch(self, batch) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """{output: (mean, std)}, each (num_graphs, *user_shape); std None when there is a single draw."""
        return {name: self.mean_std(name, values) for name, values in self.samples(batch).items()}

    def mean_std(self, name: str, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and (recalibrated) std over the first axis of ``draws`` of output ``name`` (or of a quantity
        derived from it per draw); std None for a single draw."""
        std = draws.std(axis=0) * self.std_scale.get(name, 1.0) if len(draws) > 1 else None
        return draws.mean(axis=0), std

    def predict_graphs(self, graphs: list, progress: bool = False) -> list[dict]:
        """One dict per graph: {output: value, output_std: value (when there is uncertainty)}."""
        from torch_geometric.data import Batch

        rows, size = [], self.members[0].batch_size
        chunks = range(0, len(graphs), size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="predict", unit="batch")
        for start in chunks:
            batch = Batch.from_data_list(graphs[start:start + size])
            outputs = {}
            for name, (mean, std) in self.predict_batch(batch).items():
                outputs[name] = mean
                if std is not None:
                    outputs[name + STD_SUFFIX] = std
            rows += per_structure(outputs, batch, self.tasks, STD_SUFFIX)
        return rows

    def checked_graphs(self, structures, checked: bool):
        return self.members[0].checked_graphs(structures, checked)


def check_same_units(members: list[Predictor], paths: list[str] | None = None) -> None:
    """ConfigError naming the output, both units and both members unless every member gives every output in the
    same units: averaging eV/atom with meV/atom is a wrong number, and the table's header could name only one."""
    names = paths or [f"member {i}" for i in range(len(members))]
    first = members[0].units()
    for name, member in zip(names[1:], members[1:]):
        for output, unit in member.units().items():
            if output in first and unit != first[output]:
                raise ConfigError(f"ensemble members disagree on the units of {output}: {first[output]!r} in "
                                  f"{names[0]} vs {unit!r} in {name}; members must be trained on one task definition")


def check_manifest_units(where: str, manifest_units: dict, predictor) -> None:
    """DataError naming the manifest when the units it states differ from its members' (a stale or edited file)."""
    units = predictor.units()
    wrong = [f"{name}: manifest {unit!r}, members {units[name]!r}" for name, unit in manifest_units.items()
             if name in units and units[name] != unit]
    if wrong:
        raise DataError(where, f"units differ from its members' ({'; '.join(wrong)})", "bad manifest")


def select_outputs(members: list[Predictor], tasks: list[str] | None, opt_in: dict, where: str) -> list[str]:
    """Restrict every member's outputs to ``tasks`` (ConfigError naming the unknown ones), or by default to all but
    the manifest's ``opt_in_tasks`` ({task: why it is not offered by default}). Returns the notices to show."""
    available = members[0].output_tasks
    if not isinstance(opt_in, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in opt_in.items()):
        raise DataError(where, "opt_in_tasks must map task names to the reason they are not predicted by default",
                        "bad manifest")
    if tasks is not None:
        unknown = [t for t in tasks if t not in available]
        if unknown or not tasks:
            raise ConfigError(f"--tasks {' '.join(unknown) or '(none)'}: not predicted by this model; it predicts "
                              f"{', '.join(available)}")
        chosen, notices = [t for t in available if t in tasks], []
    else:
        chosen = [t for t in available if t not in opt_in]
        notices = [f"{task} is predicted only on request (--tasks ... {task}): {opt_in[task]}"
                   for task in available if task in opt_in]
    for member in members:
        member.output_tasks = list(chosen)
    return notices


def same_frozen_encoder(a, b) -> bool:
    """Whether two encoders compute the same features: same class and configuration, no trainable weight (a frozen
    pretrained encoder), equal tensors."""
    from equiprop.nn.base import describe

    if describe(a) != describe(b) or any(p.requires_grad for p in (*a.parameters(), *b.parameters())):
        return False
    state_a, state_b = a.state_dict(), b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# -- loading --------------------------------------------------------------------------------------------------------
def load_predictor(paths, mc_samples: int | None = None, batch_size: int = 32, allow_unseen_elements: bool = False,
                   seed: int = 0, warn: bool = True, tasks: list[str] | None = None) -> UncertainPredictor:
    """An ``UncertainPredictor`` from checkpoint paths (one or more .ckpt: a deep ensemble), one manifest .json
    (its members, MC samples and variance scales; ``mc_samples`` overrides the manifest's) or a shipped model's name
    (``equiprop models``). ``tasks``: the outputs to predict (default: every task with training labels except the
    manifest's ``opt_in_tasks``, which a model offers only on request, each with the measured reason)."""
    from equiprop.shipped import resolve_all

    paths = resolve_all(paths)  # a shipped model's name -> its manifest
    std_scale, manifest_samples, manifest, manifest_path = None, 0, None, paths[0]
    if len(paths) == 1 and Path(paths[0]).suffix == ".json":
        manifest = read_manifest(paths[0])  # every member's sha256 checked, scales finite and positive
        paths, std_scale, notices = manifest["members"], manifest["std_scale"], manifest["notices"]
        manifest_samples = manifest.get("mc_samples", 0)
        if isinstance(manifest_samples, bool) or not isinstance(manifest_samples, int) or manifest_samples < 0:
            raise DataError(manifest_path, f"mc_samples is {manifest_samples!r}: a whole number >= 0 is expected",
                            "bad manifest")
    else:
        notices = []
    members = [Predictor.from_checkpoint(p, batch_size, allow_unseen_elements, warn=warn) for p in paths]
    check_same_units(members, paths)
    notices += select_outputs(members, tasks, (manifest or {}).get("opt_in_tasks", {}), manifest_path)
    predictor = UncertainPredictor(members, manifest_samples if mc_samples is None else mc_samples, std_scale, seed)
    if manifest is not None:
        check_manifest_units(manifest_path, manifest.get("units", {}), predictor)
    predictor.notices += notices
    for notice in notices if warn else ():
        warnings.warn(notice, stacklevel=2)
    return predictor
