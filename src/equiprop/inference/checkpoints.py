"""Reading what a predictor is made of, checked: a shipped model's name, an ensemble manifest (``model.json`` and
what ``equiprop calibrate`` writes: read by ``train.integrity.read_manifest``, only here for prediction) or
checkpoint paths, each checkpoint rebuilt into its model. Nothing is unpickled (``weights_only``); a missing,
truncated or non-checkpoint file, non-finite weights or weights that do not fit the model they describe are one
error naming the file."""

from __future__ import annotations

import inspect
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.nn.registry import build_encoder
from equiprop.train.export import restore_backbone
from equiprop.train.integrity import read_checkpoint, read_manifest


@dataclass
class Member:
    """One checkpoint, rebuilt: its model, the graph parameters it was trained with, the tasks it has no training
    labels for, the elements it saw (None: an older checkpoint that does not record them) and its notices."""
    path: str
    model: torch.nn.Module
    graph: tuple[float, int | None, int]  # cutoff (Å), max_neighbors, min_neighbors
    untrained: list[str]
    species_seen: np.ndarray | None
    notices: list[str] = field(default_factory=list)


@dataclass
class Sources:
    """The checkpoints to load and what a manifest adds to them (empty without a manifest)."""
    paths: list[str]
    where: str  # the manifest, or the first checkpoint: what errors about the whole model name
    manifest: dict | None = None
    std_scale: dict[str, float] = field(default_factory=dict)
    mc_samples: int = 0
    opt_in: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def read_sources(values) -> Sources:
    """A shipped model's name, one manifest .json or checkpoint paths -> the checkpoints and the manifest's
    scales, MC samples, opt-in tasks (every member's sha256 checked, scales finite and positive)."""
    from equiprop.shipped import resolve_all

    paths = resolve_all(values)  # a shipped model's name -> its manifest
    if not paths:
        raise ConfigError("a predictor needs at least one checkpoint")
    if len(paths) > 1 or Path(paths[0]).suffix != ".json":
        return Sources(paths, paths[0])
    where, manifest = paths[0], read_manifest(paths[0])
    samples = manifest.get("mc_samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise DataError(where, f"mc_samples is {samples!r}: a whole number >= 0 is expected", "bad manifest")
    opt_in = manifest.get("opt_in_tasks", {})
    if not isinstance(opt_in, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in opt_in.items()):
        raise DataError(where, "opt_in_tasks must map task names to the reason they are not predicted by default",
                        "bad manifest")
    return Sources(manifest["members"], where, manifest, manifest["std_scale"], samples, opt_in, manifest["notices"])


def load_member(path: str | Path) -> Member:
    """The checkpoint ``path`` rebuilt into its model (evaluation mode); DataError naming the file if unusable."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint["equiprop"]
    model = build_model(path, checkpoint).eval()
    graph = meta.get("graph") or {}
    cutoff = graph.get("cutoff")
    min_neighbors = graph.get("min_neighbors")
    member = Member(str(path), model, (float(cutoff) if cutoff is not None else model.encoder.cutoff,
                                      graph.get("max_neighbors", meta.get("max_neighbors")),
                                      1 if min_neighbors is None else int(min_neighbors)),
                    [name for name in model.tasks if name in set(untrained_tasks(meta))], None)
    if member.untrained:
        member.notices.append(f"tasks with no training labels are left out of the predictions: "
                              f"{', '.join(member.untrained)}")
        if len(member.untrained) == len(model.tasks):
            raise DataError(str(path), "none of the checkpoint's tasks had training labels: nothing to predict",
                            "bad checkpoint")
    seen = getattr(model, "species_seen", None)
    if seen is None or not bool(seen.any()):
        member.notices.append("the checkpoint does not record which elements it was trained on (all of "
                              "species_seen is False: an older checkpoint); structures with elements unseen in "
                              "training cannot be detected and are predicted")
    else:
        member.species_seen = seen.cpu().numpy().astype(bool)
    return member


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
    a shipped ensemble): the potential is built once, and the predictor runs it once per batch."""
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


def check_members_agree(members: list[Member], units: list[dict[str, str]]) -> None:
    """ConfigError unless every member has the graph parameters, outputs and units of the first: members must come
    from one recipe (averaging eV/atom with meV/atom is a wrong number, and a table's header can name one unit)."""
    first = members[0]
    for member, member_units in zip(members[1:], units[1:]):
        for what, a, b in (("cutoff, max_neighbors, min_neighbors", first.graph, member.graph),
                           ("tasks", list(first.model.tasks), list(member.model.tasks)),
                           ("tasks without training labels", first.untrained, member.untrained)):
            if a != b:
                raise ConfigError(f"ensemble members differ in {what}: {a} in {first.path} vs {b} in {member.path}; "
                                  "members must come from one recipe")
        for output, unit in member_units.items():
            if output in units[0] and unit != units[0][output]:
                raise ConfigError(f"ensemble members disagree on the units of {output}: {units[0][output]!r} in "
                                  f"{first.path} vs {unit!r} in {member.path}; members must be trained on one task "
                                  "definition")


def check_manifest_units(where: str, manifest_units: dict, units: dict[str, str]) -> None:
    """DataError naming the manifest when the units it states differ from its members' (a stale or edited file)."""
    wrong = [f"{name}: manifest {unit!r}, members {units[name]!r}" for name, unit in manifest_units.items()
             if name in units and units[name] != unit]
    if wrong:
        raise DataError(where, f"units differ from its members' ({'; '.join(wrong)})", "bad manifest")


def chosen_outputs(available: list[str], tasks: list[str] | None, opt_in: dict[str, str]
                   ) -> tuple[list[str], list[str]]:
    """The tasks to predict: ``tasks`` (ConfigError naming the unknown ones), or by default all but the manifest's
    ``opt_in_tasks`` ({task: why it is not predicted by default}); and the notices to show."""
    if tasks is not None:
        unknown = [t for t in tasks if t not in available]
        if unknown or not tasks:
            raise ConfigError(f"--tasks {' '.join(unknown) or '(none)'}: not predicted by this model; it predicts "
                              f"{', '.join(available)}")
        return [t for t in available if t in tasks], []
    return ([t for t in available if t not in opt_in],
            [f"{task} is predicted only on request (--tasks ... {task}): {opt_in[task]}"
             for task in available if task in opt_in])


def same_frozen_encoder(a, b) -> bool:
    """Whether two encoders compute the same features: same class and configuration, no trainable weight (a frozen
    pretrained encoder), equal tensors."""
    from equiprop.nn.base import describe

    if a is b:
        return not any(p.requires_grad for p in a.parameters())
    if describe(a) != describe(b) or any(p.requires_grad for p in (*a.parameters(), *b.parameters())):
        return False
    state_a, state_b = a.state_dict(), b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
