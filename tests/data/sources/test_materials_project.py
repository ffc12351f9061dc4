"""MaterialsProjectJSON on mp-api-style summary docs built from real structures; MaterialsProjectAPI's errors."""

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.sources import MaterialsProjectAPI, MaterialsProjectJSON
from equiprop.data.tasks import resolve_tasks

TASKS = ["Ef", "Eg", "is_metal", "K_VRH", "G_VRH", "eps_electronic"]

@pytest.fixture(scope="module")
def tiny(tiny_multitask_path) -> list[dict]:
    return json.loads(tiny_multitask_path.read_text())["entries"]


def _moduli(value):
    # summary docs nest the three averages; only vrh is real here, the others are left unset
    return None if value is None else {"voigt": None, "reuss": None, "vrh": value}


def summary_doc(entry: dict) -> dict:
    """An mp-api summary document (field names and nesting as in SummaryDoc) from one tiny entry."""
    is_metal = None if entry["Eg"] is None else entry["Eg"] == 0.0
    if entry["material_id"] == "mp-2":  # Pd: a metal in the Materials Project
        is_metal = True
    return {"material_id": entry["material_id"], "structure": entry["structure"],
            "formation_energy_per_atom": entry["Ef"], "band_gap": entry["Eg"], "is_metal": is_metal,
            "bulk_modulus": _moduli(entry["K_VRH"]), "shear_modulus": _moduli(entry["G_VRH"]),
            "e_electronic": entry["eps_electronic"], "e_total": entry["eps_total"]}


@pytest.fixture
def docs_file(tmp_path, tiny) -> Path:
    path = tmp_path / "mp_summary.json"
    path.write_text(json.dumps([summary_doc(e) for e in tiny]))
    return path


def test_reads_summary_docs(docs_file, tiny):
    result = MaterialsProjectJSON(str(docs_file)).load(resolve_tasks(TASKS))
    assert result.name == "mp:mp_summary" and str(docs_file) in result.provenance
    assert result.entries_read == 58 and len(result.records) == 58 and result.skips.total == 0
    assert result.label_skips.total == 0
    assert result.missing == {"Ef": 17, "Eg": 31, "is_metal": 30, "K_VRH": 43, "G_VRH": 43, "eps_electronic": 31}
    assert result.label_counts() == {"Ef": 41, "Eg": 27, "is_metal": 28, "K_VRH": 15, "G_VRH": 15,
                                     "eps_electronic": 27}
    by_id = {r.id: r for r in result.records}
    for entry in tiny:
        record = by_id[entry["material_id"]]
        assert record.source == "mp:mp_summary"
        for task, field in [("Ef", "Ef"), ("Eg", "Eg"), ("K_VRH", "K_VRH"), ("G_VRH", "G_VRH")]:
            assert record.labels.get(task) == entry[field]  # nested bulk_modulus.vrh read through the dotted path
        if entry["eps_electronic"] is not None:
            tensor = record.labels["eps_electronic"]
            assert tensor.shape == (3, 3)
            np.testing.assert_allclose(tensor, entry["eps_electronic"], atol=1e-3 * np.abs(tensor).max())
        structure = Structure.from_dict(entry["structure"])
        np.testing.assert_allclose(record.positions, structure.cart_coords, atol=1e-10)
    assert by_id["mp-2"].labels["is_metal"] == 1.0  # bool True -> 1
    assert by_id["mp-10166"].labels["is_metal"] == 0.0  # bool False -> 0


def test_gzip_custom_columns_and_bad_documents(tmp_path, tiny):
    docs = [summary_doc(e) for e in tiny[:6]]
    docs[0]["e_electronic"] = 12.5  # today's summary docs hold the scalar average: refused for a tensor task
    docs[1]["structure"] = {k: v for k, v in docs[1]["structure"].items() if k != "lattice"}
    del docs[2]["material_id"]
    for doc in docs:
        doc["my"] = {"gap": doc.pop("band_gap")}  # a custom nested field, named through columns
    path = tmp_path / "docs.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(docs, f)
    source = MaterialsProjectJSON(str(path), columns={"Eg": "my.gap", "eps_electronic": "e_electronic"})
    assert source.name == "mp:docs"
    result = source.load(resolve_tasks(["Eg", "eps_electronic"]))
    assert result.entries_read == 6 and [r.id for r in result.records] == [tiny[i]["material_id"] for i in (0, 3, 4, 5)]
    assert result.skips.counts == {"unparseable structure": 1, "document without material_id": 1}
    assert result.label_skips.counts == {"eps_electronic: tensor of wrong shape": 1}
    assert "eps_electronic" not in result.records[0].labels and result.records[0].labels["Eg"] == tiny[0]["Eg"]
    assert [r.labels["Eg"] for r in result.records] == [tiny[i]["Eg"] for i in (0, 3, 4, 5)]
    assert [r.labels.get("eps_electronic") is not None for r in result.records] == [False, True, True, True]


def test_json_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        MaterialsProjectJSON(str(tmp_path / "none.json")).load(resolve_tasks(["Ef"]))
    obj = tmp_path / "obj.json"
    obj.write_text('{"material_id": "mp-1"}')
    with pytest.raises(DataError, match="list of documents"):
        MaterialsProjectJSON(str(obj)).load(resolve_tasks(["Ef"]))
    with pytest.raises(ConfigError, match="none of the requested tasks"):
        MaterialsProjectJSON(str(obj)).load(resolve_tasks(["phdos_peak"]))


def test_api_needs_a_key(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="MP_API_KEY"):
        MaterialsProjectAPI(material_ids=["mp-149"]).load(resolve_tasks(["Ef"]))


@pytest.mark.skipif(importlib.util.find_spec("mp_api") is not None, reason="mp-api is installed")
def test_api_needs_mp_api(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="pip install mp-api"):
        MaterialsProjectAPI(material_ids=["mp-149"], api_key="0" * 32).load(resolve_tasks(["Ef"]))
    monkeypatch.setenv("MP_API_KEY", "0" * 32)  # the key from the environment is enough to get that far
    with pytest.raises(ConfigError, match="pip install mp-api"):
        MaterialsProjectAPI().load(resolve_tasks(["Ef"]))
