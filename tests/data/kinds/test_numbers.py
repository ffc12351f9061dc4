"""The kinds whose label is one number (``equiprop.data.kinds.numbers``): ``scalar`` as it is, ``log_scalar`` learned
as log10 with its written error still in the label's units, ``binary`` as a logit with cross-entropy, accuracy and
a probability written out."""

import numpy as np
import pytest
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.tasks import BUILTIN_TASKS, resolve_task


def test_log_scalar_transform():
    k = BUILTIN_TASKS["K_VRH"]
    assert k.model_units == "log10(GPa)"
    assert k.to_model(100.0) == pytest.approx(2.0)
    assert k.from_model(2.0) == pytest.approx(100.0)
    with pytest.raises(DataError, match="must be > 0"):
        k.parse(-3.0, "mp-1")
    assert k.kind_def.model_to_physical(k, torch.tensor([1.0, 2.0])).tolist() == pytest.approx([10.0, 100.0])
    with pytest.raises(ConfigError, match="sum-pooled"):
        resolve_task({"name": "x", "key": "x", "units": "eV", "kind": "log_scalar", "pooling": "sum"})


def test_scalar_statistics_are_the_mean_and_standard_deviation_with_safe_degenerate_cases():
    task = BUILTIN_TASKS["Ef"]
    x = np.array([-1.0, 0.0, 2.0, 3.0])
    assert task.kind_def.statistics(task, x) == pytest.approx((1.0, float(x.std())))
    assert task.kind_def.statistics(task, np.array([5.0])) == (5.0, 1.0)  # one label: no spread to divide by
    assert task.kind_def.statistics(task, np.array([2.0, 2.0])) == (2.0, 1.0)
    assert task.kind_def.statistics(task, np.array([])) == (0.0, 1.0)


def test_binary_labels_logit_loss_accuracy_and_written_probability():
    task = resolve_task({"name": "metal", "key": "is_metal", "units": "", "kind": "binary"})
    kind = task.kind_def
    assert task.parse(1, "mp-1") == 1.0 and task.parse("0", "mp-1") == 0.0
    with pytest.raises(DataError, match="must be 0 or 1") as err:
        task.parse(0.5, "mp-7")
    assert "mp-7" in str(err.value)
    assert task.output_units == "probability" and not kind.normalised and kind.error_metric is None
    assert kind.statistics(task, np.array([0.0, 1.0, 1.0])) == (0.0, 1.0)  # a logit is never shifted or scaled
    logits, target = torch.tensor([3.0, -2.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    loss, parts = kind.loss(logits, target, "mae")  # a regression loss name does not apply: cross-entropy
    expected = -(torch.log(torch.sigmoid(logits[0])) + torch.log(1 - torch.sigmoid(logits[1]))
                 + torch.log(1 - torch.sigmoid(logits[2]))) / 3
    assert float(loss) == pytest.approx(float(expected)) and parts == {}
    probability = kind.prediction_to_physical(task, logits)
    metrics = kind.metrics(task)
    kind.update_metrics(task, metrics, probability, target)
    assert float(metrics["accuracy"].compute()) == pytest.approx(2 / 3)  # 0.62 for a 0 label is wrong
