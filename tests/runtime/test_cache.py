"""boutique.runtime.cache.RefreshingValue: what is served when, on a controlled clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from boutique.runtime import cache as cache_mod
from boutique.runtime.cache import RefreshingValue, TtlMemo
from boutique.runtime.config import ConfigError, ServiceConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A loader that returns 'v1', 'v2', ...; `gate` holds loads until set; `fail` makes them raise."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"v{self.calls}"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fresh_value_is_served_without_a_load() -> None:
    clock, src = Clock(), Source()
    value = RefreshingValue(src, ttl=30, clock=clock)
    assert await value.get() == "v1"
    clock.now += 29.9
    assert [await value.get() for _ in range(100)] == ["v1"] * 100
    assert src.calls == 1


async def test_stale_value_is_served_while_one_background_load_runs() -> None:
    clock, src = Clock(), Source()
    value = RefreshingValue(src, ttl=30, clock=clock)
    await value.get()
    clock.now += 30
    src.gate.clear()  # hold the refresh
    assert [await value.get() for _ in range(10)] == ["v1"] * 10  # nobody waits for it
    await settle()
    assert [await value.get() for _ in range(10)] == ["v1"] * 10  # still held: still the old value
    assert src.calls == 2  # one refresh, not twenty
    src.gate.set()
    await settle()
    assert await value.get() == "v2"
    assert value.age == 0


async def test_value_twice_the_ttl_old_is_never_served() -> None:
    clock, src = Clock(), Source()
    value = RefreshingValue(src, ttl=30, clock=clock)
    await value.get()
    clock.now += 60
    src.gate.clear()
    waiter = asyncio.ensure_future(value.get())
    await settle()
    assert not waiter.done()  # waits for the load instead of serving a 60 s old value
    src.gate.set()
    assert await waiter == "v2"


async def test_concurrent_first_callers_share_one_load() -> None:
    src = Source()
    src.gate.clear()
    value = RefreshingValue(src, ttl=30, clock=Clock())
    waiters = [asyncio.ensure_future(value.get()) for _ in range(20)]
    await settle()
    src.gate.set()
    assert await asyncio.gather(*waiters) == ["v1"] * 20
    assert src.calls == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    src = Source()
    src.gate.clear()
    value = RefreshingValue(src, ttl=30, clock=Clock())
    first, second = asyncio.ensure_future(value.get()), asyncio.ensure_future(value.get())
    await settle()
    first.cancel()
    src.gate.set()
    assert await second == "v1"
    assert first.cancelled()


async def test_failed_refresh_keeps_the_old_value_then_fails_like_no_cache(caplog) -> None:
    clock, src = Clock(), Source()
    value = RefreshingValue(src, ttl=30, what="the test list", clock=clock)
    await value.get()
    clock.now += 31
    src.fail = RuntimeError("catalog down")
    with caplog.at_level(logging.WARNING, logger="boutique.cache"):
        assert await value.get() == "v1"
        await settle()
    assert "background refresh of the test list failed" in caplog.text and "catalog down" in caplog.text
    calls = src.calls
    clock.now += cache_mod.RETRY_SECONDS / 2
    assert await value.get() == "v1"
    await settle()
    assert src.calls == calls  # no new attempt within RETRY_SECONDS
    clock.now += 30  # now 61.5 s old: too old to serve
    with pytest.raises(RuntimeError, match="catalog down"):
        await value.get()
    src.fail = None
    fresh = await value.get()
    assert fresh == f"v{src.calls}" and value.age == 0


async def test_first_load_failure_reaches_the_caller_and_the_next_call_retries() -> None:
    src = Source()
    src.fail = ConnectionError("refused")
    value = RefreshingValue(src, ttl=30, clock=Clock())
    with pytest.raises(ConnectionError):
        await value.get()
    src.fail = None
    assert await value.get() == "v2"


async def test_ttl_zero_loads_every_time() -> None:
    src = Source()
    value = RefreshingValue(src, ttl=0, clock=Clock())
    assert [await value.get() for _ in range(3)] == ["v1", "v2", "v3"]


async def test_close_cancels_a_load_in_flight() -> None:
    src = Source()
    src.gate.clear()
    value = RefreshingValue(src, ttl=30, clock=Clock())
    waiter = asyncio.ensure_future(value.get())
    await settle()
    await value.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter


def test_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        RefreshingValue(Source(), ttl=-1)


@pytest.mark.parametrize("raw", ["-1", "soon"])
def test_bad_cache_ttl_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="BOUTIQUE_CACHE_TTL_SECONDS"):
        ServiceConfig.from_env("currencyservice", 7000, {"BOUTIQUE_CACHE_TTL_SECONDS": raw})


def test_cache_ttl_and_access_log_defaults() -> None:
    cfg = ServiceConfig.from_env("currencyservice", 7000, {})
    assert cfg.cache_ttl == 30.0
    assert cfg.access_log == "errors"  # the per-call INFO line is opt-in: BOUTIQUE_ACCESS_LOG=all
    assert ServiceConfig.from_env("currencyservice", 7000, {"BOUTIQUE_ACCESS_LOG": "all"}).access_log == "all"


class Answers:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def __call__(self) -> int:
        self.calls += 1
        if self.fail:
            raise LookupError("no answer")
        return self.calls


async def test_memo_reuses_an_answer_until_it_is_ttl_old() -> None:
    clock, answers = Clock(), Answers()
    memo: TtlMemo[str, int] = TtlMemo(ttl=30, clock=clock)
    assert [await memo.get("k", answers) for _ in range(3)] == [1, 1, 1]
    clock.now += 29.9
    assert await memo.get("k", answers) == 1
    clock.now += 0.1
    assert await memo.get("k", answers) == 2  # 30 s old: asked again
    assert await memo.get("other", answers) == 3  # keys are separate


async def test_memo_keeps_no_errors_and_at_most_max_entries() -> None:
    answers = Answers()
    memo: TtlMemo[int, int] = TtlMemo(ttl=30, max_entries=2, clock=Clock())
    answers.fail = True
    with pytest.raises(LookupError):
        await memo.get(1, answers)
    answers.fail = False
    assert await memo.get(1, answers) == 2  # the failure was not kept
    await memo.get(2, answers)
    await memo.get(3, answers)
    assert len(memo) == 2
    assert await memo.get(1, answers) == 5  # the oldest entry went first


async def test_memo_with_ttl_zero_always_asks() -> None:
    answers = Answers()
    memo: TtlMemo[str, int] = TtlMemo(ttl=0)
    assert [await memo.get("k", answers) for _ in range(3)] == [1, 2, 3]
