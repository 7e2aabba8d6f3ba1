"""Synthetic identifiers: ids, tokens, e-mail addresses, IP addresses, payment accounts.

Nothing here can pass for a card number: every generated string breaks its digits up at
least every few characters (ids and tokens force a letter at fixed positions, phone-style
wallet ids stay at 12 digits or fewer), so no field ever holds a 13–19 digit run, Luhn-valid
or not. Each function draws whole arrays at once.
"""

from __future__ import annotations

import numpy as np

from training.simulation.markets import (
    DISPOSABLE_DOMAINS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    IPV4_RANGES,
    IPV6_PREFIXES,
    IPV6_SHARE,
    LAST_NAMES,
    MOBILE_NUMBERS,
    UPI_HANDLES,
)

LETTERS = "abcdefghijklmnopqrstuvwxyz"
ALPHANUMERIC = LETTERS + "0123456789"
HEX = "0123456789abcdef"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
DIGITS = "0123456789"


def characters(
    rng: np.random.Generator,
    n: int,
    width: int,
    alphabet: str = ALPHANUMERIC,
    *,
    letter_every: int = 4,
) -> np.ndarray:
    """Random strings of ``width`` characters from ``alphabet``.

    Every ``letter_every``-th character (the first included) is one of the alphabet's
    letters, which caps digit runs below ``letter_every``; 0 forces none.
    """
    return _byte_strings(rng, n, width, alphabet, letter_every).astype(str)


def _byte_strings(
    rng: np.random.Generator, n: int, width: int, alphabet: str, letter_every: int
) -> np.ndarray:
    table = np.frombuffer(alphabet.encode(), dtype=np.uint8)
    matrix = table[rng.integers(0, len(table), size=(n, width))]
    if letter_every:
        letters = np.frombuffer("".join(c for c in alphabet if c.isalpha()).encode(), np.uint8)
        forced = np.arange(0, width, letter_every)
        matrix[:, forced] = letters[rng.integers(0, len(letters), size=(n, forced.size))]
    return np.ascontiguousarray(matrix).view(f"S{width}").ravel()


def unique_tokens(rng: np.random.Generator, n: int, prefix: str, width: int = 12) -> np.ndarray:
    """Distinct ids such as ``cus_k3f9…``: random-looking, unique by construction, no digit runs."""
    tokens = _byte_strings(rng, n, width, ALPHANUMERIC, 4)
    while True:
        _, first = np.unique(tokens, return_index=True)
        if first.size == n:
            break
        repeated = np.ones(n, dtype=bool)
        repeated[first] = False
        tokens[repeated] = _byte_strings(rng, int(repeated.sum()), width, ALPHANUMERIC, 4)
    return np.strings.add(prefix, tokens.astype(str)).astype(object)


def digit_strings(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """``width`` random decimal digits each, leading zeros kept (card last4, phone tails)."""
    return characters(rng, n, width, DIGITS, letter_every=0)


def choose(rng: np.random.Generator, options: tuple[str, ...] | list[str], n: int, p=None):
    """``n`` draws from ``options``, with probabilities ``p`` if given."""
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=n, p=p)]


def _weights(pairs: tuple[tuple[str, float], ...]) -> tuple[list[str], np.ndarray]:
    names = [name for name, _ in pairs]
    weights = np.array([weight for _, weight in pairs])
    return names, weights / weights.sum()


def email_local_parts(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    """Name-like mailbox names (``priya.iyer4821``); a serial number keeps each one unique."""
    n = len(countries)
    first = np.empty(n, dtype=object)
    last = np.empty(n, dtype=object)
    for country, names in FIRST_NAMES.items():
        rows = np.flatnonzero(countries == country)
        first[rows] = choose(rng, names, rows.size)
        last[rows] = choose(rng, LAST_NAMES[country], rows.size)
    separator = choose(rng, (".", "_", ""), n, p=[0.5, 0.2, 0.3])
    serial = (rng.permutation(max(8 * n, 1000))[:n] + 10).astype(str)
    name = np.strings.add(
        np.strings.add(first.astype(str), separator.astype(str)), last.astype(str)
    )
    return np.strings.add(name, serial)


def emails(
    rng: np.random.Generator, local_parts: np.ndarray, disposable_share: float | np.ndarray
) -> np.ndarray:
    """Addresses on reserved ``example`` domains, or on a disposable mailbox service."""
    n = len(local_parts)
    names, weights = _weights(EMAIL_DOMAINS)
    domain = choose(rng, names, n, p=weights)
    disposable = rng.random(n) < disposable_share
    domain[disposable] = choose(rng, DISPOSABLE_DOMAINS, int(disposable.sum()))
    return np.strings.add(np.strings.add(local_parts, "@"), domain.astype(str)).astype(object)


def ip_addresses(
    rng: np.random.Generator, countries: np.ndarray, ipv6_share: float = IPV6_SHARE
) -> np.ndarray:
    """Public-looking addresses inside blocks typical of each row's country."""
    n = len(countries)
    out = np.empty(n, dtype=object)
    for country, blocks in IPV4_RANGES.items():
        rows = np.flatnonzero(countries == country)
        if rows.size == 0:
            continue
        table = np.array(blocks)
        block = table[rng.integers(0, len(table), rows.size)]
        second = rng.integers(block[:, 1], block[:, 2] + 1)
        octets = (
            block[:, 0],
            second,
            rng.integers(0, 256, rows.size),
            rng.integers(1, 255, rows.size),
        )
        text = octets[0].astype(str)
        for octet in octets[1:]:
            text = np.strings.add(np.strings.add(text, "."), octet.astype(str))
        out[rows] = text
        prefix = IPV6_PREFIXES.get(country)
        if prefix is not None:
            v6 = rows[rng.random(rows.size) < ipv6_share]
            if v6.size:
                groups = [characters(rng, v6.size, 4, HEX, letter_every=0) for _ in range(6)]
                text = np.full(v6.size, prefix)
                for group in groups:
                    text = np.strings.add(np.strings.add(text, ":"), group)
                out[v6] = text
    return out


def mobile_numbers(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    """National mobile numbers, the ids of bKash, Nagad, OVO, DANA, MoMo and Paytm wallets."""
    out = np.empty(len(countries), dtype=object)
    for country, (leads, tail) in MOBILE_NUMBERS.items():
        rows = np.flatnonzero(countries == country)
        if rows.size:
            lead = choose(rng, leads, rows.size).astype(str)
            out[rows] = np.strings.add(lead, digit_strings(rng, rows.size, tail))
    return out


def upi_ids(rng: np.random.Generator, providers: np.ndarray, local_parts: np.ndarray) -> np.ndarray:
    """UPI VPAs: a mobile number or a name at the app's bank handle (``98…@ybl``)."""
    n = len(providers)
    phone = np.strings.add(
        choose(rng, ("9", "8", "7", "6"), n).astype(str), digit_strings(rng, n, 9)
    )
    name = np.where(rng.random(n) < 0.45, phone, local_parts.astype(str))
    handle = np.empty(n, dtype=object)
    for provider, handles in UPI_HANDLES.items():
        rows = np.flatnonzero(providers == provider)
        handle[rows] = choose(rng, handles, rows.size)
    return np.strings.add(np.strings.add(name, "@"), handle.astype(str)).astype(object)


def pix_keys(rng: np.random.Generator, emails_: np.ndarray) -> np.ndarray:
    """PIX keys: random (EVP) keys, formatted CPF numbers, or the customer's e-mail."""
    n = len(emails_)
    segments = [characters(rng, n, width, HEX) for width in (8, 4, 4, 4, 12)]
    evp = segments[0]
    for segment in segments[1:]:
        evp = np.strings.add(np.strings.add(evp, "-"), segment)
    cpf = digit_strings(rng, n, 3)
    for separator, width in ((".", 3), (".", 3), ("-", 2)):
        cpf = np.strings.add(np.strings.add(cpf, separator), digit_strings(rng, n, width))
    kind = rng.random(n)
    return np.where(kind < 0.5, evp, np.where(kind < 0.8, cpf, emails_.astype(str))).astype(object)


def crypto_addresses(rng: np.random.Generator, providers: np.ndarray) -> np.ndarray:
    """Wallet addresses in each network's shape (``T…`` on Tron, ``0x…``, ``bc1q…``)."""
    n = len(providers)
    tron = np.strings.add("T", characters(rng, n, 33, BASE58, letter_every=5))
    ether = np.strings.add("0x", characters(rng, n, 40, HEX, letter_every=5))
    bitcoin = np.strings.add("bc1q", characters(rng, n, 38, BECH32, letter_every=5))
    return np.where(
        providers == "tron", tron, np.where(providers == "bitcoin", bitcoin, ether)
    ).astype(object)
