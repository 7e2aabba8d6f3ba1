"""The console's sign-in throttle on a real Redis: per address, per key prefix, the window."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from service.console.throttle import SignInThrottle


def throttle(client, prefix: str, **limits) -> SignInThrottle:
    return SignInThrottle(client, prefix, b"k" * 32, **limits)


async def test_failures_from_one_address_stop_it_and_no_other(redis_client, redis_prefix):
    limiter = throttle(redis_client, redis_prefix, per_address=3, per_key_prefix=100)
    for n in range(3):
        assert await limiter.wait("10.0.0.1", f"key-{n}-aaaa") == 0
        await limiter.failed("10.0.0.1", f"key-{n}-aaaa")
    assert 0 < await limiter.wait("10.0.0.1", "another-key") <= 900
    assert await limiter.wait("10.0.0.2", "another-key") == 0


async def test_guessing_the_rest_of_a_key_from_many_addresses_is_stopped(
    redis_client, redis_prefix
):
    limiter = throttle(redis_client, redis_prefix, per_address=100, per_key_prefix=4)
    seen = "dev-analyst-Zq3x"  # a key's first 16 characters, seen over a shoulder
    for n in range(4):
        await limiter.failed(f"10.0.1.{n}", f"{seen}{n:020d}")
    assert await limiter.wait("10.9.9.9", f"{seen}{9:020d}") > 0
    # another analyst's key of the same scheme is not locked out, nor a short key's address
    assert await limiter.wait("10.9.9.9", f"dev-analyst-Ab12{9:020d}") == 0
    for n in range(10):
        await limiter.failed("10.0.2.1", f"{seen}{n}")  # too short to count for its prefix
    assert await limiter.wait("10.0.2.2", f"{seen}{1:020d}") > 0  # (the 4 above)
    assert await limiter.wait("10.0.2.2", f"{seen}1") == 0


async def test_the_window_ends(redis_client, redis_prefix):
    limiter = throttle(redis_client, redis_prefix, per_address=1, window=1)
    await limiter.failed("10.0.0.3", "x")
    await limiter.failed("10.0.0.3", "x")  # a later failure does not extend the window
    assert await limiter.wait("10.0.0.3", "x") == 1
    await asyncio.sleep(1.1)
    assert await limiter.wait("10.0.0.3", "x") == 0


async def test_redis_out_of_reach_lets_sign_in_through():
    class Down:
        def pipeline(self, **_):
            raise RedisConnectionError("down")

    limiter = throttle(Down(), "p")
    assert await limiter.wait("10.0.0.4", "x") == 0
    await limiter.failed("10.0.0.4", "x")  # not counted, not raised
