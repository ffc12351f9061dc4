"""Weights-only checkpoints that reference their pretrained backbone instead of copying it.

``export_weights`` turns a training checkpoint into what ships: the model description (``equiprop`` section), the
hyperparameters and the state dict, without optimiser, scheduler, loop or callback state. Encoder tensors that are
exactly the pretrained potential's (a frozen SevenNet) are dropped and replaced by a ``backbone`` record: the
potential's name, the package and version that ship it, and the sha256 of its weights file. ``restore_backbone``
puts them back from the installed package when the checkpoint is loaded, after checking that file's sha256: another
file (another sevenn release) is a one-line error, never a silently different model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from equiprop.data.errors import DataError

ENCODER_PREFIX = "encoder."


def backbone_record(encoder) -> dict | None:
    """{package, version, model, file, sha256} of the pretrained weights an encoder was loaded from (None: none)."""
    source = getattr(encoder, "pretrained_source", None)
    return source() if callable(source) else None


def export_weights(checkpoint: dict, encoder) -> dict:
    """The weights-only form of a loaded training checkpoint (``torch.load`` dict) whose model uses ``encoder``
    (built with the same configuration): encoder tensors equal to the freshly loaded pretrained ones are dropped."""
    state = dict(checkpoint["state_dict"])
    meta = dict(checkpoint["equiprop"])
    backbone = backbone_record(encoder)
    if backbone is not None:
        pretrained = encoder.state_dict()
        same = [k for k in state if k.startswith(ENCODER_PREFIX) and k[len(ENCODER_PREFIX):] in pretrained
                and torch.equal(state[k], pretrained[k[len(ENCODER_PREFIX):]])]
        for key in same:
            del state[key]
        backbone["dropped_tensors"] = len(same)
        backbone["file"] = "/".join(Path(backbone["file"]).parts[-2:])  # inside the package; no build-machine path
        meta["backbone"] = backbone
    return {"equiprop": meta, "hyper_parameters": dict(checkpoint.get("hyper_parameters", {})),
            "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()}}


def check_backbone(backbone: dict, encoder, where: str) -> None:
    """DataError naming ``where`` unless the installed pretrained weights are the recorded file (sha256)."""
    installed = backbone_record(encoder)
    if installed is None or installed["model"] != backbone["model"]:
        raise DataError(where, f"needs the pretrained backbone {backbone['model']!r} ({backbone['package']}), which "
                               "this encoder does not load", "backbone mismatch")
    if installed["sha256"] != backbone["sha256"]:
        raise DataError(where, f"was built on {backbone['model']} weights with sha256 {backbone['sha256'][:16]}... "
                               f"({backbone['package']} {backbone.get('version')}), but the installed file "
                               f"{installed['file']} has sha256 {installed['sha256'][:16]}... ({backbone['package']} "
                               f"{installed.get('version')}); install {backbone['package']}=={backbone.get('version')}",
                        "backbone mismatch")


def restore_backbone(meta: dict, state: dict, encoder, where: str) -> dict:
    """``state`` with the dropped pretrained encoder tensors put back from ``encoder`` (which loaded them), after
    ``check_backbone``; a state without a backbone record is returned as it is."""
    backbone = meta.get("backbone")
    if not backbone:
        return state
    check_backbone(backbone, encoder, where)
    own = {ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    return {**own, **state}
