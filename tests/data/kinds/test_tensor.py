"""The ``tensor`` kind (``equiprop.data.kinds.tensor``): labels checked against their formula, per-irrep-copy
statistics (0e by median and MAD, l>0 by mean norm), the loss split into its isotropic and anisotropic parts, and
metrics in the Cartesian components."""

import numpy as np
import pytest
import torch

from equiprop.data.errors import ConfigError
from equiprop.data.kinds import tensor_part_columns, tensor_task_loss
from equiprop.data.tasks import BUILTIN_TASKS, resolve_task
from equiprop.data.tensor_ops import change_of_basis


def test_tensor_loss_parts_are_weighted_separately():
    isotropic = torch.tensor([True, False, False, False, False, False])
    columns = tensor_part_columns(isotropic)
    target = torch.zeros(4, 6)
    prediction = torch.zeros(4, 6)
    prediction[:, 0] = 2.0  # isotropic error only
    prediction[:, 1:] = 1.0  # anisotropic error only
    total, parts = tensor_task_loss(prediction, target, columns, "mae", isotropic_weight=3.0, anisotropic_weight=0.5)
    assert float(parts["isotropic"]) == 2.0 and float(parts["anisotropic"]) == 1.0
    assert float(total) == pytest.approx(3.0 * 2.0 + 0.5 * 1.0)
    piezo = tensor_part_columns(isotropic[1:])  # no 0e
    total, parts = tensor_task_loss(prediction[:, 1:], target[:, 1:], piezo, "mse")
    assert set(parts) == {"anisotropic"} and float(total) == 1.0


def test_statistics_are_per_irrep_copy_median_and_mad_for_0e_mean_norm_for_2e():
    task = BUILTIN_TASKS["eps_total"]
    rng = np.random.default_rng(0)
    traces = rng.lognormal(1.5, 0.4, size=200)
    aniso = rng.normal(size=(200, 3, 3)) * 0.3
    aniso = (aniso + aniso.transpose(0, 2, 1)) / 2
    aniso -= np.einsum("nii->n", aniso)[:, None, None] / 3 * np.eye(3)
    x = traces[:, None, None] / 3 * np.eye(3) + aniso
    shift, scale = task.kind_def.statistics(task, x)
    irreps = x.reshape(200, 9) @ change_of_basis(task.formula).T  # (n, 6): 0e then 2e
    iso = irreps[:, 0]
    assert shift[0] == pytest.approx(np.median(iso))
    assert scale[0] == pytest.approx(1.4826 * np.median(np.abs(iso - np.median(iso))))
    assert shift[1:] == [0.0] * 5  # an anisotropic part is never shifted: it has no preferred direction
    assert scale[1:] == pytest.approx([np.linalg.norm(irreps[:, 1:], axis=1).mean() / np.sqrt(5)] * 5)


def test_metrics_are_in_cartesian_components_and_isotropic_part_only_where_it_exists():
    task = BUILTIN_TASKS["eps_total"]
    kind = task.kind_def
    metrics = kind.metrics(task)
    target = torch.eye(3).repeat(2, 1, 1) * 4.0
    prediction = target.clone()
    prediction[0] += torch.eye(3)  # isotropic error of 1 on every diagonal
    prediction[1, 0, 1] = prediction[1, 1, 0] = 0.9  # anisotropic error only
    kind.update_metrics(task, metrics, prediction, target)
    assert float(metrics["component_mae"].compute()) == pytest.approx((3 / 9 + 1.8 / 9) / 2)
    assert float(metrics["isotropic_mae"].compute()) == pytest.approx(0.5)  # (1 + 0) / 2 structures
    assert "isotropic_mae" not in kind.metrics(BUILTIN_TASKS["piezo_tensor"])  # rank 3: no isotropic part
    with pytest.raises(ConfigError, match="cannot be max-pooled"):
        resolve_task({"name": "t", "key": "t", "units": "", "kind": "tensor", "formula": "ij=ji", "pooling": "max"})


def test_the_odd_scalar_of_a_general_rank_3_tensor_is_scaled_not_shifted():
    """``ijk`` carries a 0o part (the Levi-Civita component, odd under inversion): shifting it by a median, as 0e parts
    are, would add an invariant to an odd quantity and break the mirror symmetry of the predictions."""
    task = resolve_task({"name": "t", "key": "t", "units": "x", "kind": "tensor", "formula": "ijk"})
    levi_civita = np.zeros((3, 3, 3))
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        levi_civita[i, j, k], levi_civita[j, i, k] = 1.0, -1.0
    x = np.stack([2.0 * levi_civita, 3.0 * levi_civita, 4.0 * levi_civita])  # all of one hand: median 3, not 0
    shift, scale = task.kind_def.statistics(task, x)
    odd = np.flatnonzero(np.abs(change_of_basis("ijk") @ levi_civita.reshape(-1)) > 1e-9)  # its 0o column
    assert len(odd) == 1 and shift[odd[0]] == 0.0
    assert scale[odd[0]] == pytest.approx(3.0 * np.sqrt(6))  # mean |coefficient|: |eps| = sqrt(6)
