"""``equiprop suggest`` on a real tiny MC-dropout checkpoint: labelled structures are never proposed, every
exclusion is counted, scores and columns carry units, predictors without uncertainty and tensors are refused."""

import csv
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop.cli import main

TASKS = ["Ef", "Eg", "eps_electronic"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    """A few batches of a small invariant model with feature dropout (MC-dropout sigma) on the bundled tiny data."""
    return tiny_checkpoint(tmp_path_factory.mktemp("suggest") / "mc.ckpt", TASKS, dropout=0.3, train_batches=3)


def suggest(checkpoint, pool, output, *flags) -> int:
    return main(["suggest", "--input", *map(str, pool), "--checkpoint", str(checkpoint), "--task", "Ef",
                 "--mc-samples", "4", "--allow-unseen-elements", "--output", str(output), *flags])


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_suggest_never_proposes_an_already_labelled_structure(checkpoint, tiny_entries, tmp_path, capsys):
    labelled = {e["material_id"] for e in tiny_entries if e.get("Ef") is not None}
    unlabelled = [e["material_id"] for e in tiny_entries if e.get("Ef") is None]
    listed = unlabelled[:3]
    ids = tmp_path / "done.txt"
    ids.write_text("\n".join(listed + ["mp-not-in-pool"]) + "\n")
    out = tmp_path / "s.csv"
    assert suggest(checkpoint, ["bundled:tiny"], out, "--budget", "100", "--labelled", str(ids)) == 0
    rows = read_csv(out)
    proposed = [r["id"] for r in rows]
    assert not set(proposed) & (labelled | set(listed))
    assert sorted(proposed) == sorted(unlabelled[3:])  # the budget exceeds the pool: every candidate, once
    summary = capsys.readouterr()
    assert f"{len(labelled)} labelled (label of Ef in the pool)" in summary.out
    assert "3 labelled (--labelled)" in summary.out and "1 --labelled ids are not in the pool" in summary.out
    assert f"diversity measured from {len(labelled) + 3} labelled structures" in summary.out
    assert list(rows[0]) == ["rank", "id", "file", "formula", "mu [eV/atom]", "sigma [eV/atom]",
                             "score [eV/atom]", "strategy", "distance term [median pairwise distances]"]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(float(r["sigma [eV/atom]"]) > 0 for r in rows)


def test_plain_ranking_without_diversity_and_window_scores(checkpoint, tmp_path):
    out = tmp_path / "s.csv"
    assert suggest(checkpoint, ["bundled:tiny"], out, "--budget", "5", "--diversity", "0") == 0
    sigma = [float(r["sigma [eV/atom]"]) for r in read_csv(out)]
    assert len(sigma) == 5 and sigma == sorted(sigma, reverse=True)
    assert suggest(checkpoint, ["bundled:tiny"], out, "--budget", "5", "--strategy", "window", "--window", "-2",
                   "0") == 0
    rows = read_csv(out)
    assert all(0 <= float(r["score [probability]"]) <= 1 and r["strategy"] == "window" for r in rows)


def test_ei_improves_on_the_best_label_of_the_pool(checkpoint, tiny_entries, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert suggest(checkpoint, ["bundled:tiny"], out, "--budget", "3", "--strategy", "ei", "--direction",
                   "min") == 0
    best = min(e["Ef"] for e in tiny_entries if e.get("Ef") is not None)
    assert f"best {best:.4g} eV/atom" in capsys.readouterr().out
    # a pool of files carries no labels: EI then needs --best
    folder = tmp_path / "cifs"
    folder.mkdir()
    Structure.from_dict(tiny_entries[0]["structure"]).to(filename=str(folder / "a.cif"))
    assert suggest(checkpoint, [folder], out, "--budget", "1", "--strategy", "ei") == 2
    assert "--best" in capsys.readouterr().err


def test_file_pool_counts_duplicates_and_unreadable_inputs(checkpoint, tiny_entries, tmp_path, capsys):
    folder = tmp_path / "pool"
    folder.mkdir()
    for e in tiny_entries[:4]:
        Structure.from_dict(e["structure"]).to(filename=str(folder / f"{e['material_id']}.cif"))
    (folder / "notes.txt").write_text("not a structure")
    out = tmp_path / "s.csv"
    again = folder / f"{tiny_entries[0]['material_id']}.cif"
    assert suggest(checkpoint, [folder, again], out, "--budget", "10") == 0
    rows = read_csv(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    captured = capsys.readouterr()
    assert "1 duplicate id" in captured.out and "1 unreadable (unknown file type)" in captured.out
    assert "notes.txt" in captured.err


def test_refuses_a_predictor_without_uncertainty_and_an_unreduced_tensor(checkpoint, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["suggest", "--input", "bundled:tiny", "--checkpoint", str(checkpoint), "--task", "Ef", "--budget",
                 "2", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a predicted sigma" in err[0]
    tensor = ["suggest", "--input", "bundled:tiny", "--checkpoint", str(checkpoint), "--task", "eps_electronic",
              "--mc-samples", "3", "--budget", "2", "--output", str(out)]
    assert main(tensor) == 2
    assert "is a tensor: give --reduce isotropic" in capsys.readouterr().err
    assert not out.exists()
    assert main(tensor[:-2] + ["--reduce", "isotropic", "--allow-unseen-elements", "--output", str(out)]) == 0


def test_isotropic_reduction_is_taken_per_draw(checkpoint, tiny_entries):
    from equiprop.uncertainty import load_predictor
    from equiprop.workflows.suggest import batches, predict_with_latents, usable_graphs
    from equiprop.data.record import from_pymatgen

    predictor = load_predictor([checkpoint], mc_samples=5, allow_unseen_elements=True, warn=False)
    records = [from_pymatgen(Structure.from_dict(e["structure"]), e["material_id"]) for e in tiny_entries[:6]]
    graphs, _, _ = usable_graphs(predictor, records, checked=True)
    mu, sigma, _ = predict_with_latents(predictor, batches(graphs, 6), "eps_electronic", "isotropic")
    # the same batch: the dropout masks are seeded per batch
    draws = np.trace(predictor.samples(next(batches(graphs, 6)))["eps_electronic"], axis1=-2, axis2=-1) / 3
    np.testing.assert_allclose(mu, draws.mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma, draws.std(0), rtol=1e-10)
    assert np.all(sigma > 0)
