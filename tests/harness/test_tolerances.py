from __future__ import annotations

import pytest
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.recipe import ToleranceOverrides


def test_per_output_override_beats_global_which_beats_recipe():
    overrides = ToleranceOverrides.parse(atol=["1e-2", "boxes=0.5"], rtol=["0"])
    recipe = Tolerance(atol=1e-5, rtol=1e-3, check="max")
    assert overrides.apply("boxes", recipe) == Tolerance(atol=0.5, rtol=0.0, check="max")
    assert overrides.apply("scores", recipe) == Tolerance(atol=1e-2, rtol=0.0, check="max")
    assert ToleranceOverrides().apply("scores", recipe) is recipe


@pytest.mark.parametrize("value", ["abc", "x=", "-1", "nan", "out=inf"])
def test_malformed_tolerance_is_a_usage_error_naming_the_flag(value):
    with pytest.raises(UsageError, match="--atol"):
        ToleranceOverrides.parse(atol=[value])


def test_unknown_outputs_are_reported():
    overrides = ToleranceOverrides.parse(atol=["output1=1"], rtol=["output0=1"])
    assert overrides.unknown_outputs(["output0"]) == ["output1"]
