"""``equiprop predict`` and ``Predictor`` on a real (tiny, one-epoch) checkpoint and real structure files.

The path every prediction takes: loading and checking a checkpoint (``equiprop.inference.checkpoints``), the
structure checks (``equiprop.inference.checks``: periodicity, unseen elements, non-finite outputs) and the written
tables with their units (``equiprop.inference.outputs``). Everything comes from the package itself (the bundled tiny dataset), so these tests pass on a fresh clone.
"""

import csv
import json
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from equiprop import Predictor
from equiprop.cli import main
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import DataError
from equiprop.data.sources import RecordsJSON
from equiprop.data.sources.records_json import bundled_path
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

WIDE_GAP = {"name": "is_wide_gap", "key": "is_wide_gap", "units": "dimensionless", "kind": "binary"}
TASKS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor", WIDE_GAP]
OUTPUTS = ["Ef", "Eg", "K_VRH", "eps_electronic", "elastic_tensor", "is_wide_gap", "K_Voigt", "G_Voigt"]
WATER = "3\nwater\nO 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"


@pytest.fixture(scope="session")
def bundled_entries() -> list[dict]:
    return json.loads(bundled_path("tiny").read_text())["entries"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, bundled_entries, quiet_trainer) -> Path:
    """One short real training on the bundled tiny structures, with a binary task built from their band gaps."""
    root = tmp_path_factory.mktemp("trained")
    labelled = [dict(e, is_wide_gap=None if e.get("Eg") is None else float(e["Eg"] > 2.0))
                for e in bundled_entries]
    (root / "tiny_binary.json").write_text(json.dumps({"meta": {}, "entries": labelled}))
    L.seed_everything(0)
    data = MultiTaskDataModule(sources=[RecordsJSON(str(root / "tiny_binary.json"))], tasks=TASKS, cutoff=4.5,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(root / "cache"))
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1), TASKS)
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=1, default_root_dir=str(root))
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"


@pytest.fixture(scope="session")
def entries(checkpoint, bundled_entries) -> list[dict]:
    """The bundled structures made only of elements the model saw in training (its training split's)."""
    seen = torch.load(checkpoint, weights_only=True)["state_dict"]["species_seen"]
    return [e for e in bundled_entries if all(seen[site.specie.Z] for site in Structure.from_dict(e["structure"]))]


def variant(checkpoint: Path, tmp_path: Path, edit, name: str = "variant.ckpt") -> Path:
    """A copy of the checkpoint changed by ``edit(dict)``, saved as a real checkpoint file."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(content)
    torch.save(content, tmp_path / name)
    return tmp_path / name


def structure(entries, i: int = 0) -> Structure:
    return Structure.from_dict(entries[i]["structure"])


def write_cifs(folder: Path, entries, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{entries[i]['material_id']}.cif" for i in range(n)]
    for i, path in enumerate(paths):
        structure(entries, i).to(filename=str(path))
    return paths


def with_oganesson(entries) -> Structure:
    s = structure(entries)
    s.replace(0, "Og")
    return s


def predict(checkpoint, inputs, output, *flags) -> int:
    return main(["predict", "--checkpoint", str(checkpoint), "--input", *map(str, inputs), "--output", str(output),
                 *flags])


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def by_file(rows: list[dict]) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in rows}


# -- 1. elements unseen in training -----------------------------------------------------------------------------
def test_unseen_elements_are_refused_named_and_allowed_on_request(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 2)
    with_oganesson(entries).to(filename=str(inputs / "og.cif"))
    out = tmp_path / "p.csv"
    assert predict(checkpoint, [inputs], out) == 1
    err = capsys.readouterr().err
    assert "og.cif" in err and "Og" in err and "never saw in training" in err
    rows = by_file(read_csv(out))
    assert rows["og.cif"]["status"] == "failed" and "Og" in rows["og.cif"]["error"]
    assert rows["og.cif"]["Ef [eV/atom]"] == ""
    assert [r["status"] for name, r in rows.items() if name != "og.cif"] == ["ok", "ok"]

    assert predict(checkpoint, [inputs], out, "--allow-unseen-elements") == 0
    assert "og.cif (Og)" in capsys.readouterr().err  # predicted, and the user is told it is extrapolation
    rows = by_file(read_csv(out))
    assert rows["og.cif"]["status"] == "ok" and np.isfinite(float(rows["og.cif"]["Ef [eV/atom]"]))

    with pytest.raises(DataError, match="structure_0: holds elements the model never saw in training: Og"):
        Predictor.from_checkpoint(checkpoint).predict([with_oganesson(entries)])
    allowed = Predictor.from_checkpoint(checkpoint, allow_unseen_elements=True).predict([with_oganesson(entries)])
    assert np.isfinite(allowed[0]["Ef"])


def test_checkpoint_without_recorded_elements_predicts_them_and_says_so_once(checkpoint, entries, tmp_path,
                                                                             capsys):
    old = variant(checkpoint, tmp_path, lambda c: c["state_dict"]["species_seen"].zero_())
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 2)
    with_oganesson(entries).to(filename=str(inputs / "og.cif"))
    assert predict(old, [inputs], tmp_path / "p.csv") == 0
    err = capsys.readouterr().err
    assert err.count("does not record which elements it was trained on") == 1
    assert all(r["status"] == "ok" for r in read_csv(tmp_path / "p.csv"))


# -- 2. molecules ---------------------------------------------------------------------------------------------------
def test_a_molecule_is_refused_as_not_periodic(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 1)
    (inputs / "water.xyz").write_text(WATER)
    out = tmp_path / "p.csv"
    assert predict(checkpoint, [inputs], out) == 1
    assert "water.xyz" in capsys.readouterr().err
    water = by_file(read_csv(out))["water.xyz"]
    assert water["status"] == "failed" and "not periodic" in water["error"]
    assert "equiprop predicts crystals" in water["error"] and "water.xyz" in water["error"]

    from ase.build import molecule

    with pytest.raises(DataError, match="not periodic"):
        Predictor.from_checkpoint(checkpoint).predict([molecule("H2O")])


# -- 3. exit status -------------------------------------------------------------------------------------------------
def test_exit_status_says_whether_everything_was_predicted(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 1)
    (inputs / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    out = tmp_path / "p.csv"
    assert predict(checkpoint, [inputs], out) == 1
    assert "--allow-failures" in capsys.readouterr().err
    assert predict(checkpoint, [inputs], out, "--allow-failures") == 0
    assert predict(checkpoint, [inputs / "broken.cif"], out, "--allow-failures") == 1  # nothing predicted
    assert "nothing was predicted" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict(checkpoint, [tmp_path / "empty"], out, "--allow-failures") == 1
    assert "no input files found" in capsys.readouterr().err


# -- 4. failed inputs in the output ----------------------------------------------------------------------------
def test_csv_and_json_record_every_input_with_its_status(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    cifs = write_cifs(inputs, entries, 2)
    (inputs / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    out = tmp_path / "p.csv"
    assert predict(checkpoint, [inputs], out, "--allow-failures") == 0
    with out.open() as f:
        header = next(csv.reader(f))
    units = Predictor.from_checkpoint(checkpoint).units()
    assert header == ["id", "file", "formula"] + [f"{n} [{units[n]}]" for n in OUTPUTS] + ["status", "error"]
    rows = read_csv(out)
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in cifs + [inputs / "broken.cif"])
    broken = by_file(rows)["broken.cif"]
    assert broken["status"] == "failed" and "cannot parse CIF" in broken["error"]
    assert all(broken[f"{n} [{units[n]}]"] == "" for n in OUTPUTS)
    ok = by_file(rows)[cifs[0].name]
    assert ok["status"] == "ok" and ok["error"] == "" and len(json.loads(ok["eps_electronic [dimensionless]"])) == 3

    out = tmp_path / "p.json"
    assert predict(checkpoint, [inputs], out, "--allow-failures") == 0
    result = json.loads(out.read_text())
    assert [p["status"] for p in result["predictions"]] == ["ok", "ok"]
    assert [(Path(e["file"]).name, e["status"]) for e in result["errors"]] == [("broken.cif", "failed")]
    assert "cannot parse CIF" in result["errors"][0]["error"]


# -- 5. the output path is checked first ------------------------------------------------------------------------
def test_an_unusable_output_path_fails_before_anything_is_computed(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 1)
    missing = tmp_path / "no_such_folder" / "p.csv"
    # a missing checkpoint too: the output path must be the first thing refused
    assert predict(tmp_path / "absent.ckpt", [inputs], missing) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing.parent) in err and "does not exist" in err
    (tmp_path / "a_file").write_text("")
    assert predict(checkpoint, [inputs], tmp_path / "a_file" / "p.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a_file is not a folder" in err
    assert not missing.parent.exists()


# -- 6. bad checkpoints and non-finite predictions ------------------------------------------------------------
def _empty(path: Path):
    path.write_bytes(b"")


def _truncated(path: Path, checkpoint: Path):
    data = checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text(path: Path):
    path.write_text("this is not a checkpoint\n")


def _pickled_object(path: Path):
    path.write_bytes(pickle.dumps(Counter(a=1)))  # written, never read back by equiprop: weights_only refuses it


def _zip_not_torch(path: Path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


@pytest.mark.parametrize("make", [_empty, _truncated, _text, _pickled_object, _zip_not_torch])
def test_an_unreadable_checkpoint_is_a_one_line_error_naming_it(make, checkpoint, entries, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    make(bad, checkpoint) if make is _truncated else make(bad)
    write_cifs(tmp_path / "in", entries, 1)
    assert predict(bad, [tmp_path / "in"], tmp_path / "p.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"equiprop: error: {bad}:")
    assert "weights_only" not in err and "Traceback" not in err
    with pytest.raises(DataError, match="bad.ckpt"):
        Predictor.from_checkpoint(bad)


def test_corrupted_weights_are_refused_at_load_time(checkpoint, tmp_path):
    def nan_weight(content):
        content["state_dict"]["encoder.species.embedding.weight"][3, 0] = float("nan")

    with pytest.raises(DataError, match="corrupted weights.*encoder.species.embedding.weight"):
        Predictor.from_checkpoint(variant(checkpoint, tmp_path, nan_weight))

    def huge_encoder(content):  # finite weights whose every output overflows
        for name, value in content["state_dict"].items():
            if name.startswith("encoder.") and value.is_floating_point():
                value.fill_(3e38)

    with pytest.raises(DataError, match="every prediction is non-finite on a probe crystal"):
        Predictor.from_checkpoint(variant(checkpoint, tmp_path, huge_encoder))


def test_a_non_finite_prediction_is_a_failed_row_never_a_number(checkpoint, entries, tmp_path, capsys):
    def overflow_k(content):  # 10**50 GPa overflows float32: K_VRH is inf for every structure
        content["state_dict"]["normalizer.shift_K_VRH"].fill_(50.0)

    overflowing = variant(checkpoint, tmp_path, overflow_k)
    write_cifs(tmp_path / "in", entries, 2)
    out = tmp_path / "p.csv"
    assert predict(overflowing, [tmp_path / "in"], out) == 1
    rows = read_csv(out)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("non-finite prediction for K_VRH" in r["error"] and r["K_VRH [GPa]"] == "" for r in rows)
    units = Predictor.from_checkpoint(overflowing).units()
    assert all(r[f"{n} [{units[n]}]"] == "" for r in rows for n in OUTPUTS)  # no number from a failed prediction
    with pytest.raises(DataError, match="non-finite prediction for K_VRH"):
        Predictor.from_checkpoint(overflowing).predict([structure(entries)])


# -- 7. folders -------------------------------------------------------------------------------------------------
def test_unknown_files_in_a_folder_are_reported_and_dotfiles_skipped(checkpoint, entries, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_cifs(inputs, entries, 1)
    (inputs / "notes.txt").write_text("my notes")
    (inputs / ".DS_Store").write_bytes(b"\0")
    (inputs / "sub").mkdir()
    out = tmp_path / "p.json"
    assert predict(checkpoint, [inputs], out, "--allow-failures") == 0
    captured = capsys.readouterr()
    summary = next(line for line in captured.out.splitlines() if line.startswith("wrote "))
    assert "2 inputs failed" in summary and "notes.txt" in summary and "sub" in summary
    errors = {Path(e["file"]).name: e for e in json.loads(out.read_text())["errors"]}
    assert set(errors) == {"notes.txt", "sub"}
    assert "unknown file type" in errors["notes.txt"]["error"] and "not searched" in errors["sub"]["error"]
    assert ".DS_Store" not in captured.out + captured.err


# -- 8. binary tasks --------------------------------------------------------------------------------------------
def test_a_binary_task_predicts_a_probability_with_one_units_key_per_output(checkpoint, entries, tmp_path,
                                                                            capsys):
    predictor = Predictor.from_checkpoint(checkpoint)
    predictions = predictor.predict([structure(entries, i) for i in range(4)])
    units = predictor.units()
    assert list(units) == OUTPUTS and all(set(p) == set(units) for p in predictions)
    assert units["is_wide_gap"] == "probability" and "probability" not in units
    assert all(0.0 <= p["is_wide_gap"] <= 1.0 for p in predictions)

    write_cifs(tmp_path / "in", entries, 2)
    assert predict(checkpoint, [tmp_path / "in"], tmp_path / "p.json") == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["units"] == units
    assert all(0.0 <= p["is_wide_gap"] <= 1.0 for p in result["predictions"])


# -- 9. graph parameters and trained tasks from the checkpoint --------------------------------------------------
def test_graph_parameters_and_untrained_tasks_come_from_the_checkpoint(checkpoint, entries, tmp_path, capsys):
    def newer_meta(content):
        meta = content["equiprop"]
        meta["graph"] = {"cutoff": 4.5, "max_neighbors": 4, "min_neighbors": 2}
        meta["train_label_counts"] = {name: (0 if name == "Eg" else 10) for name in meta["tasks"]}

    newer = variant(checkpoint, tmp_path, newer_meta)
    with pytest.warns(UserWarning, match="no training labels.*: Eg"):
        predictor = Predictor.from_checkpoint(newer)
    assert predictor.cutoff == 4.5 and predictor.max_neighbors == 4
    assert predictor.min_neighbors == 2
    graphs, kept, _ = predictor.checked_graphs([structure(entries, i) for i in range(3)])
    assert list(kept) == [0, 1, 2] and all(g.edge_index.shape[1] <= 4 * g.num_nodes for g in graphs)
    prediction = predictor.predict([structure(entries)])[0]
    assert "Eg" not in prediction and "Eg" not in predictor.units() and "Ef" in prediction

    write_cifs(tmp_path / "in", entries, 1)
    assert predict(newer, [tmp_path / "in"], tmp_path / "p.csv") == 0
    err = capsys.readouterr().err
    assert err.count("left out of the predictions: Eg") == 1
    assert not any(name.startswith("Eg ") for name in read_csv(tmp_path / "p.csv")[0])


def test_an_older_checkpoint_without_graph_meta_keeps_working(checkpoint, entries, tmp_path):
    def older_meta(content):
        meta = content["equiprop"]
        meta.pop("graph", None)
        meta.pop("train_label_counts", None)
        meta["max_neighbors"] = 5

    older = Predictor.from_checkpoint(variant(checkpoint, tmp_path, older_meta))
    assert older.cutoff == older.models[0].encoder.cutoff == 4.5 and older.max_neighbors == 5
    assert older.min_neighbors == 1 and older.output_tasks == list(older.tasks)  # the graph builder's default
    assert list(older.predict([structure(entries)])[0]) == OUTPUTS


# -- tasks a model offers only on request -------------------------------------------------------------------------
def test_opt_in_tasks_are_left_out_with_their_reason_until_asked_for(checkpoint, entries, tmp_path, capsys):
    from equiprop.train.integrity import DIGEST_KEY, member_digests

    manifest = tmp_path / "model.json"
    reason = "no better than predicting zero on the test split (0.98x)"
    manifest.write_text(json.dumps({"format": "equiprop-ensemble-1", "members": [str(checkpoint)],
                                    DIGEST_KEY: member_digests(manifest, [str(checkpoint)]),
                                    "opt_in_tasks": {"K_VRH": reason}}))
    inputs = write_cifs(tmp_path / "in", entries, 2)
    assert predict(manifest, inputs, tmp_path / "default.csv") == 0
    header = next(csv.reader((tmp_path / "default.csv").open()))
    assert "Ef [eV/atom]" in header and not any(h.startswith("K_VRH") for h in header)
    assert f"K_VRH is predicted only on request (--tasks ... K_VRH): {reason}" in capsys.readouterr().err
    assert predict(manifest, inputs, tmp_path / "asked.csv", "--tasks", "K_VRH", "Ef") == 0
    header = next(csv.reader((tmp_path / "asked.csv").open()))
    assert [h.split(" ")[0] for h in header[3:-2]] == ["Ef", "K_VRH"]  # the model's order, only those asked for
    rows = by_file(read_csv(tmp_path / "asked.csv"))
    default = by_file(read_csv(tmp_path / "default.csv"))
    assert all(rows[f]["Ef [eV/atom]"] == default[f]["Ef [eV/atom]"] for f in rows)
    assert predict(manifest, inputs, tmp_path / "no.csv", "--tasks", "piezo_tensor") == 2
    assert "--tasks piezo_tensor: not predicted by this model; it predicts Ef, Eg, K_VRH" in capsys.readouterr().err
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "opt_in_tasks": ["K_VRH"]}))
    assert predict(manifest, inputs, tmp_path / "bad.csv") == 2
    assert "opt_in_tasks must map task names to the reason" in capsys.readouterr().err


# -- 9. one input grammar (equiprop.data.inputs): every form in one command --------------------------------------
def test_predict_reads_every_form_of_input_in_order_with_one_failure_row_shape(checkpoint, entries, tmp_path,
                                                                               capsys):
    import ase.db
    import ase.io
    import yaml

    cifs = write_cifs(tmp_path / "cifs", entries, 3)
    atoms = [structure(entries, i).to_ase_atoms() for i in range(3, 5)]
    for i, a in enumerate(atoms):
        a.info["material_id"] = f"frame-{i}"
    ase.io.write(tmp_path / "frames.extxyz", atoms, format="extxyz")
    with ase.db.connect(tmp_path / "rows.db") as db:
        db.write(structure(entries, 5).to_ase_atoms(), material_id="row-a")
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"meta": {}, "entries": [dict(entries[6], Ef=-1.0)]}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"tasks": ["Ef"], "sources": [
        {"class_path": "equiprop.data.sources.RecordsJSON", "init_args": {"path": str(records)}}]}}))
    (tmp_path / "notes.txt").write_text("x")
    inputs = [str(tmp_path / "cifs" / "*.cif"), tmp_path / "frames.extxyz", tmp_path / "rows.db", recipe,
              tmp_path / "notes.txt", tmp_path / "missing.cif"]
    out = tmp_path / "p.json"
    assert predict(checkpoint, inputs, out, "--allow-failures") == 0
    result = json.loads(out.read_text())
    expected = [p.stem for p in sorted(cifs)] + ["frame-0", "frame-1", "row-a", entries[6]["material_id"]]
    assert [p["id"] for p in result["predictions"]] == expected
    # the failure rows of unreadable inputs and of refused structures have one shape (InputFailure.row)
    assert [(e["id"], e["reason"]) for e in result["errors"]] == [("notes", "unknown file type"),
                                                                 ("missing", "missing file")]
    assert all(list(e) == ["id", "file", "formula", "status", "reason", "error"] for e in result["errors"])

    # the same predictions through each form alone as through the CIF files
    assert predict(checkpoint, [cifs[0]], tmp_path / "one.json") == 0
    alone = json.loads((tmp_path / "one.json").read_text())["predictions"][0]
    assert alone["Ef"] == result["predictions"][0]["Ef"]


def test_a_recipe_input_runs_no_code_but_equiprop_readers(checkpoint, tmp_path, capsys):
    import yaml

    recipe = tmp_path / "evil.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"sources": [{"class_path": "os.system",
                                                            "init_args": {"command": "touch pwned"}}]}}))
    assert predict(checkpoint, [recipe], tmp_path / "p.json") == 2
    err = capsys.readouterr().err
    assert "os.system is not a reader of equiprop.data.sources" in err and str(recipe) in err
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
