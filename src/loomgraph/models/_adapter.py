"""What the HTTP model adapters share: prompt-size check, SDK client per event loop, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, ClassVar, Protocol

from loomgraph.models._shape import SHAPE_ERRORS, MalformedChunk
from loomgraph.models.errors import ModelBadResponse, ModelPromptTooLarge
from loomgraph.models.retry import RetryPolicy, retrying
from loomgraph.protocols import ModelChunk, ModelRequest, Usage
from loomgraph.protocols.pricing import PriceOverride, with_cost
from loomgraph.protocols.tool_args import DEFAULT_LIMITS, ToolArgLimits, ToolArgsRejected
from loomgraph.protocols.usage import estimate_output_tokens, estimate_prompt_tokens, floor_usage

# About 4 MB of text: far above any model's context window in tokens, but it stops a runaway
# prompt (a tool that returned a whole file system) before it costs an upload and a 413.
DEFAULT_MAX_PROMPT_CHARS = 4_000_000


class ChunkReader(Protocol):
    """The state of one streamed answer, fed one chunk (SSE event) at a time."""

    usage: Usage  # what the provider reported so far

    def feed(self, item: Any) -> Iterator[ModelChunk]:
        """The chunks one streamed item produces."""
        ...


class StreamTally:
    """What one attempt has streamed: characters of text and tool-call JSON, and deltas.

    When a stream breaks before the provider's usage arrives (or a server sends none), the
    attempt is charged `floor(usage)`: at least the prompt's estimate when no prompt tokens
    were reported, and at least the output estimate of what was streamed (characters / 4,
    never below the number of deltas, never above `max_output`: the provider bills no more
    than the `max_tokens` it was sent, which is what the budget reserved).
    """

    __slots__ = ("chars", "deltas", "max_output", "prompt_tokens")

    def __init__(self, prompt_tokens: int, max_output: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_output = max_output
        self.chars = 0
        self.deltas = 0

    def add(self, piece: str | None) -> None:
        """Count one delta of text or tool-call JSON."""
        if piece:
            self.chars += len(piece)
            self.deltas += 1

    def floor(self, usage: Usage) -> Usage:
        """`usage` raised to what this attempt streamed, where the provider reported less."""
        output = estimate_output_tokens(self.chars, self.deltas)
        if self.max_output:
            output = min(output, self.max_output)
        return floor_usage(usage, prompt_tokens=self.prompt_tokens, output_tokens=output)


class HTTPModel:
    """Base of the SDK-backed adapters; subclasses build the client and run one attempt."""

    provider: ClassVar[str] = "model"

    def __init__(
        self,
        name: str,
        *,
        max_tokens: int,
        temperature: float | None,
        timeout: float,
        max_retries: int,
        max_prompt_chars: int,
        retry_base_delay: float,
        retry_max_delay: float,
        retry_policy: RetryPolicy | None,
        prices: PriceOverride | None,
        tool_arg_limits: ToolArgLimits | None = None,
    ) -> None:
        self.name = name
        self.tool_arg_limits = tool_arg_limits or DEFAULT_LIMITS
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.max_prompt_chars = max_prompt_chars
        self.prices = prices
        self.retry_policy = retry_policy or RetryPolicy(
            max_retries=max_retries, base_delay=retry_base_delay, max_delay=retry_max_delay
        )
        self._client: Any = None
        # An SDK client's connection pool belongs to the loop it was first used on; a second
        # `asyncio.run()` with the same model object needs a client of its own.
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def label(self) -> str:
        """How errors name this model."""
        return f"{self.provider} model {self.name!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream one turn, retrying failures that happen before anything was streamed."""
        size = request.prompt_chars()
        if size > self.max_prompt_chars:
            raise ModelPromptTooLarge(
                f"{self.label}: prompt of {size} characters is over max_prompt_chars="
                f"{self.max_prompt_chars}; not sent"
            )
        client = self._client_for_loop()
        params = self._params(request)
        prompt, most = estimate_prompt_tokens(size), params.get("max_tokens")
        async for chunk in retrying(
            lambda: self._attempt(client, params, StreamTally(prompt, most)),
            policy=self.retry_policy,
        ):
            yield chunk

    async def aclose(self) -> None:
        """Close the SDK client (and its connections) if one was made."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    def _client_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._make_client()
            self._client_loop = loop
        return self._client

    def _usage(self, usage: Usage) -> Usage:
        return with_cost(self.name, usage, self.prices)

    def _usage_chunk(
        self, usage: Usage, response_id: str | None, response_model: str | None
    ) -> ModelChunk:
        """The answer's `usage` chunk, priced, with the answer's id and model when named."""
        chunk = ModelChunk(type="usage", usage=self._usage(usage))
        if response_id is not None:
            chunk["response_id"] = response_id
        if response_model is not None:
            chunk["response_model"] = response_model
        return chunk

    def _read(
        self, reader: ChunkReader, item: Any, tally: StreamTally, request_id: str | None
    ) -> list[ModelChunk]:
        """The chunks one streamed item produces: the one place each adapter reads a chunk.

        A chunk of the wrong shape, or tool input that is not a JSON object within the
        limits, is `ModelBadResponse` naming what was wrong, charged what the attempt
        streamed (retried like a broken stream, see `loomgraph.models.retry`).
        """
        try:
            return list(reader.feed(item))
        except SHAPE_ERRORS as exc:
            detail = str(exc) if isinstance(exc, MalformedChunk) else f"{type(exc).__name__}: {exc}"
            raise self._bad(f"malformed stream: {detail}", reader, tally, request_id) from exc
        except ValueError as exc:  # the tool input: not JSON, not an object, over the limits
            rejected = "tool_args_rejected" if isinstance(exc, ToolArgsRejected) else None
            raise self._bad(
                f"invalid tool arguments: {exc}", reader, tally, request_id, rejected
            ) from exc

    def _bad(
        self,
        message: str,
        reader: ChunkReader,
        tally: StreamTally,
        request_id: str | None,
        error_type: str | None = None,
    ) -> ModelBadResponse:
        return ModelBadResponse(
            f"{self.label}: {message} (request id {request_id})",
            error_type=error_type,
            request_id=request_id,
            usage=self._usage(tally.floor(reader.usage)),
        )

    # ------------------------------------------------------------------ for subclasses

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _attempt(
        self, client: Any, params: dict[str, Any], tally: StreamTally
    ) -> AsyncGenerator[ModelChunk, None]:
        raise NotImplementedError
