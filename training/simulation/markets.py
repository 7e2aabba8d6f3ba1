"""The markets the simulated gateway serves: countries, their clocks, money and payment habits.

Static data only. The figures are rough on purpose: they shape a plausible log (who pays
with what, from which address ranges, in which currency), not a forecast. Addresses are
drawn inside ranges that look like each country's carriers; e-mail domains are reserved
``example`` names, plus a few well-known disposable mailbox services for the fraudsters.
"""

from __future__ import annotations

from typing import Final

HOME_COUNTRIES: Final[tuple[str, ...]] = ("IN", "BD", "ID", "VN", "BR")

UTC_OFFSET_SECONDS: Final[dict[str, int]] = {
    "IN": 19_800,
    "BD": 21_600,
    "ID": 25_200,
    "VN": 25_200,
    "BR": -10_800,
}

LOCAL_CURRENCY: Final[dict[str, str]] = {
    "IN": "INR",
    "BD": "BDT",
    "ID": "IDR",
    "VN": "VND",
    "BR": "BRL",
}

# How much a customer of the country spends, relative to the vertical's USD median.
SPEND_FACTOR: Final[dict[str, float]] = {"IN": 0.8, "BD": 0.6, "ID": 0.75, "VN": 0.75, "BR": 1.2}

# Local payment habits outside crypto: (payment_method_type, provider, weight); the provider
# of a card is its network, drawn with the card.
LOCAL_METHODS: Final[dict[str, tuple[tuple[str, str, float], ...]]] = {
    "IN": (
        ("upi", "phonepe", 0.29),
        ("upi", "gpay", 0.22),
        ("upi", "paytm", 0.10),
        ("wallet", "paytm", 0.05),
        ("card", "", 0.34),
    ),
    "BD": (("wallet", "bkash", 0.54), ("wallet", "nagad", 0.21), ("card", "", 0.25)),
    "ID": (("wallet", "ovo", 0.28), ("wallet", "dana", 0.34), ("card", "", 0.38)),
    "VN": (("wallet", "momo", 0.60), ("card", "", 0.40)),
    "BR": (("bank_transfer", "pix", 0.68), ("card", "", 0.32)),
}

# (currency, provider = network, weight) of crypto payments, in every country.
CRYPTO_COINS: Final[tuple[tuple[str, str, float], ...]] = (
    ("USDT", "tron", 0.5),
    ("USDT", "ethereum", 0.2),
    ("BTC", "bitcoin", 0.2),
    ("ETH", "ethereum", 0.1),
)

# Where cards come from besides home: expatriates' cards, stolen cards, fraudsters, travel.
EXPAT_CARD_COUNTRIES: Final[tuple[str, ...]] = ("AE", "SA", "SG", "MY", "GB", "US")
STOLEN_CARD_COUNTRIES: Final[tuple[str, ...]] = ("US", "GB", "DE", "FR", "CA", "AU", "AE", "SG")
FRAUDSTER_IP_COUNTRIES: Final[tuple[str, ...]] = ("NG", "RU", "PK", "NL", "US", "RO")
TRAVEL_COUNTRIES: Final[tuple[str, ...]] = ("AE", "SG", "TH", "MY", "GB", "US", "SA")
# Where commercial VPNs exit: many unrelated customers behind a few addresses.
VPN_COUNTRIES: Final[tuple[str, ...]] = ("NL", "US", "SG", "DE", "GB")
VPN_EXITS_PER_COUNTRY: Final[int] = 30
ISSUER_COUNTRIES: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(HOME_COUNTRIES + EXPAT_CARD_COUNTRIES + STOLEN_CARD_COUNTRIES)
)

# IPv4 blocks per country as (first octet, lowest second octet, highest second octet).
IPV4_RANGES: Final[dict[str, tuple[tuple[int, int, int], ...]]] = {
    "IN": ((49, 36, 47), (106, 192, 223), (157, 32, 51), (223, 176, 191)),
    "BD": ((103, 4, 7), (27, 147, 147), (37, 111, 111), (114, 130, 130)),
    "ID": ((36, 64, 95), (114, 120, 127), (182, 0, 15), (110, 136, 139)),
    "VN": ((14, 160, 191), (113, 160, 191), (171, 224, 255), (116, 96, 111)),
    "BR": ((177, 0, 255), (179, 0, 127), (189, 0, 127), (201, 0, 95)),
    "US": ((73, 0, 255), (98, 0, 255), (24, 0, 255)),
    "GB": ((81, 96, 111), (86, 128, 191)),
    "DE": ((84, 128, 191), (91, 0, 63)),
    "FR": ((90, 0, 127), (88, 160, 191)),
    "NL": ((185, 0, 255), (45, 80, 95)),
    "CA": ((142, 112, 127), (99, 224, 255)),
    "AU": ((101, 160, 191), (49, 176, 191)),
    "AE": ((94, 200, 207), (2, 48, 51)),
    "SG": ((116, 86, 89), (118, 200, 201)),
    "TH": ((171, 96, 103), (49, 228, 231)),
    "MY": ((175, 136, 143), (60, 48, 55)),
    "SA": ((188, 48, 55), (37, 224, 231)),
    "NG": ((102, 88, 91), (105, 112, 127)),
    "RU": ((95, 24, 31), (178, 64, 71)),
    "PK": ((39, 32, 63), (111, 88, 95)),
    "RO": ((86, 120, 127), (89, 32, 47)),
}

# Mobile carriers hand out IPv6 too: the first two of the eight groups of a carrier's block.
IPV6_PREFIXES: Final[dict[str, str]] = {
    "IN": "2401:4900",
    "ID": "2001:448a",
    "VN": "2405:4802",
    "BR": "2804:14c",
}
IPV6_SHARE: Final[float] = 0.15

# fmt: off
FIRST_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "IN": ("aarav", "vivaan", "priya", "ananya", "rahul", "sneha", "arjun", "kavya", "rohan",
           "neha", "amit", "pooja", "vikram", "divya", "sanjay", "meera"),
    "BD": ("rahim", "karim", "fatema", "ayesha", "tanvir", "nusrat", "sabbir", "farhana",
           "arif", "sumaiya", "rakib", "mim"),
    "ID": ("budi", "siti", "agus", "dewi", "putri", "rizky", "andi", "wahyu", "indah", "fajar",
           "ayu", "eko"),
    "VN": ("minh", "anh", "linh", "huong", "tuan", "thao", "duc", "trang", "khoa", "ngoc",
           "hieu", "mai"),
    "BR": ("joao", "maria", "pedro", "ana", "lucas", "juliana", "gabriel", "beatriz", "rafael",
           "larissa", "mateus", "camila"),
}
# fmt: on
LAST_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "IN": ("sharma", "verma", "patel", "reddy", "iyer", "singh", "gupta", "nair", "das", "rao"),
    "BD": ("hossain", "rahman", "islam", "ahmed", "chowdhury", "akter", "uddin", "khan"),
    "ID": ("santoso", "wijaya", "saputra", "pratama", "hidayat", "lestari", "nugroho"),
    "VN": ("nguyen", "tran", "le", "pham", "hoang", "vu", "dang", "bui"),
    "BR": ("silva", "santos", "oliveira", "souza", "lima", "pereira", "costa", "ferreira"),
}

EMAIL_DOMAINS: Final[tuple[tuple[str, float], ...]] = (
    ("example.com", 0.34),
    ("example.net", 0.16),
    ("example.org", 0.08),
    ("mail.example", 0.24),
    ("inbox.example", 0.18),
)
DISPOSABLE_DOMAINS: Final[tuple[str, ...]] = (
    "mailinator.com",
    "yopmail.com",
    "guerrillamail.com",
    "10minutemail.com",
    "sharklasers.com",
    "trashmail.com",
    "temp-mail.org",
)

UPI_HANDLES: Final[dict[str, tuple[str, ...]]] = {
    "phonepe": ("ybl", "ibl", "axl"),
    "gpay": ("okhdfcbank", "okicici", "oksbi", "okaxis"),
    "paytm": ("paytm", "ptyes", "pthdfc"),
}

# National mobile numbers (wallet ids): leading digits and the count of digits after them.
# None is longer than 12 digits, so no wallet id can pass for a card number.
MOBILE_NUMBERS: Final[dict[str, tuple[tuple[str, ...], int]]] = {
    "IN": (("9", "8", "7", "6"), 9),
    "BD": (("013", "014", "015", "016", "017", "018", "019"), 8),
    "ID": (("0812", "0813", "0821", "0852", "0857", "0878"), 8),
    "VN": (("03", "05", "07", "08", "09"), 8),
    "BR": (("119", "219", "319"), 8),
}
