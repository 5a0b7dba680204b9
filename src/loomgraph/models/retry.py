"""loomgraph's own retry loop for streamed model calls.

The SDKs' built-in retries are switched off (`max_retries=0`) because they cannot see the
stream: a call that fails after it started streaming must not be retried silently, since the
caller already holds part of the answer. This module retries a call only while nothing of it
has been handed out, and otherwise raises `ModelStreamBroken` so the agent retries the whole
step. Each failed attempt it retries is reported as an `attempt` chunk with the usage it
billed, so the agent charges and journals every attempt, each under a reservation of its
own; the final `usage` chunk (or error) is the last attempt's alone.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from loomgraph.models.errors import AdapterError, ModelStreamBroken
from loomgraph.protocols import ModelChunk

__all__ = ["RetryPolicy", "retrying"]


@dataclass(slots=True)
class RetryPolicy:
    """How often and how long to wait: exponential backoff with jitter, or `retry-after`.

    `max_retries` counts retries, so at most `max_retries + 1` attempts are made. The n-th
    retry (from 0) waits `base_delay * 2**n`, capped at `max_delay`, reduced by up to
    `jitter` (a fraction) at random so that many clients do not retry in lockstep. When the
    provider sent `retry-after`, that wait is used instead (capped at `max_retry_after`).
    `sleep` is injectable so tests can record the waits instead of sleeping.
    """

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        if retry_after is not None and math.isfinite(retry_after):  # (NaN: no instruction)
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff = min(self.base_delay * (2.0**retry), self.max_delay)
        return backoff * (1.0 - self.jitter * random.random())


async def retrying(
    attempt: Callable[[], AsyncGenerator[ModelChunk, None]],
    *,
    policy: RetryPolicy,
) -> AsyncIterator[ModelChunk]:
    """Run `attempt()` until it completes, retrying retryable errors raised before any chunk;
    one raised after a chunk is a `ModelStreamBroken` asking for the step to be retried.

    Before each retry an `attempt` chunk reports the failed attempt and what it billed, so
    the caller can charge and journal it (and check its budget) before the next one is sent.
    """
    tries = 0
    while True:
        tries += 1
        yielded = False
        failed: AdapterError | None = None
        try:
            async with aclosing(attempt()) as chunks:
                async for chunk in chunks:
                    yielded = True
                    yield chunk
            return
        except AdapterError as err:
            err.attempts = tries
            # Output streamed already: a retryable failure retries the whole step (the chunks
            # handed out cannot be taken back); one no retry would fix (a tool call cut off
            # by max_tokens, a request the provider refused) ends the call as it is.
            if yielded and err.retryable:
                broken = ModelStreamBroken(
                    f"{err.args[0]}; the stream broke after output was streamed, retry the step",
                    status=err.status,
                    request_id=err.request_id,
                    retry_step=True,
                    usage=err.usage,
                    error_type=err.error_type,
                )
                broken.attempts = tries
                raise broken from err
            if yielded or not err.retryable or tries > policy.max_retries:
                if tries > 1:
                    err.args = (f"{err.args[0]} (gave up after {tries} attempts)",)
                raise
            failed = err
        yield ModelChunk(type="attempt", attempt=tries, error=str(failed), usage=failed.usage)
        await policy.sleep(policy.delay(tries - 1, failed.retry_after))
