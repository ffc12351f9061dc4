"""``equiprop screen`` (``equiprop.workflows.screen``, its pipeline ``equiprop.screening.pipeline`` and results store
``equiprop.screening.store``) end to end on tiny real checkpoints: resume, failed inputs, settings checks, input kinds."""

import csv
import json
import shutil

import ase.db
import ase.io
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from equiprop.inference import Predictor
from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.data.record import read_structure_file
from equiprop.screening.store import WorkDir
from equiprop.workflows.screen import parse_arguments, screen

WATER = "3\nwater\nO 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"
WINDOWS = {"windows": [{"property": "Eg", "min": 0.5, "max": 3.0},
                       {"property": "eps_electronic", "reduce": "isotropic", "min": 1.0}],
           "straddle_sigmas": 2.0}


def read_table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def seen_files(folder, checkpoint, count: int):
    """The first ``count`` CIF files whose elements the checkpoint was trained on (it fails the others)."""
    predictor = Predictor.from_checkpoint(checkpoint, warn=False)
    return [p for p in sorted(folder.iterdir()) if not predictor.unseen_elements(read_structure_file(p)[0])][:count]


def run(tmp_path, inputs, phase1, name="out", extra=()):
    argv = ["--input", *map(str, inputs), "--phase1", *map(str, phase1), "--output", str(tmp_path / f"{name}.csv"),
            "--workers", "0", "--chunk-size", "8", "--batch-size", "4", *map(str, extra)]
    return screen(parse_arguments(argv))


@pytest.fixture
def counting(monkeypatch):
    """Counts structures predicted and chunks written; ``interrupt_after`` writes raise KeyboardInterrupt."""
    state = {"predicted": 0, "written": [], "interrupt_after": None}
    predict_graphs, write_chunk = Predictor.predict_graphs, WorkDir.write_chunk

    def counted_predict(self, graphs, progress=False):
        state["predicted"] += len(graphs)
        return predict_graphs(self, graphs, progress)

    def counted_write(self, stage, k, header, rows):
        write_chunk(self, stage, k, header, rows)
        state["written"].append((stage, k))
        if state["interrupt_after"] is not None and len(state["written"]) >= state["interrupt_after"]:
            raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "predict_graphs", counted_predict)
    monkeypatch.setattr(WorkDir, "write_chunk", counted_write)
    return state


def test_resume_of_phase_1_computes_nothing_twice(tmp_path, cif_folder, checkpoints, counting):
    """The fast version (one checkpoint, Phase 1 only); the ensemble + Phase 2 one is an integration test."""
    counting["interrupt_after"] = 2
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [cif_folder], checkpoints[:1])
    predicted_before = counting["predicted"]
    counting.update(written=[], interrupt_after=None)
    summary = run(tmp_path, [cif_folder], checkpoints[:1])
    assert [k for _, k in counting["written"]] == list(range(2, 8))  # 58 items, chunks of 8: 0-1 were done
    assert counting["predicted"] == summary["phase1"]["ok"]  # each structure predicted exactly once in all
    assert summary["phase1"]["structures_resumed"] == 16 and summary["phase1"]["structures_computed"] == 42
    rows = read_table(tmp_path / "out.csv")
    assert [int(r["index"]) for r in rows] == list(range(58)) and predicted_before > 0


@pytest.mark.integration
def test_resume_computes_nothing_twice_and_matches_an_uninterrupted_run(tmp_path, cif_folder, checkpoints,
                                                                         selection_recipe, counting):
    recipe = selection_recipe(WINDOWS)
    extra = ["-c", recipe, "--phase2", checkpoints[0]]
    full = run(tmp_path, [cif_folder], checkpoints, "full", extra)
    # a one-epoch model on 34 training structures has not seen every element of the 58: those fail, counted
    assert full["phase1"]["read"] == 58 and full["phase1"]["ok"] + full["phase1"]["failed"] == 58
    assert full["phase1"]["ok"] > 30 and full["phase2"]["read"] > 0
    assert counting["predicted"] == full["phase1"]["ok"] + full["phase2"]["ok"]
    ok_in_first_chunks = sum(r["status"] == "ok" for r in read_table(tmp_path / "full.csv")[:24])

    counting.update(predicted=0, written=[], interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [cif_folder], checkpoints, "resumed", extra)
    first = list(counting["written"])
    assert first == [("phase1", 0), ("phase1", 1), ("phase1", 2)] and counting["predicted"] == ok_in_first_chunks
    work = tmp_path / "resumed.csv.work"
    mtimes = {k: work.joinpath("phase1", f"chunk_{k:06d}.csv").stat().st_mtime_ns for k in range(3)}

    counting.update(predicted=0, written=[], interrupt_after=None)
    summary = run(tmp_path, [cif_folder], checkpoints, "resumed", extra)
    assert not set(first) & set(counting["written"])  # no chunk written twice
    assert counting["predicted"] == full["phase1"]["ok"] - ok_in_first_chunks + full["phase2"]["ok"]
    assert summary["phase1"]["structures_resumed"] == 24 and summary["phase1"]["structures_computed"] == 34
    assert summary["resumed"] is True
    assert {k: work.joinpath("phase1", f"chunk_{k:06d}.csv").stat().st_mtime_ns for k in range(3)} == mtimes
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "full.csv").read_text()

    counting.update(predicted=0, written=[])  # a finished screen run again computes nothing
    run(tmp_path, [cif_folder], checkpoints, "resumed", extra)
    assert counting["predicted"] == 0 and counting["written"] == []


@pytest.mark.integration
def test_table_columns_units_and_values(tmp_path, cif_folder, checkpoints, selection_recipe):
    summary = run(tmp_path, [cif_folder], checkpoints, extra=["-c", selection_recipe(WINDOWS),
                                                              "--phase2", checkpoints[0]])
    rows = read_table(tmp_path / "out.csv")
    assert len(rows) == 58 and summary["phase1"]["ok"] > 30
    header = list(rows[0])
    for column in ("Eg [eV]", "Eg_std [eV]", "eps_electronic [dimensionless]", "elastic_tensor [GPa]",
                   "K_Voigt [GPa]", "eps_electronic.isotropic [dimensionless]", "chosen_by", "p2_Eg [eV]",
                   "p2_status"):
        assert column in header
    assert "p2_Eg_std [eV]" not in header  # one Phase-2 checkpoint: no uncertainty
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert 0 < len(chosen) == summary["selection"]["chosen"] == summary["phase2"]["read"]
    assert all(r["status"] == "ok" for r in chosen)
    assert all(r["p2_status"] == "ok" for r in chosen)
    assert all(r["p2_status"] == "" for r in rows if r["chosen"] == "False")
    # Phase-2 values are those equiprop predict gives for the same files
    predictor = Predictor.from_checkpoint(checkpoints[0], warn=False)
    records = [read_structure_file(r["file"])[0] for r in chosen]
    expected = predictor.predict(records)
    np.testing.assert_allclose([float(r["p2_Eg [eV]"]) for r in chosen], [e["Eg"] for e in expected], rtol=1e-4)
    np.testing.assert_allclose([json.loads(r["p2_elastic_tensor [GPa]"]) for r in chosen],
                               [e["elastic_tensor"] for e in expected], rtol=1e-4, atol=1e-4)
    saved = json.loads((tmp_path / "out.summary.json").read_text())
    assert saved["units"]["phase1"]["Eg"] == "eV" and saved["selection"]["recipe"] == WINDOWS


def test_failed_inputs_are_rows_with_reasons(tmp_path, cif_folder, checkpoints):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for path in seen_files(cif_folder, checkpoints[0], 3):
        shutil.copy(path, folder / path.name)
    (folder / "broken.cif").write_text("data_x\n_cell_length_a oops\n")
    (folder / "notes.txt").write_text("not a structure")
    (folder / "sub").mkdir()
    (folder / "water.xyz").write_text(WATER)
    (folder / "plutonium.cif").write_text(str(CifWriter(Structure(Lattice.cubic(3.0), ["Pu"], [[0, 0, 0]]))))
    (folder / "overlap.cif").write_text(str(CifWriter(Structure(Lattice.cubic(5.0), ["Si", "Si"],
                                                                [[0, 0, 0], [0.04, 0, 0]]))))
    summary = run(tmp_path, [folder, tmp_path / "missing.cif"], checkpoints[:1])
    rows = {r["id"]: r for r in read_table(tmp_path / "out.csv")}
    assert len(rows) == 3 + 7
    reasons = {k: r["reason"] for k, r in rows.items() if r["status"] == "failed"}
    assert reasons == {"broken": "unparseable structure", "notes": "unknown file type", "sub": "folder not searched",
                       "water:0": "not periodic", "plutonium": "elements unseen in training",
                       "overlap": "atoms closer than 0.5 Å", "missing": "missing file"}
    assert "plutonium.cif" in rows["plutonium"]["error"] and "Pu" in rows["plutonium"]["error"]
    assert all(rows[k]["Eg [eV]"] == "" for k in reasons)
    assert summary["phase1"]["failed"] == 7 and summary["phase1"]["ok"] == 3
    assert summary["phase1"]["failed_by_reason"]["not periodic"] == 1


def test_resume_with_other_settings_is_refused(tmp_path, cif_folder, checkpoints, selection_recipe):
    run(tmp_path, [cif_folder], checkpoints[:1])
    for extra, what in ((["--chunk-size", "16"], "--chunk-size"), (["-c", selection_recipe(WINDOWS)], "selection"),
                        ([], "Phase-1 checkpoints")):
        phase1 = checkpoints if what == "Phase-1 checkpoints" else checkpoints[:1]
        with pytest.raises(ConfigError, match=f"cannot resume .*different {what}") as err:
            run(tmp_path, [cif_folder], phase1, extra=extra)
        assert "\n" not in str(err.value)
    code = main(["screen", "--input", str(cif_folder), "--phase1", str(checkpoints[0]), "--output",
                 str(tmp_path / "out.csv"), "--workers", "0", "--chunk-size", "16"])
    assert code == 2


def test_extxyz_ase_db_and_bundled_inputs(tmp_path, cif_folder, checkpoints):
    records = [read_structure_file(p)[0] for p in seen_files(cif_folder, checkpoints[0], 5)]
    frames = [r.to_ase() for r in records]
    for atoms, r in zip(frames, records):
        atoms.info["id"] = r.id
    ase.io.write(tmp_path / "many.extxyz", frames, format="extxyz")
    with ase.db.connect(tmp_path / "many.db") as db:
        for atoms, r in zip(frames, records):
            db.write(atoms, material_id=r.id)
    summary = run(tmp_path, [tmp_path / "many.extxyz", tmp_path / "many.db", "bundled:tiny"], checkpoints[:1],
                  extra=["--workers", "1"])
    rows = read_table(tmp_path / "out.csv")
    assert summary["phase1"]["read"] == len(rows) == 5 + 5 + 58
    assert [r["id"] for r in rows[:10]] == [r.id for r in records] * 2
    assert all(r["status"] == "ok" for r in rows[:10])
    np.testing.assert_allclose([float(r["Eg [eV]"]) for r in rows[:5]], [float(r["Eg [eV]"]) for r in rows[5:10]],
                               rtol=1e-5)
    assert rows[0]["file"].endswith("many.extxyz") and rows[10]["file"] == "bundled:tiny"


def test_parquet_without_pyarrow_and_bad_recipe_are_one_line_errors(tmp_path, cif_folder, checkpoints,
                                                                     selection_recipe, capsys):
    pytest.importorskip("pytest")
    try:
        import pyarrow  # noqa: F401
        has_pyarrow = True
    except ImportError:
        has_pyarrow = False
    base = ["screen", "--input", str(cif_folder), "--phase1", str(checkpoints[0]), "--workers", "0"]
    if not has_pyarrow:
        assert main(base + ["--output", str(tmp_path / "out.parquet")]) == 2
        assert "needs pyarrow" in capsys.readouterr().err
    recipe = selection_recipe({"windows": [{"property": "Eg", "min": 3, "max": 1}]})
    assert main(base + ["--output", str(tmp_path / "out.csv"), "-c", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "windows[0]: min 3 > max 1" in err and len(err.splitlines()) == 1


def test_resume_after_an_input_file_changed_is_refused(tmp_path, cif_folder, checkpoints):
    folder = tmp_path / "few"
    folder.mkdir()
    for path in sorted(cif_folder.iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    run(tmp_path, [folder], checkpoints[:1])
    changed = sorted(folder.iterdir())[0]
    changed.write_text(changed.read_text() + "\n")
    with pytest.raises(ConfigError, match="different inputs"):
        run(tmp_path, [folder], checkpoints[:1])


def _flip_digit(path):
    text = path.read_bytes().decode()
    at = next(i for i in range(len(text) // 2, len(text)) if text[i].isdigit())
    path.write_bytes((text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:]).encode())


@pytest.mark.parametrize("damage", [
    _flip_digit,
    lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated
    lambda p: p.write_bytes(b"".join(p.read_bytes().splitlines(keepends=True)[:-1])),  # no checksum (older chunk)
    lambda p: p.write_bytes(b"\xff\xfe not text"),
])
def test_a_damaged_work_chunk_is_computed_again_to_identical_results(damage, tmp_path, cif_folder, checkpoints,
                                                                     counting, capsys):
    first = run(tmp_path, [cif_folder], checkpoints[:1])
    expected = (tmp_path / "out.csv").read_text()
    chunk = tmp_path / "out.csv.work" / "phase1" / "chunk_000003.csv"
    damage(chunk)
    capsys.readouterr()
    counting.update(written=[])
    again = run(tmp_path, [cif_folder], checkpoints[:1])
    assert counting["written"] == [("phase1", 3)]  # that chunk alone, computed again
    assert again["phase1"]["chunks_damaged"] == 1 and first["phase1"]["chunks_damaged"] == 0
    assert f"{chunk}: fails its checksum" in capsys.readouterr().err
    assert (tmp_path / "out.csv").read_text() == expected
