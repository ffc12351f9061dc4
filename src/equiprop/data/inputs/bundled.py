"""The datasets shipped with equiprop, as ``bundled:NAME``."""

from __future__ import annotations

from functools import lru_cache

from equiprop.data.errors import DataError
from equiprop.data.inputs.failure import InputFailure
from equiprop.data.record import CrystalRecord


@lru_cache(maxsize=2)
def _bundled_records(name: str) -> list[dict]:
    from equiprop.data.sources.records_json import bundled_path, read_json

    content = read_json(bundled_path(name))
    return content.get("records") or content.get("entries") or []


class Bundled:
    """A dataset shipped with equiprop (``bundled:default``: 5,909 crystals, 1 MB gzipped, loaded once per
    process as JSON dicts; records are built only for the items asked for)."""

    kind = "bundled"

    def __init__(self, name: str):  # with labels, ``expand`` reads it through its Source (BundledDataset) instead
        self.name = name
        self.count = len(_bundled_records(name))

    def __len__(self):
        return self.count

    def signature(self) -> dict:
        return {"kind": self.kind, "name": self.name, "count": self.count}

    def read(self, start: int, stop: int):
        from equiprop.data.record import from_pymatgen_dict

        for d in _bundled_records(self.name)[start:stop]:
            try:
                if "structure" in d:  # the tiny layout: pymatgen dicts
                    yield from_pymatgen_dict(d["structure"], d["material_id"], f"bundled:{self.name}")
                else:
                    record = CrystalRecord.from_dict(d)
                    record.source, record.labels = f"bundled:{self.name}", {}
                    yield record
            except DataError as err:
                yield InputFailure.of(err, f"bundled:{self.name}", str(d.get("id", d.get("material_id", "?"))))


