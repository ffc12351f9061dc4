"""The scoreboard's parity plots (``equiprop.workflows.scoreboard_plots``): one figure per task, a panel per
independent tensor component (6 of a dielectric tensor, 21 of a stiffness, 18 of a piezo tensor), eigenvalues of
rank-2 tensors, written as PNG files that read back."""

import numpy as np
import pytest
from PIL import Image

from equiprop.data.tasks import BUILTIN_TASKS
from equiprop.data.tensor_ops import project_symmetric
from equiprop.workflows.scoreboard import INVARIANT, MODEL, TaskResults
from equiprop.workflows.scoreboard_plots import independent_components, parity_plots


def symmetric_tensors(name: str, n: int, rng) -> np.ndarray:
    task = BUILTIN_TASKS[name]
    return np.stack([project_symmetric(rng.normal(size=(3,) * task.rank), task.formula) for _ in range(n)])


@pytest.mark.parametrize("name, count", [("eps_total", 6), ("elastic_tensor", 21), ("piezo_tensor", 18)])
def test_independent_components_are_the_distinct_entries_of_each_tensor(name, count):
    t = symmetric_tensors(name, 4, np.random.default_rng(0))
    labels, values = independent_components(t, t.ndim - 1)
    assert len(labels) == len(set(labels)) == count and values.shape == (4, count)
    # every entry of the tensor is one of its independent components (nothing lost by the symmetry)
    assert set(np.round(t.ravel(), 12)) == set(np.round(values.ravel(), 12))


def test_parity_plots_write_one_figure_per_task_and_eigenvalues_for_rank_two(tmp_path):
    rng = np.random.default_rng(1)
    eps = symmetric_tensors("eps_total", 10, rng)
    results = {
        "Ef": TaskResults("Ef", "scalar", "eV/atom", None, [f"s{i}" for i in range(10)], rng.normal(size=10),
                          rng.normal(size=20), {MODEL: rng.normal(size=10), INVARIANT: rng.normal(size=10)}),
        "eps_total": TaskResults("eps_total", "tensor", "", "ij=ji", [f"s{i}" for i in range(10)], eps, eps,
                                 {MODEL: eps + 0.1}),
    }
    written = parity_plots(results, tmp_path / "board")
    names = sorted(p.name for p in written)
    assert names == ["board_eigenvalues_eps_total.png", "board_parity_Ef.png", "board_parity_eps_total.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
