import numpy as np
import pytest
import torch
from e3nn import o3

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.symmetry import rotate_tensor
from equiprop.data.tasks import BUILTIN_TASKS, TaskSpec, resolve_task, resolve_tasks
from equiprop.data.tensor_ops import cartesian_to_voigt, project_symmetric, voigt_to_cartesian


def test_every_builtin_task_states_its_units():
    for task in BUILTIN_TASKS.values():
        assert task.units, task.name
        assert task.to_config()["units"] == task.units


def test_voigt_round_trip_and_index_rules():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(6, 6))
    c = c + c.T
    full = voigt_to_cartesian(c)
    assert full.shape == (3, 3, 3, 3)
    assert full[0, 1, 0, 1] == c[5, 5] and full[1, 2, 0, 0] == c[3, 0] and full[2, 0, 1, 1] == c[4, 1]
    np.testing.assert_array_equal(cartesian_to_voigt(full), c)
    e = rng.normal(size=(3, 6))
    piezo = voigt_to_cartesian(e)
    assert piezo[0, 1, 2] == e[0, 3] and piezo[2, 2, 1] == e[2, 3]
    np.testing.assert_array_equal(cartesian_to_voigt(piezo), e)


@pytest.mark.parametrize("name", ["eps_electronic", "elastic_tensor", "piezo_tensor"])
def test_tensor_labels_obey_their_formula_and_rotate_as_tensors(name):
    task = BUILTIN_TASKS[name]
    rng = np.random.default_rng(1)
    raw = rng.normal(size=task.voigt_shape or task.model_shape)
    raw = project_symmetric(task.to_cartesian(raw), task.formula)
    parsed = task.parse(raw, "x")
    ct = task.cartesian_tensor
    irreps = ct.from_cartesian(torch.as_tensor(parsed, dtype=torch.float32))
    np.testing.assert_allclose(ct.to_cartesian(irreps).numpy(), parsed, atol=1e-5)
    # Rotating the Cartesian tensor == applying the irreps' Wigner-D matrices
    R = o3.rand_matrix().double()
    rotated = rotate_tensor(parsed, R.numpy())
    via_irreps = ct.to_cartesian(irreps @ ct.D_from_matrix(R.float()).T).numpy()
    np.testing.assert_allclose(via_irreps, rotated, atol=1e-4)


def test_missing_values_are_missing_not_errors():
    task = BUILTIN_TASKS["Ef"]
    for missing in [None, float("nan"), float("inf"), "na", "NaN", ""]:
        assert task.parse(missing, "x") is None
    assert BUILTIN_TASKS["eps_total"].parse(np.full((3, 3), np.nan), "x") is None


def test_user_defined_task_from_config_and_errors():
    task = resolve_task({"name": "gap_hse", "key": "hse_gap", "units": "eV"})
    assert task.kind == "scalar" and task.units == "eV"
    with pytest.raises(ConfigError, match="unknown task 'bogus'"):
        resolve_tasks(["Ef", "bogus"])
    with pytest.raises(ConfigError, match="duplicate"):
        resolve_tasks(["Ef", "Ef"])
    with pytest.raises(ConfigError, match="formula"):
        TaskSpec("t", "t", "GPa", kind="tensor")
