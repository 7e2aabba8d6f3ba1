"""What each vertical looks like: its customers, amounts and payment habits.

Figures are rough and deliberately plain; they give each vertical a recognisable shape
(forex: large round deposits in USD and crypto, KYC levels; gaming: small frequent
deposits, bonus codes; adult: subscriptions, trials and rebills, age checks; ecommerce
and services: prices, 3-D Secure on cards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from service.contract import VERTICALS


@dataclass(frozen=True, slots=True)
class Profile:
    """One vertical's shape: its share of customers, merchants, amounts and habits."""

    customer_share: float  # of the customer population
    merchants: int  # at a million rows; fewer for small logs
    country_mix: tuple[float, ...]  # over HOME_COUNTRIES: IN, BD, ID, VN, BR
    median_usd: float  # of a one-off payment or deposit
    sigma: float  # of the lognormal around it
    crypto_share: float
    card_usd_share: float  # customers whose card payments are in USD
    deposits: bool  # amounts are deposits: round figures, a first deposit
    kyc: bool  # the merchant reports KYC levels
    age_check: bool  # the merchant reports age verification
    subscription_share: float  # of merchants that sell subscriptions
    vpn_share: float  # customers who pay through a VPN (sites blocked at home, privacy)
    kyc_old: tuple[float, ...] = (0.25, 0.4, 0.25, 0.1)  # P(level 0..3), established accounts
    kyc_new: tuple[float, ...] = (0.6, 0.3, 0.1, 0.0)  # P(level 0..3), accounts opened lately


PROFILES: Final[dict[str, Profile]] = {
    "forex": Profile(
        customer_share=0.12,
        merchants=14,
        country_mix=(0.35, 0.05, 0.2, 0.2, 0.2),
        median_usd=120.0,
        sigma=1.0,
        crypto_share=0.14,
        card_usd_share=0.45,
        deposits=True,
        kyc=True,
        age_check=False,
        subscription_share=0.0,
        vpn_share=0.02,
        kyc_old=(0.04, 0.14, 0.42, 0.40),
        kyc_new=(0.35, 0.35, 0.25, 0.05),
    ),
    "gaming": Profile(
        customer_share=0.25,
        merchants=36,
        country_mix=(0.35, 0.2, 0.15, 0.1, 0.2),
        median_usd=12.0,
        sigma=1.0,
        crypto_share=0.08,
        card_usd_share=0.05,
        deposits=True,
        kyc=True,
        age_check=True,
        subscription_share=0.0,
        vpn_share=0.04,
        kyc_old=(0.15, 0.4, 0.35, 0.1),
        kyc_new=(0.55, 0.35, 0.1, 0.0),
    ),
    "adult": Profile(
        customer_share=0.16,
        merchants=20,
        country_mix=(0.3, 0.1, 0.15, 0.15, 0.3),
        median_usd=15.0,
        sigma=0.9,
        crypto_share=0.06,
        card_usd_share=0.35,
        deposits=False,
        kyc=True,
        age_check=True,
        subscription_share=1.0,
        vpn_share=0.08,
        kyc_old=(0.55, 0.35, 0.1, 0.0),
        kyc_new=(0.7, 0.25, 0.05, 0.0),
    ),
    "ecommerce": Profile(
        customer_share=0.30,
        merchants=44,
        country_mix=(0.35, 0.1, 0.2, 0.15, 0.2),
        median_usd=28.0,
        sigma=1.1,
        crypto_share=0.02,
        card_usd_share=0.05,
        deposits=False,
        kyc=False,
        age_check=False,
        subscription_share=0.0,
        vpn_share=0.01,
    ),
    "services": Profile(
        customer_share=0.17,
        merchants=26,
        country_mix=(0.3, 0.1, 0.2, 0.15, 0.25),
        median_usd=22.0,
        sigma=1.0,
        crypto_share=0.03,
        card_usd_share=0.15,
        deposits=False,
        kyc=False,
        age_check=False,
        subscription_share=0.5,
        vpn_share=0.015,
    ),
}
if tuple(PROFILES) != VERTICALS:
    raise RuntimeError("every vertical of service.contract.VERTICALS needs a profile, in order")

VERTICAL_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(VERTICALS)}
FOREX, GAMING, ADULT = VERTICAL_CODE["forex"], VERTICAL_CODE["gaming"], VERTICAL_CODE["adult"]
ECOMMERCE, SERVICES = VERTICAL_CODE["ecommerce"], VERTICAL_CODE["services"]

# Monthly plan prices and trial prices in USD that subscription merchants charge.
PLAN_PRICES_USD: Final[tuple[float, ...]] = (9.99, 14.99, 19.99, 29.99, 39.99)
TRIAL_PRICES_USD: Final[tuple[float, ...]] = (0.99, 1.0, 1.95, 2.95, 4.95)
WELCOME_CODES: Final[tuple[str, ...]] = (
    "WELCOME100",
    "FIRST200",
    "BONUS150",
    "NEWPLAYER",
    "JOIN50",
)
RELOAD_CODES: Final[tuple[str, ...]] = ("RELOAD50", "WEEKEND25", "CASHBACK10", "FREESPIN20")
FOREX_BONUS_CODES: Final[tuple[str, ...]] = ("FX30BONUS", "TRADE100", "DEPOSIT50")
