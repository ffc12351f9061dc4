"""Transfer learning: start a model from a pretrained checkpoint, reuse its encoder and matching heads, and choose
what trains (all weights, a frozen encoder, or only the last interaction blocks).

Compatibility is checked before any weight is copied: encoder class and configuration (cutoff, irreps, layers,
...) must match, so a mismatch is a clear error rather than a shape crash deep inside ``load_state_dict``.
"""

from __future__ import annotations

from pathlib import Path

from equiprop.data.errors import ConfigError
from equiprop.data.tasks import TaskSpec
from equiprop.nn.base import describe, stored_args
from equiprop.train.export import restore_backbone
from equiprop.train.integrity import read_checkpoint

FINETUNE_MODES = ("all", "frozen_encoder", "last_layers")


def read_pretrained(path: str) -> dict:
    """The checkpoint to start from: a path, or a shipped model's name (its first member, ``equiprop.shipped``)."""
    from equiprop.shipped import first_member

    path = first_member(path)  # a manifest's member is checked against its recorded sha256
    if not Path(path).is_file():
        raise ConfigError(f"init_from: checkpoint not found: {path}")
    checkpoint = read_checkpoint(path)  # weights only: a crafted file is refused in one line, never unpickled
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("equiprop"), dict) \
            or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"init_from: {path} is not an equiprop checkpoint")
    checkpoint["path"] = path
    return checkpoint


def stored_layout(meta: dict | None, encoder) -> str | None:
    """What a checkpoint's encoder (metadata ``meta``) carries in its last layer (its ``output_irreps``; older
    checkpoints: their legacy value), when it is of ``encoder``'s class; None otherwise."""
    if not meta or meta.get("class_path") != describe(encoder)["class_path"]:
        return None  # another class: check_encoder refuses it
    return stored_args(type(encoder), meta.get("init_args") or {}).get("output_irreps")


def pretrained_layout(pretrained: dict, encoder) -> str | None:
    """The layout an ``auto`` encoder starting from ``pretrained`` takes: the pretrained encoder's."""
    return stored_layout(pretrained["equiprop"]["encoder"], encoder)


def check_layout(meta: dict | None, encoder) -> None:
    """A checkpoint loaded into a model built from a recipe (a resumed fit, ``equiprop test``): its encoder's last
    layer must carry what this one's carries; a one-line ConfigError naming the setting, not a shape error."""
    stored, current = stored_layout(meta, encoder), encoder.config.get("output_irreps")
    if stored is not None and current is not None and stored != current:
        raise ConfigError(f"the checkpoint's encoder carries output_irreps={stored!r} in its last layer, this model "
                          f"{current!r}: set model.encoder.init_args.output_irreps={stored!r}")


def check_encoder(pretrained: dict, encoder, path: str) -> None:
    """Same encoder class and configuration, or a ConfigError naming every difference."""
    meta = pretrained["equiprop"]["encoder"]
    class_path = describe(encoder)["class_path"]
    if meta["class_path"] != class_path:
        raise ConfigError(f"init_from {path}: pretrained encoder is {meta['class_path']}, this model uses {class_path}")
    stored = stored_args(type(encoder), meta["init_args"])
    differences = [f"{key}: pretrained {stored.get(key)!r} vs {value!r}"
                   for key, value in encoder.config.items()
                   if key not in encoder.runtime_args and stored.get(key) != value]
    if differences:
        raise ConfigError(f"init_from {path}: encoder configuration differs ({'; '.join(differences)}). "
                          "Use the pretrained values (cutoff in data.cutoff, irreps/max_ell/layers in the encoder).")


def load_pretrained(model, pretrained: dict, init_heads: dict[str, str] | None = None) -> list[str]:
    """Copy encoder weights and the heads (with their normalisation and weighting) of tasks defined identically in
    the pretrained model (``read_pretrained``), and start the readouts of ``init_heads`` ({new task: pretrained
    task}) from the named pretrained readouts (weights only). Returns the names of the reused tasks."""
    path = pretrained["path"]
    check_encoder(pretrained, model.encoder, path)
    state = restore_backbone(pretrained["equiprop"], pretrained["state_dict"], model.encoder, pretrained["path"])
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    model.species_seen.copy_(state["species_seen"])
    defined = pretrained["equiprop"]["tasks"]  # compared as TaskSpecs: fields added later take their defaults
    # heads read the long-range block's channels too: reused only where both models have it, or neither
    long_range = {k[len("long_range."):]: v for k, v in state.items() if k.startswith("long_range.")}
    same_inputs = bool(long_range) == (getattr(model, "long_range", None) is not None)
    if long_range and same_inputs:
        model.long_range.load_state_dict(long_range)
    reused = [name for name, task in model.tasks.items() if name in defined and TaskSpec(**defined[name]) == task
              and same_inputs]
    counts = pretrained["equiprop"].get("train_label_counts") or {}  # older checkpoints: unknown (None)
    model.pretrained_label_counts = {name: counts.get(name) for name in reused}
    for name in reused:
        prefix = f"heads.{name}."
        if name in model.heads:  # forces and stress have no head: the energy's
            model.heads[name].load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        for buffer in (f"shift_{name}", f"scale_{name}"):
            getattr(model.normalizer, buffer).copy_(state[f"normalizer.{buffer}"])
        key = f"weighting.log_variance.{name}"
        if key in state and hasattr(model.weighting, "log_variance"):
            model.weighting.log_variance[name].data.copy_(state[key])
    for new, source in (init_heads or {}).items():
        start_head_from(model, new, source, state, path, reused)
    return reused


def start_head_from(model, new: str, source: str, state: dict, path: str, reused: list[str]) -> None:
    """The readout of task ``new`` starts from the pretrained readout of ``source`` (same readout class and shapes)."""
    if new not in model.tasks:
        raise ConfigError(f"model.init_heads: {new!r} is not one of this model's tasks {sorted(model.tasks)}")
    if new in reused:
        raise ConfigError(f"model.init_heads: {new!r} is defined as in {path} and reuses its own head already")
    prefix = f"heads.{source}."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ConfigError(f"model.init_heads: {path} has no task {source!r} to start {new!r} from")
    try:
        model.heads[new].load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"model.init_heads: the readout of {source!r} does not fit {new!r} (a "
                          f"{model.tasks[new].kind} task): {str(err).strip().splitlines()[0][:200]}") from None


def frozen_parameters(model, mode: str, trainable_layers: int) -> list:
    """Encoder parameters that do not train under ``mode``."""
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"finetune must be one of {FINETUNE_MODES}, got {mode!r}")
    if mode == "all":
        return []
    if mode == "frozen_encoder":
        return list(model.encoder.parameters())
    layers = model.encoder.layer_modules()
    if not 1 <= trainable_layers <= len(layers):
        raise ConfigError(f"trainable_layers must be 1..{len(layers)}, got {trainable_layers}")
    trainable = {id(p) for layer in layers[len(layers) - trainable_layers:] for p in layer.parameters()}
    return [p for p in model.encoder.parameters() if id(p) not in trainable]
