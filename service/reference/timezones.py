"""The customer's local time: one representative time zone per country.

A payment names countries (the customer's, the IP's, the card issuer's), never a time zone,
so the local hour and day are read in a representative zone of the country: the IANA
zone that ``zone.tab`` (shipped by the ``tzdata`` package, so no system file is needed)
lists for it, or, for a country spanning several zones, the zone of its largest market
(``_LARGEST``: Brazil is São Paulo, Indonesia Jakarta, the United States Chicago). For a
country of several zones that is an approximation of an hour or more at its edges;
documented rather than hidden. Unknown or missing countries have no local time.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache, lru_cache
from importlib.resources import files
from typing import Final
from zoneinfo import ZoneInfo

# Countries of several zones, by the zone of most of their people and payments.
_LARGEST: Final[dict[str, str]] = {
    "AR": "America/Argentina/Buenos_Aires",
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "CD": "Africa/Kinshasa",
    "CL": "America/Santiago",
    "CN": "Asia/Shanghai",
    "DE": "Europe/Berlin",
    "EC": "America/Guayaquil",
    "ES": "Europe/Madrid",
    "ID": "Asia/Jakarta",
    "KZ": "Asia/Almaty",
    "MN": "Asia/Ulaanbaatar",
    "MX": "America/Mexico_City",
    "MY": "Asia/Kuala_Lumpur",
    "NZ": "Pacific/Auckland",
    "PT": "Europe/Lisbon",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "US": "America/Chicago",
    "UZ": "Asia/Tashkent",
}


@cache
def _zone_names() -> dict[str, str]:
    names: dict[str, str] = {}
    text = files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        country, _, zone = line.split("\t")[:3]
        names.setdefault(country, zone)
    return names | _LARGEST


@cache
def country_zone(country: str | None) -> ZoneInfo | None:
    """The representative zone of an ISO 3166 alpha-2 country; None when unknown."""
    if not country:
        return None
    name = _zone_names().get(country.upper())
    return ZoneInfo(name) if name else None


def local_time(event_second: int, country: str | None) -> tuple[int, bool] | None:
    """The local hour (0-23) and whether it is Saturday or Sunday; None without a zone."""
    return _quarter(event_second // _QUARTER, country)


# Every zone's offset and transitions fall on quarter hours, so the local hour and day are
# the same for every second of a UTC quarter hour: one conversion per quarter and country
# (about 2 µs) serves every payment in it, from a cache.
_QUARTER: Final = 900


@lru_cache(maxsize=8_192)
def _quarter(quarter: int, country: str | None) -> tuple[int, bool] | None:
    zone = country_zone(country)
    if zone is None:
        return None
    local = datetime.fromtimestamp(quarter * _QUARTER, zone)
    return local.hour, local.weekday() >= 5
