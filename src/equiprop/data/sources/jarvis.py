"""JARVIS-DFT datasets (figshare JSON, e.g. dft_3d) and the JARVIS-Leaderboard benchmark splits."""

from __future__ import annotations

import gzip
import json
import warnings
import zipfile
from pathlib import Path

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import from_jarvis_dict
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file, requested
from equiprop.data.tasks import TaskSpec

JARVIS_CITATION = "JARVIS-DFT: Choudhary et al., npj Comput. Mater. 6, 173 (2020)"

# equiprop task -> dft_3d field. Missing values are the string "na" in the figshare files.
JARVIS_COLUMNS: dict[str, str] = {
    "Ef": "formation_energy_peratom",  # eV/atom, OptB88vdW
    "Eg": "optb88vdw_bandgap",  # eV
    "Eg_mbj": "mbj_bandgap",  # eV, TBmBJ
    "K_Voigt": "bulk_modulus_kv",  # GPa
    "G_Voigt": "shear_modulus_gv",  # GPa
    "e_above_hull": "ehull",  # eV/atom
    "exfoliation_energy": "exfoliation_energy",  # meV/atom
}


def read_json_any(path: Path) -> object:
    """JSON from a .json, .json.gz or single-member .zip file (the figshare downloads are zips)."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.endswith(".json")]
                if len(members) != 1:
                    raise DataError(str(path), f"expected one .json member in the zip, found {members}",
                                    "unexpected file layout")
                return json.loads(archive.read(members[0]))
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile) as err:
        raise DataError(str(path), f"unreadable JSON ({type(err).__name__}: {err})", "unreadable file") from None


class JarvisDFT3D(Source):
    """A JARVIS-DFT figshare dataset (default ``dft_3d``): a list of entries with "jid", "atoms" and property fields.

    With ``path`` the local file (JSON, JSON.gz, or the figshare zip) is read; without it, jarvis-tools downloads the
    dataset from figshare into ``store_dir`` (needs network access). Record ids are the JARVIS ids ("JVASP-1002").
    """

    def __init__(self, dataset: str = "dft_3d", path: str | None = None, store_dir: str | None = None,
                 columns: dict[str, str] | None = None):
        """
        Args:
            dataset: JARVIS figshare dataset name, e.g. "dft_3d" or "dft_2d".
            path: local copy of the dataset in the figshare format (a JSON list of entries); skips the download.
            store_dir: folder jarvis-tools downloads into and reads from (default: its cache folder).
            columns: task -> entry field; default JARVIS_COLUMNS (Ef, Eg, Eg_mbj, K_Voigt, G_Voigt, e_above_hull,
                exfoliation_energy).
        """
        self.dataset = dataset
        self.path = path
        self.store_dir = store_dir
        self.columns = dict(JARVIS_COLUMNS if columns is None else columns)
        self.name = f"jarvis:{dataset}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        columns = requested(self.columns, tasks)
        if not columns:
            raise ConfigError(f"{self.name}: none of the requested tasks {list(tasks)} has a column here "
                              f"(columns: {self.columns})")
        entries, origin = self._entries()
        if not isinstance(entries, list):
            raise DataError(origin, "expected a JSON list of entries (the figshare format)", "unexpected file layout")
        result = SourceResult(self.name, f"{origin} ({JARVIS_CITATION})")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "atoms" not in entry:
                result.entries_read += 1
                result.skips.add("entry without atoms", f"{origin}[{i}]")
                continue
            jid = str(entry.get("jid", f"{Path(origin).stem}:{i}"))
            # a field absent from an entry is as missing as "na": add_entry masks and counts both
            raw_labels = {task: entry.get(field) for task, field in columns.items()}
            add_entry(result, jid, lambda: from_jarvis_dict(entry["atoms"], jid, self.name), raw_labels, tasks)
        return result

    def _entries(self) -> tuple[object, str]:
        if self.path is not None:
            path = require_file(self.path, self.name)
            return read_json_any(path), str(path)
        try:
            from jarvis.db.figshare import data, get_db_info

            if self.dataset not in get_db_info():
                raise ConfigError(f"unknown JARVIS dataset {self.dataset!r}; see jarvis.db.figshare.get_db_info()")
            return data(self.dataset, store_dir=self.store_dir), f"figshare:{self.dataset}"
        except ConfigError:
            raise
        except Exception as err:  # requests errors, a truncated zip, no jarvis-tools: all mean "no data here"
            raise ConfigError(
                f"{self.name}: the dataset could not be downloaded from figshare ({type(err).__name__}: {err}). "
                f"Without network access, download it elsewhere (jarvis.db.figshare.data({self.dataset!r}, "
                f"store_dir=...)) and pass path=<the .json or .json.zip file>, or store_dir=<its folder>") from err


def jarvis_leaderboard_split(path: str) -> dict[str, list[str]]:
    """The train/val/test JARVIS ids of a jarvis-leaderboard benchmark file (e.g. dft_3d_ehull.json.zip).

    The file's JSON is {"train": {jid: target}, "val": {...}, "test": {...}}; the targets are dropped (the labels come
    from the dataset itself). A few official splits list a jid in two parts (dft_3d holds some jids twice, e.g.
    JVASP-96735): such an id is kept only in the later part (test, else val) so that nothing leaks into training and
    the test set stays exactly the official one; a warning says how many were moved.
    """
    file = require_file(path, "jarvis-leaderboard split")
    doc = read_json_any(file)
    if not isinstance(doc, dict) or not {"train", "test"} <= doc.keys():
        raise DataError(str(file), 'expected a JSON object with "train", "val" and "test" id -> target maps',
                        "unexpected file layout")
    parts = [part for part in ("train", "val", "test") if part in doc]
    split = {part: [str(jid) for jid in doc[part]] for part in parts}
    later: set[str] = set()
    dropped = {}
    for part in reversed(parts):  # test first: it wins every overlap
        kept = [jid for jid in split[part] if jid not in later]
        dropped[part] = len(split[part]) - len(kept)
        split[part] = kept
        later.update(kept)
    if any(dropped.values()):
        warnings.warn(f"{file}: {sum(dropped.values())} ids listed in two parts were kept only in the later one "
                      f"(removed from: {', '.join(f'{p} {n}' for p, n in dropped.items() if n)})")
    return split
