"""Materials Project documents: a saved JSON list of mp-api summary docs, or a live query through mp-api."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, from_pymatgen, from_pymatgen_dict
from equiprop.data.sources.base import Source, SourceResult, add_entry, get_path, require_file, requested
from equiprop.data.tasks import TaskSpec

MP_CITATION = "Materials Project: Jain et al., APL Mater. 1, 011002 (2013); CC BY 4.0"

# equiprop task -> dotted field of an mp-api summary document.
# In summary docs e_electronic/e_total are scalar averages; a 3x3 tensor there (legacy API, matminer exports) is
# read as a tensor, a scalar is refused for a tensor task and counted in label_skips.
MP_COLUMNS: dict[str, str] = {
    "Ef": "formation_energy_per_atom",  # eV/atom
    "Eg": "band_gap",  # eV, PBE(+U)
    "is_metal": "is_metal",  # bool
    "K_VRH": "bulk_modulus.vrh",  # GPa
    "G_VRH": "shear_modulus.vrh",  # GPa
    "e_above_hull": "energy_above_hull",  # eV/atom
    "eps_electronic": "e_electronic",
    "eps_total": "e_total",
}


def _raw_labels(doc: dict, columns: dict[str, str]) -> dict:
    """task -> raw value; booleans (is_metal) become 0/1."""
    labels = {}
    for task, field in columns.items():
        value = get_path(doc, field)
        labels[task] = int(value) if isinstance(value, bool) else value
    return labels


def _record(doc: dict, entry_id: str, source: str) -> CrystalRecord:
    structure = doc.get("structure")
    if structure is None:
        raise DataError(entry_id, "document has no structure", "missing structure")
    if isinstance(structure, dict):  # JSON file, or mp-api without monty decoding
        return from_pymatgen_dict(structure, entry_id, source)
    return from_pymatgen(structure, entry_id, source)  # mp-api decodes to pymatgen Structure objects


def _add_documents(result: SourceResult, docs: list, columns: dict[str, str], tasks: dict[str, TaskSpec]) -> None:
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or "material_id" not in doc:
            result.entries_read += 1
            result.skips.add("document without material_id", f"{result.name}[{i}]")
            continue
        mp_id = str(doc["material_id"])
        add_entry(result, mp_id, lambda: _record(doc, mp_id, result.name), _raw_labels(doc, columns), tasks)


def _requested_columns(name: str, columns: dict[str, str], tasks: dict[str, TaskSpec]) -> dict[str, str]:
    chosen = requested(columns, tasks)
    if not chosen:
        raise ConfigError(f"{name}: none of the requested tasks {list(tasks)} has a field here (columns: {columns})")
    return chosen


class MaterialsProjectJSON(Source):
    """A JSON (or JSON.gz) list of Materials Project documents, each with "material_id" and "structure".

    Typically mp-api summary docs saved with ``json.dump([doc.model_dump(mode="json") ...])`` or monty's
    ``dumpfn``. Labels are read from dotted fields (``bulk_modulus.vrh``); record ids are the MP ids.
    """

    def __init__(self, path: str, columns: dict[str, str] | None = None):
        """
        Args:
            path: JSON or JSON.gz file holding a list of documents.
            columns: task -> dotted document field; default MP_COLUMNS (summary-doc field names).
        """
        self.path = path
        self.columns = dict(MP_COLUMNS if columns is None else columns)
        stem = Path(path).name.removesuffix(".gz").removesuffix(".json")
        self.name = f"mp:{stem}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        columns = _requested_columns(self.name, self.columns, tasks)
        path = require_file(self.path, self.name)
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                docs = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(str(path), f"unreadable JSON ({type(err).__name__}: {err})", "unreadable file") from None
        if not isinstance(docs, list):
            raise DataError(str(path), "expected a JSON list of documents", "unexpected file layout")
        result = SourceResult(self.name, f"{path} ({MP_CITATION})")
        _add_documents(result, docs, columns, tasks)
        return result


class MaterialsProjectAPI(Source):
    """Summary documents queried live from the Materials Project with mp-api (``pip install mp-api``; needs a key).

    mp-api is not a dependency of equiprop. For reproducible runs, save the documents once and read them with
    ``MaterialsProjectJSON``.
    """

    def __init__(self, material_ids: list[str] | None = None, api_key: str | None = None,
                 columns: dict[str, str] | None = None):
        """
        Args:
            material_ids: MP ids to fetch, e.g. ["mp-149"]; None fetches every material that has all the
                requested fields (large).
            api_key: Materials Project API key (default: the MP_API_KEY environment variable).
            columns: task -> dotted summary-doc field; default MP_COLUMNS.
        """
        self.material_ids = list(material_ids) if material_ids is not None else None
        self.api_key = api_key
        self.columns = dict(MP_COLUMNS if columns is None else columns)
        self.name = "mp:api"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        columns = _requested_columns(self.name, self.columns, tasks)
        api_key = self.api_key or os.environ.get("MP_API_KEY")
        if not api_key:
            raise ConfigError(f"{self.name}: no Materials Project API key: pass api_key or set MP_API_KEY "
                              "(get one at https://next-gen.materialsproject.org/api)")
        try:
            from mp_api.client import MPRester
        except ImportError:
            raise ConfigError(f"{self.name}: mp-api is not installed: pip install mp-api") from None
        fields = sorted({"material_id", "structure"} | {field.split(".")[0] for field in columns.values()})
        try:
            with MPRester(api_key, use_document_model=False) as rester:
                docs = rester.materials.summary.search(material_ids=self.material_ids, fields=fields)
        except Exception as err:  # network, bad key, server errors: report them as a configuration problem
            raise ConfigError(f"{self.name}: Materials Project query failed ({type(err).__name__}: {err})") from err
        ids = "all" if self.material_ids is None else f"{len(self.material_ids)} ids"
        result = SourceResult(self.name, f"mp-api summary search ({ids}; fields {fields}) ({MP_CITATION})")
        _add_documents(result, [dict(doc) for doc in docs], columns, tasks)
        return result
