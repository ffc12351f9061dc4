"""The kind registry (``equiprop.data.kinds`` and its contract ``base.py``): a kind of a user's own, registered
outside the package, is what a task definition names; an unknown kind is refused by task name."""

import numpy as np
import pytest

from equiprop.data.errors import ConfigError
from equiprop.data.kinds import KINDS, TaskKind, kind_of, register_kind
from equiprop.data.tasks import resolve_task


class CelsiusKind(TaskKind):
    """Labels in degrees Celsius learned in kelvin: a model space that differs from the written units."""

    name = "test_celsius"

    def model_units(self, task):
        return "K"

    def to_model(self, task, x):
        return np.asarray(x) + 273.15

    def from_model(self, task, x):
        return np.asarray(x) - 273.15


def test_a_kind_registered_outside_the_package_is_what_tasks_name():
    register_kind(CelsiusKind())
    try:
        task = resolve_task({"name": "Tm", "key": "Tm", "units": "degC", "kind": "test_celsius"})
        assert task.kind_def is KINDS["test_celsius"] and task.model_units == "K" and task.output_units == "degC"
        assert task.to_model(task.parse("25", "mp-1")) == pytest.approx(298.15)
        assert task.from_model(np.array(298.15)) == pytest.approx(25.0)
    finally:
        KINDS.pop("test_celsius")
    with pytest.raises(ConfigError, match="task 'Tm': kind must be one of"):
        kind_of("test_celsius", "Tm")
    with pytest.raises(ValueError, match="needs a name"):
        register_kind(TaskKind())


def test_every_registered_kind_states_its_readout_outputs_and_weighting():
    for name, kind in KINDS.items():
        assert kind.name == name and kind.readout in ("scalar", "tensor", "pseudoscalar", "gradient")
        assert kind.parity in (1, -1)  # -1: flips sign under improper rotations (the symmetry battery asks)
        assert kind.weighting_factor in (0.5, 1.0)  # Gaussian likelihood or classifier
        assert kind.has_error_in_units == (kind.error_metric is not None)
