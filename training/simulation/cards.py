"""Card issuers: a table of synthetic BINs per issuing country, and cards drawn from it.

A card in the log is its BIN, its last four digits and the gateway's token for it
(``tok_…``); the full number never exists, here or anywhere downstream. Each BIN has one
network and one funding type, so a "prepaid BIN" means the same thing in every row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from training.simulation.identities import choose, digit_strings, unique_tokens
from training.simulation.markets import HOME_COUNTRIES, ISSUER_COUNTRIES

FUNDING = ("debit", "credit", "prepaid")
FUNDING_WEIGHTS = (0.55, 0.35, 0.10)
# Each network's leading BIN digits (RuPay is issued in India only).
NETWORKS: dict[str, tuple[str, ...]] = {
    "visa": ("4",),
    "mastercard": ("51", "52", "53", "54", "55", "23", "24", "25", "26"),
    "rupay": ("508", "607", "608", "652", "653"),
}


@dataclass(frozen=True, slots=True)
class Cards:
    """What a drawn card shows in the log; one entry per row asked for."""

    bin: np.ndarray
    last4: np.ndarray
    fingerprint: np.ndarray
    issuer_country: np.ndarray
    funding: np.ndarray
    network: np.ndarray

    def take(self, rows: np.ndarray) -> Cards:
        """The cards at ``rows``."""
        return Cards(*(getattr(self, f.name)[rows] for f in fields(self)))


@dataclass(frozen=True, slots=True)
class BinTable:
    """The BINs the simulation issues cards from, with network, issuer country and funding."""

    bin: np.ndarray
    country: np.ndarray
    network: np.ndarray
    funding: np.ndarray
    weight: np.ndarray

    @classmethod
    def generate(cls, rng: np.random.Generator) -> BinTable:
        """A few dozen BINs per home country, fewer per foreign one, with uneven popularity."""
        rows: list[tuple[str, str, str, str]] = []
        seen: set[str] = set()
        for country in ISSUER_COUNTRIES:
            count = 24 if country in HOME_COUNTRIES else 8
            networks = ["visa", "mastercard"] + (["rupay"] if country == "IN" else [])
            for i in range(count):
                network = networks[i % len(networks)]
                # every country gets each funding type at least once
                funding = FUNDING[i] if i < 3 else str(rng.choice(FUNDING, p=FUNDING_WEIGHTS))
                while True:
                    lead = str(rng.choice(NETWORKS[network]))
                    number = lead + "".join(rng.choice(list("0123456789"), 6 - len(lead)))
                    if number not in seen:
                        break
                seen.add(number)
                rows.append((number, country, network, funding))
        columns = [np.array(column, dtype=object) for column in zip(*rows, strict=True)]
        weight = rng.lognormal(0.0, 1.0, len(rows))
        return cls(*columns, weight=weight)

    def draw(
        self,
        rng: np.random.Generator,
        countries: np.ndarray,
        funding: str | None = None,
        *,
        bin_rows: np.ndarray | None = None,
    ) -> Cards:
        """New cards (fresh tokens) of the given issuing countries, or of given BIN rows."""
        n = len(countries)
        if bin_rows is None:
            bin_rows = self.pick(rng, countries, funding)
        return Cards(
            bin=self.bin[bin_rows],
            last4=digit_strings(rng, n, 4).astype(object),
            fingerprint=unique_tokens(rng, n, "tok_", 20),
            issuer_country=self.country[bin_rows],
            funding=self.funding[bin_rows],
            network=self.network[bin_rows],
        )

    def pick(
        self, rng: np.random.Generator, countries: np.ndarray, funding: str | None = None
    ) -> np.ndarray:
        """BIN rows for issuing countries, weighted by popularity, optionally of one funding."""
        out = np.zeros(len(countries), dtype=np.int64)
        for country in np.unique(countries.astype(str)):
            rows = np.flatnonzero(countries == country)
            mask = self.country == country
            if funding is not None:
                mask &= self.funding == funding
            candidates = np.flatnonzero(mask)
            weight = self.weight[candidates] / self.weight[candidates].sum()
            out[rows] = candidates[rng.choice(candidates.size, size=rows.size, p=weight)]
        return out


def foreign_countries(rng: np.random.Generator, home: np.ndarray, pool: tuple[str, ...]):
    """A country from ``pool`` for each row, never the row's own ``home``."""
    out = choose(rng, pool, len(home))
    clash = out == home
    while clash.any():
        out[clash] = choose(rng, pool, int(clash.sum()))
        clash = out == home
    return out
