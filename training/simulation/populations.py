"""Who pays whom: merchants, their customers, and the customers' devices and instruments.

Customers are built once, with everything that stays stable about them (country, e-mail,
devices, home IP, one or two payment instruments, KYC level, spending level), so that
legitimate traffic is made of repeat customers who look like themselves. Some realistic
overlaps are built in on purpose, as hard cases for the model: the same person at two
merchants (one card, one device), families sharing one device, travellers, customers
behind a VPN (many unrelated people on a few foreign addresses).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from training.simulation.cards import BinTable, Cards, foreign_countries
from training.simulation.identities import (
    choose,
    crypto_addresses,
    email_local_parts,
    emails,
    ip_addresses,
    mobile_numbers,
    pix_keys,
    unique_tokens,
    upi_ids,
)
from training.simulation.markets import (
    CRYPTO_COINS,
    EXPAT_CARD_COUNTRIES,
    HOME_COUNTRIES,
    LOCAL_CURRENCY,
    LOCAL_METHODS,
    TRAVEL_COUNTRIES,
    UTC_OFFSET_SECONDS,
    VPN_COUNTRIES,
    VPN_EXITS_PER_COUNTRY,
)
from training.simulation.rhythm import DAY, Window
from training.simulation.verticals import (
    FOREX,
    FOREX_BONUS_CODES,
    GAMING,
    PLAN_PRICES_USD,
    PROFILES,
    RELOAD_CODES,
    TRIAL_PRICES_USD,
    WELCOME_CODES,
)

MERCHANT_PREFIX = {
    "forex": "fx_",
    "gaming": "gm_",
    "adult": "ad_",
    "ecommerce": "ec_",
    "services": "sv_",
}
PROFILE_LIST = tuple(PROFILES.values())


def per_vertical(values: list | tuple, verticals: np.ndarray) -> np.ndarray:
    """A per-vertical constant, looked up for each row's vertical code."""
    return np.asarray(values)[verticals]


@dataclass(frozen=True, slots=True)
class Merchants:
    """The simulated merchants: vertical, share of customers, country mix, offers."""

    merchant_id: np.ndarray
    vertical: np.ndarray  # code into VERTICALS
    weight: np.ndarray  # share of its vertical's customers
    country_mix: np.ndarray  # (n, 5): where its customers live, over HOME_COUNTRIES
    subscriptions: np.ndarray  # sells subscriptions (initial, rebill, trials)
    plan_usd: np.ndarray
    trial_usd: np.ndarray
    welcome_code: np.ndarray  # first-deposit bonus code (gaming, forex)
    reload_code: np.ndarray

    def __len__(self) -> int:
        return len(self.merchant_id)

    def in_verticals(self, *codes: int) -> np.ndarray:
        """The indices of the merchants in the given verticals."""
        return np.flatnonzero(np.isin(self.vertical, codes))

    def pick(
        self, rng: np.random.Generator, codes: tuple[int, ...], n: int, *, by_volume: bool = True
    ) -> np.ndarray:
        """Merchants of the given verticals, by traffic volume or uniformly."""
        candidates = self.in_verticals(*codes)
        weight = self.weight[candidates] if by_volume else np.ones(candidates.size)
        return candidates[rng.choice(candidates.size, size=n, p=weight / weight.sum())]

    def customer_countries(self, rng: np.random.Generator, merchants: np.ndarray) -> np.ndarray:
        """A home country for a customer of each merchant, from the merchant's market."""
        cdf = np.cumsum(self.country_mix[merchants], axis=1)
        index = (rng.random(len(merchants))[:, None] > cdf[:, :-1]).sum(axis=1)
        return np.asarray(HOME_COUNTRIES, dtype=object)[index]

    @classmethod
    def build(cls, rng: np.random.Generator, rows: int) -> Merchants:
        """About 140 merchants for a million rows, at least two per vertical for small logs."""
        scale = min(1.5, max(0.05, rows / 1_000_000))
        counts = [max(2, round(p.merchants * scale)) for p in PROFILE_LIST]
        vertical = np.repeat(np.arange(len(counts)), counts)
        n = len(vertical)
        names = list(PROFILES)
        prefix = np.array([MERCHANT_PREFIX[names[v]] for v in vertical])
        merchant_id = np.strings.add(prefix, unique_tokens(rng, n, "", 8).astype(str))
        weight = rng.lognormal(0.0, 0.9, n)
        for code in range(len(counts)):
            weight[vertical == code] /= weight[vertical == code].sum()
        mix = np.array([p.country_mix for p in PROFILE_LIST])[vertical]
        country_mix = np.vstack([rng.dirichlet(20 * row) for row in mix])
        subscription_share = per_vertical([p.subscription_share for p in PROFILE_LIST], vertical)
        welcome = choose(rng, WELCOME_CODES, n)
        welcome[vertical == FOREX] = choose(rng, FOREX_BONUS_CODES, int((vertical == FOREX).sum()))
        welcome[~np.isin(vertical, (FOREX, GAMING))] = None
        reload = choose(rng, RELOAD_CODES, n)
        reload[vertical != GAMING] = None
        return cls(
            merchant_id=merchant_id.astype(object),
            vertical=vertical,
            weight=weight,
            country_mix=country_mix,
            subscriptions=rng.random(n) < subscription_share,
            plan_usd=choose(rng, PLAN_PRICES_USD, n).astype(float),
            trial_usd=choose(rng, TRIAL_PRICES_USD, n).astype(float),
            welcome_code=welcome,
            reload_code=reload,
        )


@dataclass(frozen=True, slots=True)
class Instruments:
    """Payment instruments: a card, a UPI id, a wallet, a PIX key or a crypto address."""

    type: np.ndarray
    provider: np.ndarray
    currency: np.ndarray  # what it pays in: local currency, or the coin
    bin: np.ndarray
    last4: np.ndarray
    fingerprint: np.ndarray
    issuer_country: np.ndarray
    funding: np.ndarray
    account: np.ndarray  # VPA, wallet id, PIX key or address; None for cards

    def take(self, rows: np.ndarray) -> Instruments:
        """The instruments at ``rows``."""
        return Instruments(*(getattr(self, f.name)[rows] for f in fields(self)))

    def columns(self) -> dict[str, np.ndarray]:
        """The log columns this instrument fills (the currency is the payment's, not here)."""
        return {
            "payment_method_type": self.type,
            "payment_method_provider": self.provider,
            "card_bin": self.bin,
            "card_last4": self.last4,
            "card_fingerprint": self.fingerprint,
            "card_issuer_country": self.issuer_country,
            "card_funding": self.funding,
            "payment_method_account": self.account,
        }

    @classmethod
    def of_cards(cls, cards: Cards) -> Instruments:
        """Card instruments for ``cards``."""
        n = len(cards.bin)
        return cls(
            type=np.full(n, "card", dtype=object),
            provider=cards.network,
            currency=np.full(n, None, dtype=object),
            bin=cards.bin,
            last4=cards.last4,
            fingerprint=cards.fingerprint,
            issuer_country=cards.issuer_country,
            funding=cards.funding,
            account=np.full(n, None, dtype=object),
        )

    def where(self, condition: np.ndarray, other: Instruments) -> Instruments:
        """This instrument where ``condition`` is false, ``other`` where it is true."""
        return Instruments(
            *(
                np.where(condition, getattr(other, f.name), getattr(self, f.name))
                for f in fields(self)
            )
        )

    def assign(self, rows: np.ndarray, source: Instruments) -> None:
        """Overwrite the instruments at ``rows`` with ``source``'s."""
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(source, f.name)

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        bins: BinTable,
        countries: np.ndarray,
        crypto_share: float | np.ndarray,
        local_parts: np.ndarray,
        emails_: np.ndarray,
        *,
        expat_share: float = 0.03,
        with_cards: bool = True,
    ) -> Instruments:
        """Instruments by local habit: UPI in India, bKash in Bangladesh, PIX in Brazil..."""
        n = len(countries)
        kind = np.empty(n, dtype=object)
        provider = np.empty(n, dtype=object)
        currency = np.empty(n, dtype=object)
        for country, methods in LOCAL_METHODS.items():
            methods = tuple(m for m in methods if with_cards or m[0] != "card")
            rows = np.flatnonzero(countries == country)
            weights = np.array([w for _, _, w in methods])
            pick = rng.choice(len(methods), size=rows.size, p=weights / weights.sum())
            kind[rows] = np.array([m[0] for m in methods], dtype=object)[pick]
            provider[rows] = np.array([m[1] for m in methods], dtype=object)[pick]
            currency[rows] = LOCAL_CURRENCY[country]
        crypto = np.flatnonzero(rng.random(n) < crypto_share)
        coin_weights = np.array([w for _, _, w in CRYPTO_COINS])
        coin = rng.choice(len(CRYPTO_COINS), size=crypto.size, p=coin_weights / coin_weights.sum())
        kind[crypto] = "crypto"
        currency[crypto] = np.array([c for c, _, _ in CRYPTO_COINS], dtype=object)[coin]
        provider[crypto] = np.array([p for _, p, _ in CRYPTO_COINS], dtype=object)[coin]

        instruments = cls(
            kind, provider, currency, *(np.full(n, None, dtype=object) for _ in range(6))
        )
        card = np.flatnonzero(kind == "card")
        issuer = countries[card].copy()
        expat = rng.random(card.size) < expat_share
        issuer[expat] = foreign_countries(rng, issuer[expat], EXPAT_CARD_COUNTRIES)
        drawn = bins.draw(rng, issuer)
        instruments.bin[card] = drawn.bin
        instruments.last4[card] = drawn.last4
        instruments.fingerprint[card] = drawn.fingerprint
        instruments.issuer_country[card] = drawn.issuer_country
        instruments.funding[card] = drawn.funding
        provider[card] = drawn.network
        instruments.fill_accounts(rng, countries, local_parts, emails_)
        return instruments

    def fill_accounts(
        self, rng: np.random.Generator, countries: np.ndarray, local_parts: np.ndarray, emails_
    ) -> None:
        """The account identifier of every non-card instrument, in its method's shape."""
        upi = np.flatnonzero(self.type == "upi")
        self.account[upi] = upi_ids(rng, self.provider[upi], local_parts[upi])
        wallet = np.flatnonzero(self.type == "wallet")
        self.account[wallet] = mobile_numbers(rng, countries[wallet])
        pix = np.flatnonzero(self.type == "bank_transfer")
        self.account[pix] = pix_keys(rng, emails_[pix])
        crypto = np.flatnonzero(self.type == "crypto")
        self.account[crypto] = crypto_addresses(rng, self.provider[crypto])


@dataclass(frozen=True, slots=True)
class Customers:
    """The simulated customers: merchant, identity, instruments and habits."""

    customer_id: np.ndarray
    merchant: np.ndarray
    vertical: np.ndarray
    country: np.ndarray
    utc_offset: np.ndarray
    created_at: np.ndarray  # Unix seconds; within the window for new accounts
    new: np.ndarray  # the account was opened during the window
    activity: np.ndarray  # relative number of payments
    spend: np.ndarray  # relative size of payments
    kyc: np.ndarray  # 0–3, or -1 where the vertical does not report it
    age_verified: np.ndarray  # 0/1, or -1
    email: np.ndarray
    device: np.ndarray  # (n, 2): main device, second device
    second_device: np.ndarray
    home_ip: np.ndarray
    primary: Instruments
    secondary: Instruments
    second_instrument: np.ndarray
    card_usd: np.ndarray  # pays by card in USD (forex accounts, international sites)
    travel_start: np.ndarray  # Unix seconds, or -1 for people who stay at home
    travel_end: np.ndarray
    travel_country: np.ndarray
    vpn: np.ndarray  # index into VPN_COUNTRIES, or -1 for customers without a VPN
    vpn_exits: np.ndarray  # (len(VPN_COUNTRIES), VPN_EXITS_PER_COUNTRY) shared addresses

    def __len__(self) -> int:
        return len(self.customer_id)

    @classmethod
    def build(
        cls, rng: np.random.Generator, window: Window, merchants: Merchants, bins: BinTable, n: int
    ) -> Customers:
        """``n`` customers spread over the merchants by vertical."""
        share = np.array([p.customer_share for p in PROFILE_LIST])[merchants.vertical]
        merchant = np.sort(
            rng.choice(
                len(merchants),
                size=n,
                p=share * merchants.weight / (share * merchants.weight).sum(),
            )
        )
        vertical = merchants.vertical[merchant]
        country = merchants.customer_countries(rng, merchant)

        new = rng.random(n) < min(0.35, 0.08 + 0.0025 * window.days)
        days_ago = np.clip(rng.lognormal(np.log(200), 1.0, n), 3, 2_500)
        created_at = np.where(
            new,
            window.start + (rng.random(n) * 0.97 * window.span).astype(np.int64),
            window.start - (days_ago * DAY).astype(np.int64),
        )
        kyc = np.full(n, -1, dtype=np.int8)
        age_verified = np.full(n, -1, dtype=np.int8)
        for code, profile in enumerate(PROFILE_LIST):
            rows = np.flatnonzero(vertical == code)
            if profile.kyc:
                levels = np.where(
                    new[rows],
                    rng.choice(4, size=rows.size, p=profile.kyc_new),
                    rng.choice(4, size=rows.size, p=profile.kyc_old),
                )
                kyc[rows] = levels
            if profile.age_check:
                verified = np.where(new[rows], 0.93, 0.99)  # operators verify before deposits
                age_verified[rows] = rng.random(rows.size) < verified

        local_parts = email_local_parts(rng, country)
        email = emails(rng, local_parts, 0.004)
        device = unique_tokens(rng, 2 * n, "dev_", 16).reshape(n, 2)
        home_ip = ip_addresses(rng, country)
        crypto_share = per_vertical([p.crypto_share for p in PROFILE_LIST], vertical)
        primary = Instruments.draw(rng, bins, country, crypto_share, local_parts, email)
        secondary = Instruments.draw(rng, bins, country, crypto_share, local_parts, email)
        card_usd = rng.random(n) < per_vertical([p.card_usd_share for p in PROFILE_LIST], vertical)

        # the same person at two merchants: one e-mail, one device, one card or wallet
        twin = np.flatnonzero(rng.random(n) < 0.06)
        other = rng.integers(0, n, twin.size)
        elsewhere = merchant[other] != merchant[twin]
        twin, other = twin[elsewhere], other[elsewhere]
        country[twin] = country[other]
        email[twin] = email[other]
        device[twin] = device[other]
        home_ip[twin] = home_ip[other]
        primary.assign(twin, primary.take(other))
        secondary.assign(twin, secondary.take(other))

        # families: the next account of the same merchant on the same device and home line
        family = np.flatnonzero(rng.random(n) < 0.03)
        family = family[family > 0]
        family = family[
            (merchant[family] == merchant[family - 1]) & (country[family] == country[family - 1])
        ]
        device[family, 0] = device[family - 1, 0]
        home_ip[family] = home_ip[family - 1]

        traveller = rng.random(n) < 0.05
        travel_start = np.where(
            traveller, window.start + (rng.random(n) * window.span).astype(np.int64), -1
        )
        travel_end = np.where(
            traveller, travel_start + (rng.uniform(3, 20, n) * DAY).astype(np.int64), -1
        )
        travel_country = foreign_countries(rng, country, TRAVEL_COUNTRIES)

        vpn_share = per_vertical([p.vpn_share for p in PROFILE_LIST], vertical)
        vpn = np.where(rng.random(n) < vpn_share, rng.integers(0, len(VPN_COUNTRIES), n), -1)
        exits = np.repeat(np.asarray(VPN_COUNTRIES, dtype=object), VPN_EXITS_PER_COUNTRY)
        vpn_exits = ip_addresses(rng, exits, ipv6_share=0.0).reshape(len(VPN_COUNTRIES), -1)

        return cls(
            customer_id=unique_tokens(rng, n, "cus_", 12),
            merchant=merchant,
            vertical=vertical,
            country=country,
            utc_offset=np.array([UTC_OFFSET_SECONDS[c] for c in country], dtype=np.int64),
            created_at=created_at,
            new=new,
            activity=rng.lognormal(0.0, 1.1, n),
            spend=rng.lognormal(0.0, 0.45, n),
            kyc=kyc,
            age_verified=age_verified,
            email=email,
            device=device,
            second_device=rng.random(n) < 0.2,
            home_ip=home_ip,
            primary=primary,
            secondary=secondary,
            second_instrument=rng.random(n) < 0.15,
            card_usd=card_usd,
            travel_start=travel_start,
            travel_end=travel_end,
            travel_country=travel_country,
            vpn=vpn,
            vpn_exits=vpn_exits,
        )


@dataclass(frozen=True, slots=True)
class World:
    """Everything the generators share: the window, the BIN table, merchants and customers."""

    window: Window
    bins: BinTable
    merchants: Merchants
    customers: Customers

    @classmethod
    def build(cls, rng: np.random.Generator, window: Window, rows: int) -> World:
        """A world sized for a log of ``rows`` rows."""
        bins = BinTable.generate(rng)
        merchants = Merchants.build(rng, rows)
        customers = Customers.build(rng, window, merchants, bins, max(300, rows // 6))
        return cls(window, bins, merchants, customers)
