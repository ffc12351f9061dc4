"""The ``pseudoscalar`` kind (``equiprop.data.kinds.pseudoscalar``): a number odd under inversion (a handedness),
normalised by scale only (the RMS of the training labels, no shift), parsed as a number, a regression loss, MAE in the
label's units and the sign accuracy of its chiral labels; what it refuses (max pooling, an asymmetric range)."""

import numpy as np
import pytest
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.kinds import KINDS
from equiprop.data.normalization import compute_stats
from equiprop.data.tasks import resolve_task


def _task(**fields):
    return resolve_task({"name": "handedness", "key": "handedness", "units": "dimensionless",
                         "kind": "pseudoscalar", **fields})


def test_the_kind_is_registered_odd_and_read_by_a_pseudoscalar_readout():
    task = _task()
    kind = task.kind_def
    assert kind is KINDS["pseudoscalar"] and kind.parity == -1 and kind.readout == "pseudoscalar"
    assert task.rank == 0 and task.model_units == task.output_units == "dimensionless"
    assert kind.normalised and kind.error_metric == "mae" and kind.weighting_factor == 0.5
    assert KINDS["scalar"].parity == KINDS["tensor"].parity == 1  # the contract's default: not pseudo


def test_statistics_are_no_shift_and_the_root_mean_square():
    task = _task()
    kind = task.kind_def
    labels = np.array([1.0, -1.0, 3.0, -3.0])
    assert kind.statistics(task, labels) == pytest.approx((0.0, np.sqrt(5.0)))
    # all training labels of one hand: a scalar's statistics shift by their mean (2); a pseudoscalar's shift stays 0,
    # else the mirror image of a crystal fitted at 2 (normalised 0), whose normalised prediction is exactly minus its
    # crystal's (-0), would come out as 2, not -2
    assert kind.statistics(task, np.array([2.0, 2.0])) == (0.0, 2.0)
    assert KINDS["scalar"].statistics(task, np.array([2.0, 2.0])) == (2.0, 1.0)
    assert kind.statistics(task, np.array([])) == (0.0, 1.0)
    assert kind.statistics(task, np.zeros(3)) == (0.0, 1.0)  # only achiral crystals: nothing to scale by


def test_a_sum_pooled_pseudoscalar_is_scaled_per_atom():
    task = _task(pooling="sum")
    stats = compute_stats(torch.tensor([6.0, -2.0]), task, num_atoms=torch.tensor([3, 1]))
    assert stats.shift == 0.0 and stats.scale == pytest.approx(2.0) and stats.count == 2  # RMS of (2, -2)


def test_labels_are_numbers_and_bad_ones_name_the_entry():
    task = _task()
    assert task.parse("-0.75", "quartz-154") == -0.75 and task.parse(1, "quartz-152") == 1.0
    assert task.parse("nan", "x") is None and task.parse(None, "x") is None  # missing, masked
    with pytest.raises(DataError, match="quartz-7.*handedness: expected a number"):
        task.parse("left", "quartz-7")
    ranged = _task(valid_range=[-1, 1])
    with pytest.raises(DataError, match="outside the physical range"):
        ranged.parse(-1.5, "quartz-8")
    per_atom = _task(level="atom").parse([0.5, float("nan"), -0.5], "mp-1")  # one row per atom, NaN: unlabelled
    assert per_atom[0] == 0.5 and np.isnan(per_atom[1]) and per_atom[2] == -0.5


def test_what_the_kind_refuses_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="'handedness': a pseudoscalar cannot be max-pooled"):
        _task(pooling="max")
    with pytest.raises(ConfigError, match="valid_range must be symmetric"):
        _task(valid_range=[0, 10])  # the mirror image's label -x would be refused
    with pytest.raises(ConfigError, match="valid_range must be symmetric"):
        _task(valid_range=[None, 10])
    with pytest.raises(ConfigError, match="parametrization"):
        _task(parametrization="spd_log")
    assert _task(valid_range=[-10, 10]).valid_range == (-10.0, 10.0)


def test_loss_is_the_regression_loss_and_metrics_are_in_the_labels_units():
    task = _task()
    kind = task.kind_def
    prediction, target = torch.tensor([0.5, -0.2, 0.1, 0.3]), torch.tensor([1.0, 1.0, -1.0, 0.0])
    loss, parts = kind.loss(prediction, target, "mae")
    assert float(loss) == pytest.approx((0.5 + 1.2 + 1.1 + 0.3) / 4) and parts == {}
    assert float(kind.loss(prediction, target, "mse")[0]) == pytest.approx((0.25 + 1.44 + 1.21 + 0.09) / 4)
    metrics = kind.metrics(task)
    kind.update_metrics(task, metrics, prediction, target)
    assert float(metrics["mae"].compute()) == pytest.approx(0.775)
    assert float(metrics["rmse"].compute()) == pytest.approx(np.sqrt((0.25 + 1.44 + 1.21 + 0.09) / 4))
    # the handedness of the three chiral labels: right, wrong (-0.2 for +1), wrong (0.1 for -1); the achiral (0)
    # label has no sign to get right and is left out
    assert float(metrics["sign_accuracy"].compute()) == pytest.approx(1 / 3)
