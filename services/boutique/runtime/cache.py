"""A value fetched from another service, kept in memory and refreshed in the background.

    products = RefreshingValue(load_products, ttl=30.0)      # load: an async function
    ids = await products.get()

How old a served value can be, with `ttl` T (BOUTIQUE_CACHE_TTL_SECONDS, default 30 s):
  * younger than T: served from memory, no call;
  * between T and 2T old: still served, and ONE background task loads a fresh value for the
    callers after it (stale-while-revalidate: nobody waits for the refresh);
  * 2T old or more, or nothing loaded yet: the caller waits for a load; concurrent callers share
    that one load.
So under steady traffic a value is at most about T old (plus one load's time), and never 2T or
older. A background refresh that fails keeps the old value (and is retried at most once a
second) until it is 2T old; after that callers get the load's error, exactly as without a cache.
T = 0 turns the cache off: every get() loads.

TtlMemo is the per-key variant for answers that are pure functions of their request (a
currency conversion): an answer is reused while younger than T, then asked for again; at most
`max_entries` are kept (the oldest go first), and errors are never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
DEFAULT_TTL = 30.0
RETRY_SECONDS = 1.0  # a failed background refresh is not retried sooner than this


class RefreshingValue(Generic[T]):
    def __init__(self, load: Callable[[], Awaitable[T]], ttl: float = DEFAULT_TTL, *, what: str = "value",
                 log: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must not be negative, got {ttl}")
        self._load = load
        self.ttl = ttl
        self.max_age = 2 * ttl
        self.what = what
        self._log = log or logging.getLogger("boutique.cache")
        self._clock = clock
        self._value: T | None = None
        self._loaded_at = 0.0
        self._has_value = False
        self._task: asyncio.Task[T] | None = None  # the load in flight, shared by every waiter
        self._no_refresh_before = 0.0
        self.loads = 0  # loads started (tests and debugging)

    @property
    def age(self) -> float | None:
        """Seconds since the held value was loaded; None when nothing is held."""
        return self._clock() - self._loaded_at if self._has_value else None

    async def get(self) -> T:
        if self.ttl == 0:
            return await self._load()
        now = self._clock()
        if self._has_value:
            age = now - self._loaded_at
            if age < self.ttl:
                return self._value  # type: ignore[return-value]
            if age < self.max_age:
                if self._task is None and now >= self._no_refresh_before:
                    self._start_load(background=True)
                return self._value  # type: ignore[return-value]
        task = self._task or self._start_load(background=False)
        return await asyncio.shield(task)  # a waiter that is cancelled does not cancel the shared load

    def _start_load(self, background: bool) -> asyncio.Task[T]:
        self.loads += 1
        task = self._task = asyncio.ensure_future(self._run_load(background))
        task.add_done_callback(_retrieve)  # a failed background refresh nobody awaited is not an error
        return task

    async def _run_load(self, background: bool) -> T:
        try:
            value = await self._load()
        except Exception as exc:
            self._no_refresh_before = self._clock() + RETRY_SECONDS
            if background:
                self._log.warning("background refresh of %s failed, keeping the one loaded %.1f s ago: %s",
                                  self.what, self.age or 0.0, _describe(exc))
            raise
        finally:
            self._task = None
        self._value, self._loaded_at, self._has_value = value, self._clock(), True
        return value

    async def close(self) -> None:
        """Cancel a load in flight (at shutdown)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class TtlMemo(Generic[K, T]):
    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError(f"ttl must not be negative and max_entries at least 1, got {ttl}, {max_entries}")
        self.ttl, self.max_entries, self._clock = ttl, max_entries, clock
        self._entries: OrderedDict[K, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K, load: Callable[[], Awaitable[T]]) -> T:
        """The kept answer for `key` if younger than ttl, else `await load()` (kept if it succeeds)."""
        if self.ttl == 0:
            return await load()
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        value = await load()
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):  # a grpc.aio.AioRpcError
        return f"{code().name}: {details()}"
    return f"{type(exc).__name__}: {exc}"
