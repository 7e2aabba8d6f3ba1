"""The accepted clock skew is bounded by what the velocity windows stay exact for."""

from __future__ import annotations

import pytest

from service.errors import ConfigurationError
from service.features.catalog import MAX_BACKDATING_SECONDS
from service.settings import Settings

ENV = {"RISKSCORE_SECRET": "a-test-secret-of-some-length"}


@pytest.mark.parametrize("skew", ["0", "120", str(MAX_BACKDATING_SECONDS // 2)])
def test_a_skew_up_to_half_the_backdating_bound_is_accepted(skew: str) -> None:
    settings = Settings.from_env({**ENV, "RISKSCORE_MAX_CLOCK_SKEW_SECONDS": skew})
    assert settings.max_clock_skew_seconds == float(skew)


@pytest.mark.parametrize("skew", ["-1", str(MAX_BACKDATING_SECONDS // 2 + 1), "nan", "inf"])
def test_a_larger_or_negative_skew_is_refused_naming_the_variable(skew: str) -> None:
    with pytest.raises(ConfigurationError, match="RISKSCORE_MAX_CLOCK_SKEW_SECONDS"):
        Settings.from_env({**ENV, "RISKSCORE_MAX_CLOCK_SKEW_SECONDS": skew})
