"""The scoreboard's baselines, part errors, goal checks and writers on hand-made examples with hand-computed answers."""

import csv
import math

import numpy as np
import pytest

from equiprop.data.tensor_ops import voigt_to_cartesian
from equiprop.workflows.scoreboard import (INVARIANT, K_VOIGT, MEDIAN, MODEL, ORACLE, Row, TaskResults, all_predictions,
                                           goal_checks, lookup, read_rows, scoreboard_rows, seed_summary,
                                           task_rows, write_csv, write_markdown)

D = np.diag


def errors(rows, predictor, medians=False):
    """The MAE rows of a predictor (with ``medians``, the median-over-structures rows instead)."""
    return {r.metric: r.values.get(predictor) for r in rows if r.metric.endswith("_median_ae") == medians}


def isotropic_stiffness(lam: float, mu: float) -> np.ndarray:
    """C_ijkl = lam d_ij d_kl + mu (d_ik d_jl + d_il d_jk)."""
    d = np.eye(3)
    return (lam * np.einsum("ij,kl->ijkl", d, d)
            + mu * (np.einsum("ik,jl->ijkl", d, d) + np.einsum("il,jk->ijkl", d, d)))


def test_dielectric_median_oracle_and_traceless_errors():
    # train: median diag(3,4,5) (isotropic part 4I, traceless part diag(-1,0,1))
    # test: T1 = 2I (no traceless part), T2 = diag(1,2,6) = 3I + diag(-2,-1,3)
    true = np.stack([D([2.0, 2, 2]), D([1.0, 2, 6])])
    model = np.stack([D([2.0, 2, 2]), D([1.3, 2, 5.7])])  # a traceless error on T2 only: |0.3| + |-0.3| over 18
    result = TaskResults("eps_electronic", "tensor", "dimensionless", "ij=ji", ["a", "b"], true,
                         np.stack([D([1.0, 2, 3]), D([3.0, 4, 5]), D([5.0, 6, 10])]), {MODEL: model})
    predictions = all_predictions(result)
    assert list(predictions) == [MODEL, MEDIAN, ORACLE]
    np.testing.assert_allclose(predictions[MEDIAN], np.stack([D([3.0, 4, 5])] * 2))
    np.testing.assert_allclose(predictions[ORACLE], np.stack([2 * np.eye(3), 3 * np.eye(3)]), atol=1e-12)
    rows = task_rows(result)
    assert [(r.n_train, r.n_test, r.units) for r in rows] == [(3, 2, "dimensionless")] * 5
    # median: |M-T1| = diag(1,2,3), |M-T2| = diag(2,2,1) -> 11/18; isotropic 2I and I -> 9/18;
    # traceless diag(-1,0,1) - 0 and diag(-1,0,1) - diag(-2,-1,3) = diag(1,1,-2) -> 6/18
    assert errors(rows, MEDIAN) == pytest.approx({"component_mae": 11 / 18, "isotropic_mae": 0.5,
                                                   "anisotropic_mae": 1 / 3})
    # oracle: exact isotropic part, misses diag(-2,-1,3) of T2 entirely -> 6/18 in the whole and the traceless part
    assert errors(rows, ORACLE) == pytest.approx({"component_mae": 1 / 3, "isotropic_mae": 0,
                                                   "anisotropic_mae": 1 / 3}, abs=1e-12)
    assert errors(rows, MODEL) == pytest.approx({"component_mae": 0.6 / 18, "isotropic_mae": 0,
                                                  "anisotropic_mae": 0.6 / 18}, abs=1e-12)
    # medians over the two structures of each one's component MAE: model traceless 0 (T1) and 0.6/9 (T2)
    assert errors(rows, MODEL, medians=True) == pytest.approx({"isotropic_median_ae": 0,
                                                               "anisotropic_median_ae": 0.3 / 9}, abs=1e-12)
    assert errors(rows, MEDIAN, medians=True) == pytest.approx({"isotropic_median_ae": (6 / 9 + 3 / 9) / 2,
                                                                "anisotropic_median_ae": (2 / 9 + 4 / 9) / 2})


def test_piezo_oracle_is_the_zero_tensor():
    voigt = np.zeros((3, 6))
    voigt[0, 3], voigt[2, 2] = 1.0, 2.0  # e_x,yz = e_x,zy = 1 and e_z,zz = 2: sum of |components| 4 over 27
    e = voigt_to_cartesian(voigt)
    result = TaskResults("piezo_tensor", "tensor", "C/m^2", "ijk=ikj", ["a", "b"], np.stack([e, -e]),
                         np.stack([e, e, 2 * e]), {})  # training median: e itself
    np.testing.assert_allclose(all_predictions(result)[ORACLE], 0.0, atol=1e-12)
    rows = task_rows(result)
    assert errors(rows, ORACLE) == pytest.approx({"component_mae": 4 / 27, "isotropic_mae": 0,
                                                   "anisotropic_mae": 4 / 27}, abs=1e-12)
    # median e: exact on e, |e - (-e)| = 2|e| on -e -> 8 / 54
    assert errors(rows, MEDIAN)["component_mae"] == pytest.approx(4 / 27)


def test_isotropic_elastic_tensor_and_bulk_modulus_rows_on_structures_with_both_labels():
    c_true, c_model = isotropic_stiffness(50.0, 30.0), isotropic_stiffness(51.0, 32.0)
    anisotropic = voigt_to_cartesian(np.diag([300.0, 10, 10, 5, 5, 5]))
    # structure "a" has no K_VRH label and "c" no elastic tensor: both are left out of the K rows (huge errors there)
    elastic = TaskResults("elastic_tensor", "tensor", "GPa", "ijkl=jikl=klij", ["a", "b"],
                          np.stack([anisotropic, c_true]), np.stack([c_true] * 3),
                          {MODEL: np.stack([np.zeros((3, 3, 3, 3)), c_model]), INVARIANT: np.stack([c_true] * 2)})
    k_vrh = TaskResults("K_VRH", "log_scalar", "GPa", None, ["c", "b"], np.array([500.0, 68.0]),
                        np.array([60.0, 70.0, 80.0]), {MODEL: np.array([0.0, 69.0]), INVARIANT: np.array([0.0, 68.5])})
    only_b = TaskResults(**{**elastic.__dict__, "ids": ["b"], "true": c_true[None],
                            "predictions": {MODEL: c_model[None]}})
    # difference of two isotropic tensors (dlam 1, dmu 2): iiii 3 x |1+4|, iijj 6 x 1, ijij and ijji 12 x 2 -> 45/81
    assert errors(task_rows(only_b), MODEL) == pytest.approx({"component_mae": 5 / 9, "isotropic_mae": 5 / 9,
                                                              "anisotropic_mae": 0}, abs=1e-12)
    assert errors(task_rows(only_b), ORACLE) == pytest.approx({"component_mae": 0, "isotropic_mae": 0,
                                                               "anisotropic_mae": 0}, abs=1e-12)
    rows = scoreboard_rows({"elastic_tensor": elastic, "K_VRH": k_vrh})
    # K_Voigt = lam + 2 mu / 3: 70 (true) vs 51 + 64/3 (model) -> 7/3; the K_VRH head: |69 - 68| = 1
    assert lookup(rows, K_VOIGT, "mae", MODEL) == pytest.approx(7 / 3)
    assert lookup(rows, K_VOIGT, "mae", INVARIANT) == pytest.approx(0, abs=1e-12)
    assert lookup(rows, K_VOIGT, "mae", ORACLE) == pytest.approx(0, abs=1e-12)  # K_Voigt is an isotropic quantity
    assert lookup(rows, K_VOIGT, "mae", MEDIAN) == pytest.approx(0, abs=1e-12)  # median tensor: c_true
    assert lookup(rows, K_VOIGT, "mae_vs_K_VRH_label", MODEL) == pytest.approx(72 + 1 / 3 - 68)
    assert lookup(rows, "K_VRH", "mae_on_elastic_structures", MODEL) == pytest.approx(1.0)
    assert lookup(rows, "K_VRH", "mae_on_elastic_structures", MEDIAN) == pytest.approx(2.0)
    assert lookup(rows, K_VOIGT, "mae_ratio_to_K_VRH_head", MODEL) == pytest.approx(7 / 3)
    assert all(r.n_test == 1 for r in rows if r.task == K_VOIGT or r.metric == "mae_on_elastic_structures")


def test_scalar_rows_have_no_oracle():
    result = TaskResults("Ef", "scalar", "eV/atom", None, ["a", "b"], np.array([1.0, 4.0]),
                         np.array([1.0, 2.0, 10.0]), {MODEL: np.array([2.0, 4.0])})
    rows = task_rows(result)
    assert errors(rows, MODEL) == pytest.approx({"mae": 0.5, "rmse": math.sqrt(0.5)})
    assert errors(rows, MEDIAN) == pytest.approx({"mae": 1.5, "rmse": math.sqrt(2.5)})  # median 2: |1|, |2|
    assert all(ORACLE not in r.values and INVARIANT not in r.values for r in rows)


def row(task, metric, **values):
    return Row(task, metric, "u", 10, 5, values)


def test_goal_checks_pass_at_the_limit_fail_beyond_and_skip_absent_tasks():
    rows = [row("eps_electronic", "anisotropic_mae", model=0.2, isotropic_oracle=0.4),  # exactly 0.5x: pass
            row("eps_electronic", "isotropic_mae", model=0.71, training_median=1.0),  # 29% below: fail
            row("piezo_tensor", "component_mae", model=0.7, isotropic_oracle=1.0),
            row(K_VOIGT, "mae", model=3.0), row(K_VOIGT, "mae_ratio_to_K_VRH_head", model=1.2)]
    checks = {c.name: c.passed for c in goal_checks(rows)}
    assert checks == {"eps_electronic traceless MAE <= 0.5x zero anisotropy": True,
                      "eps_electronic isotropic MAE >= 30% below training median": False,
                      "K_Voigt from tensor within 10% of the K_VRH head": False,
                      "piezo_tensor component MAE >= 25% below zero": True}
    no_model = goal_checks([row("elastic_tensor", "anisotropic_mae", isotropic_oracle=1.0)])
    assert [(c.passed, c.line().split()[0]) for c in no_model] == [(False, "FAIL")]


def test_csv_and_markdown_read_back(tmp_path):
    rows = [row("Ef", "mae", model=0.123456, training_median=0.5),
            row("eps_total", "anisotropic_mae", model=1.0, invariant_baseline=2.5, isotropic_oracle=3.0)]
    meta = {"commit": "abc123", "dirty": "True", "command": "python benchmarks/accuracy.py --quick --seed 3",
            "seed": "3", "recipe": "recipes/quickstart.yaml"}
    write_csv(rows, meta, tmp_path / "out" / "acc.csv")
    with (tmp_path / "out" / "acc.csv").open() as f:
        back = list(csv.DictReader(f))
    assert [(r["task"], r["metric"], r["units"], r["n_train"], r["n_test"]) for r in back] == \
        [("Ef", "mae", "u", "10", "5"), ("eps_total", "anisotropic_mae", "u", "10", "5")]
    assert (float(back[0][MODEL]), back[0][INVARIANT], back[0][ORACLE]) == (0.1235, "", "")
    assert float(back[1][INVARIANT]) == 2.5 and all(r["command"] == meta["command"] and r["commit"] == "abc123"
                                                    for r in back)
    write_markdown(rows, goal_checks(rows), meta, tmp_path / "acc.md", notes=["quick run"])
    text = (tmp_path / "acc.md").read_text()
    assert "- commit: `abc123`" in text and "- quick run" in text
    assert "| Ef | mae | u | 10 | 5 | 0.1235 |  | 0.5 |  |" in text
    assert "- FAIL eps_total" not in text  # only the traceless check applies, and it passes (1.0 <= 1.5)
    assert "- PASS eps_total traceless MAE <= 0.5x zero anisotropy" in text


def tiny_datamodule(tmp_path, seed: int):
    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.sources import BundledDataset
    from equiprop.data.splits import RandomSplit

    datamodule = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=["Ef", "eps_electronic"], cutoff=4.5,
                                     split=RandomSplit(0.2, 0.2, seed=seed), cache_dir=str(tmp_path / "cache"))
    datamodule.setup("test")
    return datamodule


def test_split_checks_accept_the_same_split_and_refuse_another(tmp_path):
    from equiprop.data.errors import ConfigError
    from equiprop.workflows.scoreboard_inputs import check_same_split, check_training_split

    same, other = tiny_datamodule(tmp_path, seed=0), tiny_datamodule(tmp_path, seed=1)
    stored = {"MultiTaskDataModule": same.state_dict()}  # what Lightning saves in a checkpoint
    assert check_training_split(stored, tiny_datamodule(tmp_path, seed=0)).startswith("verified: training-split "
                                                                                       "statistics of 2 tasks")
    with pytest.raises(ConfigError, match="not the one the checkpoint was trained on"):
        check_training_split(stored, other)
    check_same_split(same, tiny_datamodule(tmp_path, seed=0))
    with pytest.raises(ConfigError, match="different splits"):
        check_same_split(same, other)
    # a checkpoint whose tensor statistics have another layout (other normalisation code): label counts only
    old = {"MultiTaskDataModule": {"normalization": {**same.state_dict()["normalization"], "eps_electronic": {
        **same.state_dict()["normalization"]["eps_electronic"], "shift": [0.0, 0.0, 0.0, 0.0]}}}}
    assert "label counts only for ['eps_electronic']" in check_training_split(old, same)
    assert check_training_split({}, same).startswith("not verified")


def test_seed_summary_mean_and_standard_error(tmp_path):
    paths = []
    for seed, model_error in enumerate([1.0, 2.0, 3.0]):  # mean 2, s.e. 1/sqrt(3)
        rows = [Row("eps_electronic", "anisotropic_mae", "dimensionless", 10, 4,
                    {MODEL: model_error, ORACLE: 4.0, MEDIAN: 5.0}),
                Row("eps_electronic", "isotropic_mae", "dimensionless", 10, 4, {MODEL: 1.0, MEDIAN: 2.0})]
        paths.append(tmp_path / f"s{seed}.csv")
        write_csv(rows, {"seed": str(seed)}, paths[-1])
    assert [r.values for r in read_rows(paths[0])] == [{MODEL: 1.0, MEDIAN: 5.0, ORACLE: 4.0},
                                                       {MODEL: 1.0, MEDIAN: 2.0}]
    text = seed_summary(paths)
    assert f"| eps_electronic | anisotropic_mae | dimensionless | 2 ± {1 / np.sqrt(3):.2g} |  | 5 | 4 |" in text
    # traceless goal: model <= 0.5 x oracle (2.0) passes for seeds 0 and 1; isotropic goal (<= 0.7 x 2) for all
    assert "eps_electronic traceless MAE <= 0.5x zero anisotropy: 2 of 3" in text
    assert "eps_electronic isotropic MAE >= 30% below training median: 3 of 3" in text
