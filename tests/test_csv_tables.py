"""Every CSV equiprop writes keeps its numbers: no two columns share a name, and every column that holds numbers
(errors, predictions, sigmas, scores, counts) parses as numbers.

The writers (``grep -rn "to_csv\\|csv.writer\\|DictWriter" src scripts``), each run for real on tiny inputs:
``predict`` (workflows/predict.py), ``screen`` output and its work-folder chunks (workflows/screen.py,
screening/store.py), ``suggest``, ``calibrate``/``ensemble`` reports (workflows/calibrate.py), the accuracy scoreboard
(workflows/scoreboard.py; also scripts/build_shipped_model.py and benchmarks/accuracy.py), learning curves
(workflows/curves.py) and Optuna's trial table (workflows/tune.py). Plus the CSVs shipped beside the shipped models,
whose ``model`` column once held the model's path instead of its test error.
"""

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from equiprop.cli import main
from equiprop.workflows.scoreboard import PREDICTORS

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
# a column of numbers wherever it appears: an error, a count, a sigma, a score
METRIC = re.compile(r"^(mae|rmse|r2|n|n_train|n_test|std_scale|mean_sigma|within_[12]sigma|miscalibration_area|"
                    r"spearman|zero_sigma|value|epochs|rank|index)$")
WITH_UNITS = re.compile(r"\[[^\]]*\]")  # "Ef [eV/atom]", "mu [eV/atom]": a physical value (or a tensor as a list)
SCOREBOARD_NUMBERS = ["n_train", "n_test", *PREDICTORS]
CALIBRATION_NUMBERS = ["std_scale", "n", "mae", "mean_sigma", "within_1sigma", "within_2sigma",
                       "miscalibration_area", "spearman", "zero_sigma"]


def numeric(cell: str) -> bool:
    """A number, or a JSON list of numbers (a tensor or per-atom values); NaN is a number here, text is not."""
    try:
        float(cell)
        return True
    except ValueError:
        pass
    try:
        flat = json.loads(cell)
    except ValueError:
        return False
    stack = [flat]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            return False
    return isinstance(flat, list)


def check_table(path: Path, numbers=(), optional=()) -> list[dict]:
    """Unique headers; ``numbers``, ``optional`` and every column named like a metric or carrying units hold only
    numbers or empty cells (a failed row, a predictor that does not apply); each of ``numbers`` at least one number.
    """
    from equiprop.screening.store import CHECKSUM_PREFIX, checked_text

    text = Path(path).read_bytes().decode()
    if CHECKSUM_PREFIX in text:  # a screen's work chunk: its rows, once their checksum holds
        text = checked_text(Path(path))
        assert text is not None, f"{path.name}: fails its checksum"
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    repeated = sorted({name for name in header if header.count(name) > 1})
    assert not repeated, f"{path.name}: columns named more than once: {repeated}"
    missing = [name for name in numbers if name not in header]
    assert not missing, f"{path.name}: no column {missing} in {header}"
    assert rows, f"{path.name}: no rows"
    columns = {*numbers, *(n for n in optional if n in header)}
    for name in columns | {n for n in header if METRIC.match(n) or WITH_UNITS.search(n)}:
        cells = [row[header.index(name)] for row in rows]
        text = [c for c in cells if c and not numeric(c)]
        assert not text, f"{path.name}: column {name!r} holds non-numbers, e.g. {text[:3]}"
        assert any(cells) or name not in numbers, f"{path.name}: column {name!r} is empty in every row"
    return [dict(zip(header, row)) for row in rows]


# -- the shipped models' tables (fast) ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["equiprop-mp-v1", "equiprop-mp-v2"])
def test_shipped_test_metrics_keep_the_numbers_of_their_markdown_and_model_json(name):
    folder = SHIPPED / name
    rows = check_table(folder / "test_metrics.csv", SCOREBOARD_NUMBERS)
    check_table(folder / "calibration.csv", CALIBRATION_NUMBERS)
    # every cell of the markdown table, as shown there, is the CSV's
    lines = [line for line in (folder / "test_metrics.md").read_text().splitlines() if line.startswith("| ")]
    md_header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    md_rows = [dict(zip(md_header, (c.strip() for c in line.strip().strip("|").split("|")))) for line in lines[1:]]
    assert len(md_rows) == len(rows) > 0
    for md, row in zip(md_rows, rows):
        assert {k: row[k] for k in md_header} == md
    assert {row["model_path"] for row in rows} == {f"checkpoints/{name}"}
    # and the model's own test errors, recorded at full precision in model.json, are the model column
    summary = json.loads((folder / "model.json").read_text())["test_metrics"]
    for task, recorded in summary.items():
        row = next(r for r in rows if r["task"] == task and r["metric"] == recorded["metric"])
        assert float(row["model"]) == pytest.approx(recorded["mae"], rel=5e-4)
        assert float(row["training_median"]) == pytest.approx(recorded["median_mae"], rel=5e-4)


def test_scoreboard_refuses_metadata_that_would_repeat_a_column(tmp_path):
    from equiprop.workflows.scoreboard import Row, write_csv

    rows = [Row("Ef", "mae", "eV/atom", 10, 5, {"model": 0.1})]
    with pytest.raises(ValueError, match=r"\['model'\].*model_path"):
        write_csv(rows, {"model": "checkpoints/x"}, tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()
    write_csv(rows, {"model_path": "checkpoints/x"}, tmp_path / "t.csv")
    assert check_table(tmp_path / "t.csv", ["model"], PREDICTORS)[0]["model"] == "0.1"


def test_the_checker_catches_a_repeated_column_and_a_path_in_a_number_column(tmp_path):
    (tmp_path / "bad.csv").write_text("task,model,model\nEf,checkpoints/x,checkpoints/x\n")
    with pytest.raises(AssertionError, match="more than once"):
        check_table(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("task,model,mu [eV]\nEf,checkpoints/x,1.0\n")
    with pytest.raises(AssertionError, match="'model' holds non-numbers"):
        check_table(tmp_path / "bad.csv", ["model"])
    (tmp_path / "bad.csv").write_text("task,mu [eV]\nEf,high\n")
    with pytest.raises(AssertionError, match="'mu \\[eV\\]' holds non-numbers"):
        check_table(tmp_path / "bad.csv")


# -- every writer, run for real on tiny inputs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cli_recipe_factory):
    """A folder with a tiny two-member ensemble (``equiprop ensemble``: members, manifest, calibration report) and
    the fixture structures as CIF files; commands run from it."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    root = tmp_path_factory.mktemp("csv_tables")
    entries = json.loads((Path(__file__).parent / "fixtures" / "tiny_multitask.json").read_text())["entries"]
    (root / "cifs").mkdir()
    for e in entries[:12]:
        (root / "cifs" / f"{e['material_id']}.cif").write_text(str(CifWriter(Structure.from_dict(e["structure"]))))
    recipe = cli_recipe_factory()
    recipe["data"]["cache_dir"] = str(root / "cache")
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("EQUIPROP_CACHE", str(root / "cache"))  # before the autouse per-test isolation applies
        assert main(["ensemble", "-c", "recipe.yaml", "--seeds", "0", "1"]) == 0
        yield root


@pytest.fixture
def at(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("EQUIPROP_CACHE", str(workspace / "cache"))
    return workspace


MANIFEST = "runs/tiny_ensemble.json"


@pytest.mark.integration
def test_calibration_report(at):
    rows = check_table(at / "runs" / "tiny_ensemble_calibration.csv", CALIBRATION_NUMBERS)
    assert {r["split"] for r in rows} == {"val", "test", "test_recalibrated"}


@pytest.mark.integration
def test_predict_table(at):
    assert main(["predict", "--checkpoint", MANIFEST, "--input", "cifs", "--output", "predicted.csv",
                 "--allow-unseen-elements", "--allow-failures"]) == 0
    rows = check_table(at / "predicted.csv", ["Ef [eV/atom]", "Ef_std [eV/atom]", "Eg [eV]"])
    assert len(rows) == 12 and any(r["status"] == "ok" for r in rows)


@pytest.mark.integration
def test_screen_table_and_its_work_chunks(at):
    assert main(["screen", "--input", "cifs", "--phase1", MANIFEST, "--phase2", MANIFEST, "--output", "screen.csv",
                 "--workers", "0", "--chunk-size", "5", "--allow-unseen-elements"]) == 0
    rows = check_table(at / "screen.csv", ["index", "Ef [eV/atom]", "Ef_std [eV/atom]", "p2_Eg [eV]"])
    assert len(rows) == 12
    chunks = sorted((at / "screen.csv.work").glob("phase*/chunk_*.csv"))
    assert len(chunks) == 3 + 3  # 12 items in chunks of 5, both phases (everything is chosen without a recipe)
    for chunk in chunks:
        check_table(chunk, ["index", "Eg [eV]"])


@pytest.mark.integration
def test_suggest_table(at):
    assert main(["suggest", "--input", "bundled:tiny", "--checkpoint", MANIFEST, "--task", "Eg", "--budget", "4",
                 "--allow-unseen-elements", "--output", "next.csv"]) == 0
    rows = check_table(at / "next.csv", ["rank", "mu [eV]", "sigma [eV]", "score [eV]",
                                         "distance term [median pairwise distances]"])
    assert len(rows) == 4


@pytest.mark.integration
def test_scoreboard_table(at):
    """The accuracy scoreboard of a real run (benchmarks/accuracy.py and scripts/build_shipped_model.py write it)."""
    from equiprop.workflows.scoreboard import scoreboard_rows, write_csv
    from equiprop.workflows.scoreboard_inputs import load_run, task_results

    run = load_run(at / "runs" / "tiny_s0" / "best.ckpt", at / "recipe.yaml")
    rows = scoreboard_rows(task_results(run, None))
    write_csv(rows, {"model_path": "runs/tiny_s0", "members": "1", "split_check": run.split_check},
              at / "scoreboard.csv")
    back = check_table(at / "scoreboard.csv", ["n_train", "n_test", "model", "training_median"], PREDICTORS)
    assert {r["task"] for r in back} == {"Ef", "Eg"} and all(r["model"] for r in back)


@pytest.mark.integration
def test_learning_curve_table(at, cli_recipe):
    """``run_study`` as recipes/learning_curve.py calls it: one tiny fit, the training-median row, CSV and plot."""
    from equiprop.workflows.curves import run_study

    run_study({"tiny": cli_recipe}, "Ef", ["8"], [0], Path("curve"))
    rows = check_table(at / "curve.csv", ["n_train", "seed", "mae", "epochs"])
    assert sorted(r["model"] for r in rows) == ["tiny", "training-median"]


@pytest.mark.integration
def test_tune_trials_table(at, cli_recipe):
    """``write_outputs`` of ``equiprop tune`` on a study of two recorded trials (the fits are test_tune's)."""
    import optuna

    from equiprop.workflows.tune import write_outputs

    study = optuna.create_study(study_name="csv", direction="minimize")
    space = {"model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for lr, loss in ((1e-3, 0.5), (3e-3, 0.25)):
        study.add_trial(optuna.trial.create_trial(params={"model.lr": lr}, distributions=space, value=loss,
                                                  user_attrs={"seconds_per_epoch": 1.5}))
    tune = {"metric": "val/loss", "search_space": {"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    (at / "tune_run").mkdir(exist_ok=True)
    write_outputs(study, cli_recipe, tune, at / "tune_run")
    rows = check_table(at / "tune_run" / "trials.csv", ["number", "value", "params_model.lr"])
    assert [float(r["value"]) for r in rows] == [0.5, 0.25] and not any(math.isnan(float(r["value"])) for r in rows)
