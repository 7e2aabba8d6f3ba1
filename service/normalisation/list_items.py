r"""What an analyst's list item becomes before it is stored or compared.

Items of personal data (email, account, single IP addresses) are stored as the same
pseudonyms the scoring path computes, so a match needs no clear value; they are made
canonical first by the same functions (``service.normalisation.pseudonymise``), so
every spelling of one email or address is one item. A single IPv6 address is its ``ip``
entity, its /64.
A customer item is ``merchant_id:customer_id`` (a ``:`` or ``\`` in the merchant id
escaped with ``\``: ``normalisation.payment.merchant_scoped``'s form) or a customer id
alone, for every merchant (a ``:`` in it escaped likewise). An IP range (a CIDR shorter
than a single address) is kept in the clear: it names a network, not a
person, and is matched in memory.
"""

from __future__ import annotations

import ipaddress
import re

from service.errors import FieldProblem, InvalidRequest
from service.normalisation.payment import merchant_scoped, split_scoped
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import is_country

ENTITIES = ("card", "bin", "email", "ip", "device", "customer", "account", "country")
LIST_NAMES = tuple(f"{kind}_{entity}" for kind in ("block", "allow") for entity in ENTITIES)
_BIN = re.compile(r"^[0-9]{6,8}$")


class ListItems:
    """List items once normalised: exact items, and IP ranges kept apart."""

    def __init__(self, exact: list[str], ranges: list[str]) -> None:
        self.exact = exact
        self.ranges = ranges


def check_name(name: str) -> str:
    """``name`` if it names a list, else ``InvalidRequest`` listing the names."""
    if name not in LIST_NAMES:
        raise InvalidRequest(
            [FieldProblem("name", f"unknown list; one of {', '.join(LIST_NAMES)}")]
        )
    return name


def normalise_items(name: str, items: list[str], pseudonymiser: Pseudonymiser) -> ListItems:
    """Pseudonymise or canonicalise items; every bad item is named by its index."""
    entity = check_name(name).partition("_")[2]
    exact: list[str] = []
    ranges: list[str] = []
    problems: list[FieldProblem] = []
    for i, raw in enumerate(items):
        item = raw.strip()
        where = f"items[{i}]"
        if not item:
            problems.append(FieldProblem(where, "empty item"))
        elif entity == "email":
            if "@" not in item:
                problems.append(FieldProblem(where, "not an email address"))
            else:
                exact.append(pseudonymiser.email(item))
        elif entity == "account":
            exact.append(pseudonymiser.account(item))
        elif entity == "ip":
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                problems.append(FieldProblem(where, "not an IP address or CIDR range"))
                continue
            if network.prefixlen == network.max_prefixlen:
                exact.append(pseudonymiser.ip(str(network.network_address)))
            else:
                ranges.append(str(network))
        elif entity == "bin":
            if not _BIN.match(item):
                problems.append(FieldProblem(where, "a BIN is 6 to 8 digits"))
            else:
                exact.append(item)
        elif entity == "customer":
            pair = split_scoped(item)
            if pair is None:  # a customer id at every merchant, its escapes read
                alone = split_scoped(item + ":")
                exact.append(merchant_scoped("", alone[0] if alone else item))
            elif not pair[0] or not pair[1]:
                problems.append(
                    FieldProblem(where, "merchant_id:customer_id, or a customer id alone")
                )
            else:
                exact.append(merchant_scoped(*pair))
        elif entity == "country":
            if not is_country(item.upper()):
                problems.append(FieldProblem(where, "not an ISO 3166-1 alpha-2 country code"))
            else:
                exact.append(item.upper())
        else:
            exact.append(item)
    if problems:
        raise InvalidRequest(problems)
    return ListItems(exact, ranges)
