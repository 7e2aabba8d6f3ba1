"""Settings: every field documented, secrets never in a repr, domain defaults complete."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.contract import VERTICALS
from service.errors import ConfigurationError
from service.settings import Settings, parse_api_key_merchants, parse_api_keys
from service.verticals import DEFAULT_DEGRADED, DEFAULT_THRESHOLDS

TOKENS = st.text(alphabet=string.ascii_letters + string.digits, min_size=16, max_size=40)


def test_every_field_is_documented_with_its_variable():
    doc = Settings.__doc__ or ""
    for name in Settings.__struct_fields__:
        assert f"``{name}``" in doc, name
    for variable in ("RISKSCORE_SECRET", "RISKSCORE_API_KEYS", "RISKSCORE_REDIS_URL"):
        assert variable in doc


@given(secret=TOKENS, keys=st.lists(TOKENS, min_size=1, max_size=4, unique=True))
def test_repr_shows_neither_the_secret_nor_the_api_keys(secret: str, keys: list[str]):
    settings = Settings.from_env(
        {
            "RISKSCORE_SECRET": secret,
            "RISKSCORE_API_KEYS": ",".join(
                f"{k}=score+admin" + ("@m1+m2" if n == 0 else "") for n, k in enumerate(keys)
            ),
        }
    )
    assert settings.secret == secret.encode() and set(settings.api_keys) == set(keys)
    assert settings.api_key_merchants == {keys[0]: frozenset({"m1", "m2"})}
    rich_fields = dict(settings.__rich_repr__())
    for shown in (repr(settings), str(settings), f"{settings!r}", repr(rich_fields)):
        assert secret not in shown
        assert not any(key in shown for key in keys)
    assert "secret=<hidden>" in repr(settings)
    assert f"api_keys=<{len(keys)} keys>" in repr(settings)
    assert "redis_url='redis://127.0.0.1:6379/0'" in repr(settings)  # the rest is shown
    assert set(rich_fields) == set(Settings.__struct_fields__)


def test_parse_api_keys_errors_never_name_a_key():
    key = "k-very-secret-0123456789"
    try:
        parse_api_keys(f"{key}=score+nope")
    except Exception as exc:
        assert key not in str(exc)
    else:
        raise AssertionError("an unknown role was accepted")


def test_the_domain_defaults_cover_every_vertical_once():
    assert tuple(DEFAULT_THRESHOLDS) == VERTICALS
    assert tuple(DEFAULT_DEGRADED) == VERTICALS
    for cuts in DEFAULT_THRESHOLDS.values():
        assert 0 <= cuts.challenge <= cuts.review <= cuts.decline <= 100
    assert Settings().thresholds == DEFAULT_THRESHOLDS
    assert Settings().degraded_action == DEFAULT_DEGRADED


def test_api_keys_may_be_limited_to_merchants():
    spec = "k-one=score+feedback@shop-a+shop-b, k-two=admin"
    assert parse_api_keys(spec) == {
        "k-one": frozenset({"score", "feedback"}),
        "k-two": frozenset({"admin"}),
    }
    assert parse_api_key_merchants(spec) == {"k-one": frozenset({"shop-a", "shop-b"})}
    key = "secret-key-5c1e"
    for bad in ("{k}=score@", "{k}=score@ + ", "{k}=score,{k}=admin", "{k}=@shop-a"):
        with pytest.raises(ConfigurationError) as refused:
            parse_api_keys(bad.format(k=key))
        assert "RISKSCORE_API_KEYS" in str(refused.value) and key not in str(refused.value)


def test_the_webhook_needs_a_secret_and_hides_it_and_the_database_password():
    with pytest.raises(ConfigurationError, match="RISKSCORE_WEBHOOK_SECRET"):
        Settings.from_env({"RISKSCORE_WEBHOOK_URL": "https://example.com/hook"})
    with pytest.raises(ConfigurationError, match="RISKSCORE_WEBHOOK_URL"):
        Settings.from_env(
            {"RISKSCORE_WEBHOOK_URL": "ftp://x", "RISKSCORE_WEBHOOK_SECRET": "s" * 16}
        )
    with pytest.raises(ConfigurationError, match="RISKSCORE_REVIEW_CLAIM_SECONDS"):
        Settings.from_env({"RISKSCORE_REVIEW_CLAIM_SECONDS": "0"})
    settings = Settings.from_env(
        {
            "RISKSCORE_WEBHOOK_URL": "https://example.com/hook",
            "RISKSCORE_WEBHOOK_SECRET": "whsec-very-secret-value",
            "RISKSCORE_DATABASE_URL": "postgresql://rs:pa55word@db:5432/riskscore",
            "RISKSCORE_REVIEW_CLAIM_SECONDS": "120",
        }
    )
    assert settings.webhook_secret == b"whsec-very-secret-value"
    assert settings.review_claim_seconds == 120
    for shown in (repr(settings), repr(dict(settings.__rich_repr__()))):
        assert "whsec-very-secret-value" not in shown and "pa55word" not in shown
    assert "webhook_url='https://example.com/hook'" in repr(settings)
    assert "database_url=postgresql://rs:***@db:5432/riskscore" in repr(settings)
