"""Files read back are checked before they are used: checkpoints loaded safely, digests compared, manifests validated.

- ``read_checkpoint``: ``torch.load(weights_only=True)`` only (tensors and plain types, nothing unpickled). Whatever
  the file is, the caller gets one line naming it; the message never passes on torch's own advice for a refused
  object (to reload it unsafely, which would run the file's code).
- ``check_digest``: a file whose bytes differ from the sha256 recorded for it (a flipped bit, a
  member swapped for another model's) is a one-line DataError naming the file, before a single weight is used.
- ``read_manifest``: an ensemble manifest (``model.json`` of a shipped model, ``<run>_ensemble.json`` written by
  ``equiprop calibrate``/``ensemble``): its members resolved beside it, each member's sha256 (``member_sha256``)
  checked, its std scales finite and positive numbers, its units a mapping of strings.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from pathlib import Path

import torch

from equiprop.data.dataset import file_digest
from equiprop.data.errors import ConfigError, DataError

MANIFEST_FORMAT = "equiprop-ensemble-1"
DIGEST_KEY = "member_sha256"  # {member entry as written in "members": sha256 of its bytes}
# what torch.load(weights_only=True) raises on files that are not (whole) checkpoints: empty (EOFError), truncated
# or not a zip (RuntimeError, BadZipFile), plain text (KeyError, UnicodeDecodeError), ...
CHECKPOINT_LOAD_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError, IndexError,
                          AttributeError, UnicodeDecodeError, OSError, MemoryError)


def check_digest(path: str | Path, expected: str, recorded_in: str) -> None:
    """DataError naming ``path`` unless its sha256 is ``expected`` (as recorded in ``recorded_in``)."""
    actual = file_digest(path)
    if actual != expected:
        raise DataError(str(path), f"sha256 {actual[:16]}... differs from the {expected[:16]}... recorded in "
                                   f"{recorded_in}: the file was changed, damaged or swapped for another; restore it "
                                   "(reinstall equiprop for a shipped model)", "digest mismatch")


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint as plain types (``weights_only=True``); ConfigError if missing, DataError naming the file if it
    is not a readable torch file or holds objects other than tensors and plain types."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing; the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the file is, the user gets one line naming it
        refused = "Weights only load failed" in str(err)  # torch's refusal; its advice is never passed on
        if refused and "GLOBAL" in str(err).upper():  # an object: never unpickled
            raise DataError(str(path), "not an equiprop checkpoint: it holds objects other than tensors and plain "
                                       "types, which equiprop never loads (a file from an unknown source may run "
                                       "code when unpickled)", "bad checkpoint") from None
        if not refused and not isinstance(err, CHECKPOINT_LOAD_ERRORS):
            raise
        raise DataError(str(path), f"not a readable checkpoint (empty, truncated or not a torch file; "
                                   f"{type(err).__name__})", "bad checkpoint") from None


def member_digests(manifest_path: Path, entries: list[str]) -> dict[str, str]:
    """{entry: sha256} of the members a manifest at ``manifest_path`` lists (entries relative to its folder)."""
    return {entry: file_digest(_member_path(manifest_path, entry)) for entry in entries}


def _member_path(manifest_path: Path, entry: str) -> Path:
    return Path(entry) if Path(entry).is_absolute() else manifest_path.parent / entry


def read_manifest(path: str | Path) -> dict:
    """An ensemble manifest, checked: its content (``parse_manifest``), and its members resolved relative to it and
    verified against their recorded sha256 (``manifest["notices"]`` says so when none is recorded: a manifest from
    before digests). DataError naming the manifest (or the member) otherwise."""
    path = Path(path)
    manifest = parse_manifest(path)
    entries = manifest["members"]
    manifest["notices"] = _checked_members(path, entries, manifest.get(DIGEST_KEY))
    manifest["members"] = [str(_member_path(path, e)) for e in entries]
    return manifest


def parse_manifest(path: str | Path) -> dict:
    """The content of an ensemble manifest (a shipped model's ``model.json``), checked but its members not read:
    the format, a non-empty members list, std scales finite and positive, units strings. The one reader of the
    file (``read_manifest`` adds the members' checks; ``equiprop models`` prints it)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(str(path), f"not a readable ensemble manifest ({type(err).__name__}: {err})",
                        "bad manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(str(path), f"not an equiprop ensemble manifest (format {MANIFEST_FORMAT!r} expected)",
                        "bad manifest")
    entries = manifest.get("members")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e for e in entries):
        raise DataError(str(path), "'members' must be a non-empty list of checkpoint paths", "bad manifest")
    manifest["std_scale"] = _checked_scales(path, manifest.get("std_scale"))
    units = manifest.get("units", {})
    if not isinstance(units, dict) or not all(isinstance(u, str) for u in units.values()):
        raise DataError(str(path), "'units' must map each task to its units (a string)", "bad manifest")
    return manifest


def _checked_scales(path: Path, scales) -> dict[str, float]:
    if scales is None:
        return {}
    if not isinstance(scales, dict):
        raise DataError(str(path), "'std_scale' must map outputs to numbers", "bad manifest")
    for name, value in scales.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(str(path), f"std_scale.{name} is {value!r}: a number is expected", "bad manifest")
        if not math.isfinite(value) or value <= 0:
            raise DataError(str(path), f"std_scale.{name} is {value!r}: a std scale must be finite and > 0 (it "
                                       "multiplies every standard deviation of that output)", "bad manifest")
    return {name: float(value) for name, value in scales.items()}


def _checked_members(path: Path, entries: list[str], digests) -> list[str]:
    if digests is None:
        return [f"{path} records no sha256 of its members (written before equiprop checked them): the members are "
                "used unverified; rewrite it with `equiprop calibrate` to pin them"]
    if not isinstance(digests, dict) or set(digests) != set(entries):
        raise DataError(str(path), f"'{DIGEST_KEY}' must give one sha256 for each member ({', '.join(entries)})",
                        "bad manifest")
    for entry in entries:
        member = _member_path(path, entry)
        if not member.is_file():
            raise ConfigError(f"{path}: member not found: {member}")
        check_digest(member, str(digests[entry]), str(path))
    return []
