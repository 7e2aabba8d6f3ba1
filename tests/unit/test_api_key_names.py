"""``RISKSCORE_API_KEYS`` with display names: the grammar, its hostile inputs, its old forms.

``key=role+role(Display Name)@m1+m2``: every string either parses into entries that are
valid throughout (a key a header can carry, known roles, contract merchant ids, a name
``check_display_name`` allows, given to one key, holding no key), or is refused at start
with a ``ConfigurationError`` naming the entry's number and repeating no key.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.api.auth import key_identity
from service.console.session import ConsoleKeys
from service.errors import ConfigurationError
from service.settings import (
    ROLES,
    ApiKeyEntries,
    Settings,
    check_display_name,
    parse_api_key_entries,
    parse_api_key_names,
)

SECRET = b"test-secret-0123456789"
# keys that read as secrets: long enough that a message holding one is surely echoing it
KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=12, max_size=30)
ROLE_SETS = st.sets(st.sampled_from(sorted(ROLES)), min_size=1).map(lambda r: "+".join(sorted(r)))
# the grammar's own characters, role words and the characters that break things elsewhere
FRAGMENTS = st.sampled_from(
    [*"=+@(),: \t\x00\u200b\u202e\ud800é€", *sorted(ROLES), "key-0123456789ab", "Alice", "m1"]
)
HOSTILE_NAMES = st.text(min_size=0, max_size=80) | st.lists(FRAGMENTS, max_size=8).map("".join)
_ENTRY_NUMBER = re.compile(r"^RISKSCORE_API_KEYS: entry (\d+) ")


def assert_valid(entries: ApiKeyEntries) -> None:
    """Every parsed entry is one the service can use without an error at request time."""
    assert entries.roles, "a spec with no entry sets no keys at all"
    for key, roles in entries.roles.items():
        assert key and key == key.strip() and key.isprintable() and key.isascii()
        assert roles and roles <= ROLES
        assert key_identity(SECRET, key).startswith("key-")
    assert set(entries.merchants) <= set(entries.roles)
    for merchants in entries.merchants.values():
        assert merchants and all(1 <= len(m) <= 64 and m.isprintable() for m in merchants)
        assert not merchants & set(entries.roles)  # no key shown as a merchant id
    assert set(entries.names) <= set(entries.roles)
    folded = [name.casefold() for name in entries.names.values()]
    assert len(folded) == len(set(folded))
    for name in entries.names.values():
        assert check_display_name(name) is None
        assert not any(name == key or (len(key) >= 8 and key in name) for key in entries.roles)
    keys = ConsoleKeys(SECRET, entries.roles, entries.merchants, entries.names)
    for key, name in entries.names.items():
        fingerprint = keys.fingerprint(key)
        if fingerprint is not None:  # a console key: the session shows its name
            analyst = keys.analyst({"key": fingerprint, "at": 0}, now=1)
            assert analyst is not None and analyst.name == name


def outcome(spec: str) -> ApiKeyEntries | ConfigurationError:
    """What ``spec`` parses to, or the ``ConfigurationError`` it is refused with.

    Any other exception fails the test (raised from here).
    """
    try:
        return parse_api_key_entries(spec)
    except ConfigurationError as refused:
        return refused


def entry_count(spec: str) -> int:
    return len([s for s in spec.split(",") if s.strip()])


@given(spec=st.text(max_size=120) | st.lists(FRAGMENTS | KEYS, max_size=20).map("".join))
@example(spec="k=analyst(Al(ice)")
@example(spec="k\ud800=score")
@example(spec="k=score@m\x00")
@example(spec="k=analyst( )")
@example(spec="aaaaaaaaaaaa=score@bbbbbbbbbbbb,bbbbbbbbbbbb=score")  # shows a later key
def test_any_string_parses_into_valid_entries_or_is_refused_by_entry_number(spec: str):
    result = outcome(spec)
    if isinstance(result, ConfigurationError):
        number = _ENTRY_NUMBER.match(str(result))
        assert number, str(result)
        # the entry named is the first the parser cannot take: what comes before it parses
        named = int(number.group(1))
        entries = [e for e in spec.split(",") if e.strip()]
        assert named <= len(entries), (named, entries)
        before = outcome(",".join(entries[: named - 1]))
        assert not isinstance(before, ConfigurationError), (named, str(before))
        # and it is refused with what precedes it, unless it shows a key of a later entry
        through = outcome(",".join(entries[:named]))
        if isinstance(through, ConfigurationError):
            assert _ENTRY_NUMBER.match(str(through)).group(1) == str(named)
        else:
            assert str(result).endswith(("that is an API key", "that holds an API key"))
    elif result.roles:
        assert_valid(result)
    else:
        assert entry_count(spec) == 0  # nothing but commas and spaces: no keys


@given(
    entries=st.lists(
        st.tuples(KEYS, ROLE_SETS, HOSTILE_NAMES | st.none(), st.lists(HOSTILE_NAMES, max_size=3)),
        min_size=1,
        max_size=4,
        unique_by=lambda e: e[0],
    ),
    misplaced=st.sampled_from(["", "role", "name", "merchant", "name-of-other"]),
)
def test_a_refusal_names_the_entry_and_never_a_key(entries, misplaced):
    """Keys (and a key pasted where a role, a name or a merchant goes) are never echoed."""
    keys = [key for key, *_ in entries]
    texts = []
    for n, (key, roles, name, merchants) in enumerate(entries):
        if misplaced == "role" and n == 0:
            roles += "+" + keys[-1]
        if misplaced == "name" and n == 0:
            name = keys[0]
        if misplaced == "name-of-other" and n == 0:
            name = f"ops {keys[-1]}"
        if misplaced == "merchant" and n == 0:
            merchants = [*merchants, keys[-1]]
        text = f"{key}={roles}" + (f"({name})" if name is not None else "")
        texts.append(text + ("@" + "+".join(merchants) if merchants else ""))
    spec = ",".join(texts)
    result = outcome(spec)
    if isinstance(result, ConfigurationError):
        message = str(result)
        assert _ENTRY_NUMBER.match(message), message
        assert int(_ENTRY_NUMBER.match(message).group(1)) <= entry_count(spec)
        assert not any(key in message for key in keys), message
    else:
        assert not misplaced, "a key where a role, a name or a merchant id goes was taken"
        assert_valid(result)


@given(
    entries=st.lists(
        st.tuples(
            KEYS,
            ROLE_SETS,
            st.lists(
                st.text(min_size=1, max_size=64).filter(
                    lambda m: m.isprintable() and m == m.strip() and not {",", "+"} & set(m)
                ),
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda e: e[0],
    )
)
def test_every_entry_of_the_old_form_reads_as_it_did(entries):
    """``key=role+role@m1+m2`` with any merchant ids, ``(`` ``)`` ``@`` among them: no names."""
    spec = ", ".join(
        f"{key}={roles}" + ("@" + "+".join(merchants) if merchants else "")
        for key, roles, merchants in entries
    )
    parsed = parse_api_key_entries(spec)
    assert parsed.roles == {key: frozenset(roles.split("+")) for key, roles, _ in entries}
    assert parsed.merchants == {key: frozenset(m) for key, _, m in entries if m}
    assert parsed.names == {}


def test_a_name_sits_between_the_roles_and_the_merchants():
    spec = (
        "k-one-000000=analyst+admin(Alice Smith)@shop-1+shop(2), "
        "k-two-000000=analyst (bob@bank.example)  @m1, k-three-0000=score, "
        "k-four-00000=analyst(Ana Lúcia 🛡 <b>&amp;</b>)"
    )
    assert parse_api_key_names(spec) == {
        "k-one-000000": "Alice Smith",
        "k-two-000000": "bob@bank.example",
        "k-four-00000": "Ana Lúcia 🛡 <b>&amp;</b>",
    }
    parsed = parse_api_key_entries(spec)
    assert parsed.merchants == {
        "k-one-000000": frozenset({"shop-1", "shop(2)"}),
        "k-two-000000": frozenset({"m1"}),
    }
    assert parsed.roles["k-one-000000"] == frozenset({"analyst", "admin"})


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("k-0000000001=analyst(Al(ice))", "entry 1 is not key=role"),
        ("k-0000000001=analyst(Alice)x@m1", "entry 1 is not key=role"),
        ("k-0000000001=score, k-0000000002=analyst()", "entry 2 has a bad display name"),
        ("k-0000000001=analyst(key-0123456789AB)", "a key's identity"),
        ("k-0000000001=analyst(ops key-0123456789ab)", "a key's identity"),
        ("k-0000000001=analyst(Al\u200bice)", "printable"),
        ("k-0000000001=analyst(" + "a" * 65 + ")", "at most 64"),
        ("k-0000000001=analyst(Alice),k-0000000002=analyst(ALICE)", "entry 2 repeats the display"),
        ("k-0000000001=analyst(k-0000000002),k-0000000002=score", "entry 1 has a display name"),
        ("k-0000000001=(Alice)", "entry 1 names no role"),
        ("k-0000000001=score+k-0000000002", "entry 1 has a role other than"),
        ("k-0000000001\x07=score", "printable ASCII"),
        ("k-0000000001é=score", "printable ASCII"),
        ("k-0000000001=score@m\u202e1", "merchant id"),
        ("k-0000000001=score@k-0000000002,k-0000000002=score", "entry 1 has a merchant id"),
    ],
)
def test_bad_entries_are_refused_at_start_by_number_without_the_key(spec: str, says: str):
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"RISKSCORE_API_KEYS": spec})
    message = str(refused.value)
    assert says in message, message
    assert "k-0000000001" not in message and "k-0000000002" not in message


def test_the_names_are_hidden_from_repr_with_their_keys():
    settings = Settings.from_env(
        {"RISKSCORE_API_KEYS": "k-secret-0000001=analyst(Alice Smith),k-secret-0000002=score"}
    )
    assert settings.api_key_names == {"k-secret-0000001": "Alice Smith"}
    for shown in (repr(settings), repr(dict(settings.__rich_repr__()))):
        assert "k-secret-000000" not in shown
    assert "api_key_names=<1 keys>" in repr(settings)
    entries = parse_api_key_entries("k-secret-0000001=analyst(Alice Smith)")
    assert repr(entries) == "ApiKeyEntries(<1 keys, 1 named>)"
