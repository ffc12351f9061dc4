"""The selection rule on a hand-made pool (pure functions: means and sigmas written by hand)."""

import numpy as np
import pytest

from equiprop.data.errors import ConfigError
from equiprop.screening.selection import parse_selection, reduce_values, select

SHAPES = {"Eg": (), "K_VRH": (), "eps_electronic": (3, 3), "elastic_tensor": (6, 6)}


def eps(iso: float) -> np.ndarray:
    return np.diag([iso - 1.0, iso, iso + 1.0])  # trace/3 == iso, anisotropic


def test_windows_top_k_straddle_and_isotropic_reduce():
    selection = parse_selection({
        "windows": [{"property": "Eg", "min": 1.0, "max": 3.0},
                    {"property": "eps_electronic", "reduce": "isotropic", "min": 10}],
        "top_k": {"objective": "K_VRH", "k": 2, "direction": "max"},
        "straddle_sigmas": 1.0}, SHAPES)
    #                    0      1     2     3     4     5    6 (failed in phase 1)
    eg = np.array([2.0, 1.5, 2.5, 0.8, 3.5, 2.0, 2.0])
    eg_std = np.array([0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1])
    iso = [12.0, 11.0, 10.5, 12.0, 12.0, 9.5, 12.0]
    iso_std_diag = [0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 0.1]  # sigma of trace/3 = mean of the diagonal sigmas
    k_vrh = np.array([100.0, 300.0, 200.0, 500.0, 50.0, 400.0, 900.0])
    ok = np.array([True] * 6 + [False])
    eps_mean = np.stack([eps(v) for v in iso])
    eps_std = np.stack([np.eye(3) * s for s in iso_std_diag])
    means = {"Eg": eg, "K_VRH": k_vrh}
    sigmas = {"Eg": eg_std, "K_VRH": np.zeros(7)}
    means["eps_electronic.isotropic"], sigmas["eps_electronic.isotropic"] = reduce_values(eps_mean, eps_std,
                                                                                        "isotropic")
    np.testing.assert_allclose(means["eps_electronic.isotropic"], iso)
    np.testing.assert_allclose(sigmas["eps_electronic.isotropic"], iso_std_diag)
    passes, chosen_by = select(selection, ok, means, sigmas)
    # 0, 1, 2 pass both windows; top_k=2 by K_VRH keeps 1 (300) and 2 (200); 3: Eg 0.8+0.3 reaches 1.0 (straddle);
    # 4: Eg 3.5-0.1 stays above 3.0 (no); 5: eps 9.5+1.0 reaches 10 (straddle); 6 failed in phase 1
    assert passes.tolist() == [True, True, True, False, False, False, False]
    assert chosen_by.tolist() == ["", "top_k", "top_k", "straddle", "", "straddle", ""]


def test_without_top_k_or_sigma():
    selection = parse_selection({"windows": [{"property": "Eg", "min": 1.0}], "straddle_sigmas": 2.0}, SHAPES)
    ok = np.ones(3, dtype=bool)
    passes, chosen_by = select(selection, ok, {"Eg": np.array([1.5, 0.9, np.nan])}, {"Eg": None})
    assert chosen_by.tolist() == ["window", "", ""]  # no sigma: straddle chooses nothing; NaN never passes


def test_voigt_bulk_and_components():
    c = np.zeros((1, 6, 6))
    c[0, :3, :3] = [[100, 40, 30], [40, 110, 20], [30, 20, 120]]
    c[0, 3, 3] = 50
    mean, _ = reduce_values(c, None, "isotropic")
    assert mean[0] == pytest.approx((100 + 110 + 120 + 2 * (40 + 30 + 20)) / 9)
    assert reduce_values(c, None, "12")[0][0] == 40
    assert reduce_values(np.stack([eps(5.0)]), None, "zz")[0][0] == 6.0
    assert reduce_values(np.stack([eps(5.0)]), None, "max_eigenvalue")[0][0] == pytest.approx(6.0)


@pytest.mark.parametrize("section, key", [
    ({"windows": [{"property": "Egg", "min": 1}]}, "windows[0].property"),
    ({"windows": [{"property": "Eg", "min": 3, "max": 1}]}, "windows[0]: min 3 > max 1"),
    ({"windows": [{"property": "eps_electronic", "reduce": "iso", "min": 1}]}, "windows[0].reduce"),
    ({"windows": [{"property": "eps_electronic", "min": 1}]}, "windows[0].reduce"),
    ({"windows": [{"property": "Eg", "reduce": "isotropic", "min": 1}]}, "windows[0].reduce"),
    ({"windows": [{"property": "Eg", "minimum": 1}]}, "windows[0].minimum"),
    ({"top_k": {"objective": "K_VRH", "k": 0}}, "top_k.k"),
    ({"top_k": {"objective": "K_VRH", "k": 3, "direction": "up"}}, "top_k.direction"),
    ({"straddle_sigma": 1}, "selection.straddle_sigma"),
    # YAML's .nan / .inf: NaN passes no window and no check, inf chooses everything
    ({"windows": [{"property": "Eg", "min": float("nan")}]}, "windows[0].min: expected a finite number"),
    ({"windows": [{"property": "Eg", "max": float("inf")}]}, "windows[0].max: expected a finite number"),
    ({"windows": [{"property": "Eg", "max": 10 ** 400}]}, "windows[0].max: expected a finite number"),
    ({"straddle_sigmas": float("nan")}, "selection.straddle_sigmas: expected a finite number"),
    ({"straddle_sigmas": float("inf")}, "selection.straddle_sigmas: expected a finite number"),
])
def test_bad_recipes_name_the_key(section, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_selection(section, SHAPES)
    assert "\n" not in str(err.value)
