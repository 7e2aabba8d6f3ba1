"""The customer's local time: the quarter-hour cache gives what a direct conversion gives."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from service.reference.timezones import country_zone, local_time

# fixed offsets, half and three-quarter hours (India, Nepal, Iran), daylight saving time on
# either hemisphere (United States, Germany, Australia, Lord Howe's half-hour shift), unknown
COUNTRIES = ["IN", "NP", "IR", "US", "DE", "AU", "BR", "ID", "VN", "BD", "XX", "", None]


@given(
    second=st.integers(min_value=1_500_000_000, max_value=2_000_000_000),
    country=st.sampled_from(COUNTRIES),
)
def test_local_time_is_the_direct_conversion(second: int, country: str | None) -> None:
    zone = country_zone(country)
    if zone is None:
        assert local_time(second, country) is None
        return
    local = datetime.fromtimestamp(second, zone)
    assert local_time(second, country) == (local.hour, local.weekday() >= 5)


def test_countries_of_several_zones_take_their_largest_market() -> None:
    assert str(country_zone("BR")) == "America/Sao_Paulo"
    assert str(country_zone("ID")) == "Asia/Jakarta"
    assert str(country_zone("in")) == "Asia/Kolkata"
    assert country_zone("XX") is None and country_zone(None) is None
    # 2026-01-03 (a Saturday) 20:00 UTC is Sunday 01:30 in India
    assert local_time(1_767_470_400, "IN") == (1, True)
