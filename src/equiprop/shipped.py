"""Models that ship with equiprop, loaded by name, offline: ``equiprop-mp-v1``, ``equiprop-mp-v2``.

    equiprop models                                            # what ships: tasks with units, data, test metrics, size
    equiprop predict --model equiprop-mp-v1 --input my_cifs/ --output out.csv
    from equiprop import load_predictor; load_predictor("equiprop-mp-v1").predict([structure])
    equiprop screen ... --phase2 equiprop-mp-v1
    model: {init_from: equiprop-mp-v1, ...}                    # transfer to a new task, in a recipe

A shipped model is a folder ``checkpoints/<name>/`` of the source tree holding ``model.json`` (an ensemble manifest,
``equiprop.uncertainty.ensemble``, plus what the model card and ``equiprop models`` show), weights-only member
checkpoints and ``README.md`` (the model card). The package reaches it as ``equiprop/shipped_models`` (a link to
``checkpoints/`` in a checkout, a copy inside a wheel). The pretrained backbone is not copied: each member records its
name and the sha256 of the weights file the installed ``sevenn`` ships (``equiprop.train.export``).

Everywhere a name is accepted, a path keeps working: a value that names an existing file is a path; otherwise a
shipped model's name; anything else is a one-line error listing the shipped models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from equiprop.data.errors import ConfigError

SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped_models"
MODEL_FILE = "model.json"


def shipped_models() -> dict[str, Path]:
    """{name: folder} of every shipped model (a folder of ``SHIPPED_ROOT`` holding a model.json)."""
    if not SHIPPED_ROOT.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_ROOT.iterdir()) if (p / MODEL_FILE).is_file()}


def looks_like_name(value) -> bool:
    """A bare word (no folder, no file suffix such as .ckpt/.json) that is not an existing file (a folder of that
    name, such as checkpoints/equiprop-mp-v1 seen from checkpoints/, is no checkpoint: the name wins)."""
    text = str(value)
    return not Path(text).is_file() and "/" not in text and Path(text).suffix not in (".ckpt", ".json", ".pt")


def resolve(value: str | Path) -> str:
    """A shipped model's name -> its model.json (an ensemble manifest); a path -> itself."""
    if not looks_like_name(value):
        return str(value)
    models = shipped_models()
    if str(value) not in models:
        known = ", ".join(models) or "none found under " + str(SHIPPED_ROOT)
        raise ConfigError(f"{value!r} is neither a file nor a shipped model (shipped models: {known})")
    return str(models[str(value)] / MODEL_FILE)


def shipped_folder_of(path: str | Path) -> Path | None:
    """The shipped model's folder that ``path`` is (or lies in), else None; links resolved, so the repo's
    ``checkpoints/equiprop-mp-v1`` and ``equiprop/shipped_models/equiprop-mp-v1`` are one folder."""
    target = Path(path).expanduser().resolve()
    for folder in shipped_models().values():
        folder = folder.resolve()
        if target == folder or folder in target.parents:
            return folder
    return None


def refuse_shipped(path: str | Path, option: str) -> None:
    """ConfigError unless ``path`` lies outside every shipped model's folder: no command writes, replaces or deletes
    a file of a model that ships (its members are pinned by sha256 in its model.json)."""
    folder = shipped_folder_of(path)
    if folder is not None:
        raise ConfigError(f"{option} {path} lies in the shipped model {folder.name} ({folder}): shipped models are "
                          "read-only; write somewhere else")


def refuse_shipped_name(name: str, option: str = "run_name") -> None:
    """A run may not take a shipped model's name: wherever a model is named, the name means the shipped model."""
    if str(name).split("/")[0] in shipped_models():
        raise ConfigError(f"{option} {name!r} is the name of a shipped model (equiprop models): runs never write "
                          "into a shipped model's folder; choose another name")


def resolve_all(values) -> list[str]:
    return [resolve(v) for v in ([values] if isinstance(values, (str, Path)) else values)]


def first_member(value: str | Path) -> str:
    """The checkpoint a transfer starts from: a checkpoint path as given; for a shipped model (or any ensemble
    manifest) its first member, the seed named first in the card, checked against the sha256 the manifest records."""
    from equiprop.train.integrity import read_manifest

    path = Path(resolve(value))
    if path.suffix != ".json":
        return str(path)
    return read_manifest(path)["members"][0]


def model_info(name: str) -> dict:
    """The model.json of a shipped model, its content checked (``integrity.parse_manifest``, the one reader of
    manifests; DataError naming the file if it is not one)."""
    from equiprop.train.integrity import parse_manifest

    return parse_manifest(resolve(name))


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe_models() -> str:
    """The table ``equiprop models`` prints."""
    models = shipped_models()
    if not models:
        return f"no shipped models found under {SHIPPED_ROOT}"
    blocks = []
    for name, folder in models.items():
        info = model_info(name)
        lines = [f"{name}: {info.get('description', '')}",
                 f"  backbone: {describe_backbone(info.get('backbone'))}",
                 f"  members: {len(info.get('members', []))} (deep ensemble; every output has a std in its units)",
                 f"  training data: {info.get('training_data', {}).get('summary', 'see the model card')}",
                 f"  size: {folder_size(folder) / 1e6:.1f} MB in {folder}",
                 f"  model card: {folder / 'README.md'}",
                 f"  {'task':<16} {'units':<14} {'test MAE':>10} {'median baseline':>16} {'1-sigma':>8}  metric"]
        for task, row in info.get("test_metrics", {}).items():
            lines.append(f"  {task:<16} {row.get('units', ''):<14} {_num(row.get('mae')):>10} "
                         f"{_num(row.get('median_mae')):>16} {_num(row.get('within_1sigma')):>8}  "
                         f"{row.get('metric', '')}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def describe_backbone(backbone: dict | None) -> str:
    if not backbone:
        return "none (all weights in the members)"
    return (f"{backbone['model']} from the installed {backbone['package']} {backbone.get('version', '')} "
            f"(weights file sha256 {backbone['sha256'][:12]}..., not copied)")


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def models_command(argv: list[str]) -> int:
    if argv and argv[0] not in ("-h", "--help"):
        name = argv[0]
        print(json.dumps(model_info(name), indent=1))
        return 0
    if argv:
        print("usage: equiprop models [NAME]   (no name: the table of shipped models; NAME: its model.json)")
        return 0
    print(describe_models())
    return 0


if __name__ == "__main__":
    sys.exit(models_command(sys.argv[1:]))
