"""benchmarks/active_learning.py end to end on the bundled tiny data: both strategies, resumable, summary written."""

import csv
import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "active_learning.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("active_learning", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_tiny_study_resumes_and_never_reveals_a_structure_twice(study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "tiny", "--n0", "4", "--per-round", "3", "--rounds", "2", "--seeds", "0", "--epochs", "1",
            "--mc-samples", "3", "--out", "out/al", "--workdir", "runs/al"]
    assert study.main(argv) == 0
    with open("out/al.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["strategy"], r["round"], int(r["n_labels"])) for r in rows) == [
        ("al", "0", 4), ("al", "1", 7), ("random", "0", 4), ("random", "1", 7)]
    assert rows[0]["units"] == "eV/atom"
    for strategy in ("al", "random"):
        revealed = Path(f"runs/al/Ef_s0/{strategy}_r1/train_ids.txt").read_text().split()
        assert len(revealed) == len(set(revealed)) == 7
    assert Path("out/al.png").exists() and "label saving" in Path("out/al.md").read_text() \
        or "does not reach" in Path("out/al.md").read_text()
    capsys.readouterr()
    assert study.main(argv) == 0  # a rerun trains nothing: every (strategy, round, seed) is done
    assert "seed=0 round" not in capsys.readouterr().out
    with open("out/al.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
