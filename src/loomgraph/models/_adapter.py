"""What the HTTP model adapters share: prompt-size check, SDK client per event loop, retries,
one attempt's request and stream, and how its failures are typed."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Callable, Iterator
from functools import partial
from typing import Any, ClassVar, Protocol

from loomgraph.models._http import Deadline, not_an_event_stream, refused_locally, unsendable
from loomgraph.models._shape import SHAPE_ERRORS, CallCutOff, MalformedChunk
from loomgraph.models.errors import (
    AdapterError,
    ModelBadResponse,
    ModelConfigError,
    ModelConnectionError,
    ModelPromptTooLarge,
    ModelToolCallTruncated,
)
from loomgraph.models.retry import RetryPolicy, retrying
from loomgraph.protocols import ModelChunk, ModelRequest, Usage
from loomgraph.protocols.pricing import PriceOverride, with_cost
from loomgraph.protocols.tool_args import DEFAULT_LIMITS, ToolArgLimits, ToolArgsRejected
from loomgraph.protocols.usage import estimate_output_tokens, estimate_prompt_tokens, floor_usage

NO_USAGE = Usage()

# About 4 MB of text: far above any model's context window in tokens, but it stops a runaway
# prompt (a tool that returned a whole file system) before it costs an upload and a 413.
DEFAULT_MAX_PROMPT_CHARS = 4_000_000


class ChunkReader(Protocol):
    """The state of one streamed answer, fed one chunk (SSE event) at a time."""

    usage: Usage  # what the provider reported so far (replaced, never changed in place)
    end_marker: str  # what a complete stream ends with, for the error when it never came
    response_id: str | None
    response_model: str | None

    def feed(self, item: Any) -> Iterator[ModelChunk]:
        """The chunks one streamed item produces (text and tool calls)."""
        ...

    def reported(self) -> Usage:
        """The answer's usage as reported so far (a count not reported yet is 0)."""
        ...

    def ended(self) -> bool:
        """Whether the stream said the answer is complete."""
        ...

    def finish_reason(self) -> str:
        """loomgraph's finish reason for the complete answer."""
        ...


class StreamTally:
    """What one attempt has streamed: characters of text and tool-call JSON, and deltas.

    When a stream breaks before the provider's usage arrives (or a server sends none), the
    attempt is charged `floor(usage)`: at least the prompt's estimate when no prompt tokens
    were reported, and at least the output estimate of what was streamed (characters / 4,
    never below the number of deltas, never above `max_output`: the provider bills no more
    than the `max_tokens` it was sent, which is what the budget reserved).
    """

    __slots__ = ("chars", "deltas", "max_output", "prompt_tokens", "unshown")

    def __init__(self, prompt_tokens: int, max_output: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_output = max_output
        self.chars = 0
        self.deltas = 0
        # Deltas billed as output but not handed out (reasoning): the engine, which
        # estimates an answer's unreported output from what it was handed, cannot see them.
        self.unshown = 0

    def add(self, piece: str | None, *, shown: bool = True) -> None:
        """Count one delta of text or tool-call JSON (`shown`), or of output the model
        generated but the adapter does not hand out (reasoning)."""
        if piece:
            self.chars += len(piece)
            self.deltas += 1
            self.unshown += not shown

    def floor(self, usage: Usage) -> Usage:
        """`usage` raised to what this attempt streamed, where the provider reported less."""
        output = estimate_output_tokens(self.chars, self.deltas)
        if self.max_output:
            output = min(output, self.max_output)
        return floor_usage(usage, prompt_tokens=self.prompt_tokens, output_tokens=output)


class TurnStream:
    """The chunks of one turn (an async iterator, closed with `aclose`), and what the provider
    has reported so far of the attempt in progress (`reported`, priced; empty before it said
    anything, and again once an attempt failed: its error carries its account).

    A caller that cuts the turn off, cancelling it mid-stream, charges at least `reported`:
    the prompt Claude's `message_start` reported is billed whether or not the answer ends.
    """

    __slots__ = ("_chunks", "reported")

    def __init__(self, chunks_of: Callable[[TurnStream], AsyncGenerator[ModelChunk, None]]) -> None:
        self.reported = Usage()
        self._chunks = chunks_of(self)

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> ModelChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Close the turn (its request's stream too, when one is open)."""
        await self._chunks.aclose()


class HTTPModel:
    """Base of the SDK-backed adapters: one attempt is the request, its stream read event by
    event (`_read`), then its usage and finish; subclasses make the client and the request,
    read the events (`_reader`) and translate the SDK's errors (`_translate`)."""

    provider: ClassVar[str] = "model"
    request_id_header: ClassVar[str] = "request-id"

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
        total_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.tool_arg_limits = tool_arg_limits or DEFAULT_LIMITS
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        if total_timeout is not None and not (0 < total_timeout < math.inf):
            raise ModelConfigError(
                f"{self.label}: total_timeout={total_timeout!r} is not a positive number of "
                "seconds (or None, for no bound)"
            )
        self.total_timeout = total_timeout
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

    def stream(self, request: ModelRequest) -> TurnStream:
        """Stream one turn, retrying failures that happen before anything was streamed."""
        return TurnStream(partial(self._turn, request))

    async def _turn(
        self, request: ModelRequest, turn: TurnStream
    ) -> AsyncGenerator[ModelChunk, None]:
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
            lambda: self._attempt(client, params, StreamTally(prompt, most), turn),
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

    async def _attempt(
        self, client: Any, params: dict[str, Any], tally: StreamTally, turn: TurnStream
    ) -> AsyncGenerator[ModelChunk, None]:
        """One attempt: the request, its events read one by one, then its usage and finish;
        `turn.reported` follows what the provider reports of it."""
        turn.reported = NO_USAGE
        deadline = Deadline(self.total_timeout, self.label)
        try:
            stream = await deadline.bound(partial(self._create, client, params))
        except Exception as exc:
            failed = self._failed(exc)
            raise failed from (None if failed is exc else exc)
        request_id: str | None = stream.response.headers.get(self.request_id_header)
        reader = self._reader(tally)
        told = reader.usage  # the account last put in `turn.reported`
        try:
            wrong = await not_an_event_stream(stream.response, deadline)
            if wrong:  # (a web page, a JSON answer): the same comes back when asked again
                raise ModelBadResponse(
                    f"{self.label}: {wrong} (request id {request_id})",
                    retryable=False,
                    error_type="not_an_event_stream",
                    request_id=request_id,
                    usage=self._usage(tally.floor(reader.usage)),
                )
            while True:
                try:
                    item = await deadline.bound(stream.__anext__, request_id)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    err = self._failed(exc, request_id=request_id, streaming=True)
                    err.usage = self._usage(tally.floor(reader.usage))
                    raise err from (None if err is exc else exc)  # (never its own cause)
                chunks = self._read(reader, item, tally, request_id)
                if reader.usage is not told:  # (before the chunks: a caller may cut them off)
                    told = reader.usage
                    turn.reported = self._usage(reader.reported())
                for chunk in chunks:
                    yield chunk
        except Exception:
            turn.reported = NO_USAGE  # the error carries the attempt's whole account
            raise
        finally:
            await stream.close()
        if not reader.ended():
            turn.reported = NO_USAGE
            raise ModelConnectionError(
                f"{self.label}: the stream ended before {reader.end_marker} "
                f"(request id {request_id})",
                request_id=request_id,
                usage=self._usage(tally.floor(reader.usage)),
            )
        # As reported; a count the provider left out is the engine's to estimate, for every
        # model alike (engine.model_answers.unreported_usage), but for output it never saw.
        usage = reader.reported()
        if tally.unshown and not usage.output_tokens:
            usage = tally.floor(usage)
        yield self._usage_chunk(usage, reader.response_id, reader.response_model)
        yield ModelChunk(type="finish", finish_reason=reader.finish_reason())

    def _failed(
        self, exc: Exception, *, request_id: str | None = None, streaming: bool = False
    ) -> AdapterError:
        """The typed error for an exception of the SDK (or under it) making or reading a call."""
        if isinstance(exc, AdapterError):
            return exc
        if streaming and isinstance(exc, ValueError):
            # The SDK decoding an event (its JSON, its UTF-8): the server's output is at fault,
            # not the connection.
            return ModelBadResponse(
                f"{self.label}: malformed stream: an event is not valid JSON "
                f"({type(exc).__name__}: {exc}) (request id {request_id})",
                request_id=request_id,
            )
        translated = self._translate(exc, request_id=request_id, streaming=streaming)
        if translated is not None:
            return translated
        if streaming:
            # Mid-stream, the SDKs let transport errors through unwrapped; any other failure
            # to read the next event is a broken connection as far as retrying goes.
            return self._connection_failed(exc, request_id)
        return unsendable(self.label, exc)

    def _connection_failed(self, exc: BaseException, request_id: str | None) -> AdapterError:
        """A connection that failed or dropped (retried), or a request the HTTP library would
        not send as configured (a `ModelConfigError`, not retried)."""
        cause = exc.__cause__ or exc
        if refused_locally(cause):
            return unsendable(self.label, cause)
        return ModelConnectionError(
            f"{self.label}: connection failed: {type(cause).__name__}: {cause} "
            f"(request id {request_id})",
            request_id=request_id,
        )

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
        streamed (retried like a broken stream, see `loomgraph.models.retry`). Tool input
        cut off by max_tokens is `ModelToolCallTruncated`, not retried.
        """
        try:
            return list(reader.feed(item))
        except SHAPE_ERRORS as exc:
            detail = str(exc) if isinstance(exc, MalformedChunk) else f"{type(exc).__name__}: {exc}"
            raise self._bad(f"malformed stream: {detail}", reader, tally, request_id) from exc
        except CallCutOff as exc:
            limit = f"max_tokens={tally.max_output}" if tally.max_output else "max_tokens"
            raise ModelToolCallTruncated(
                f"{self.label}: the answer reached {limit} inside tool call {exc.tool!r}, so "
                "its arguments are cut off; raise max_tokens (the model's or the request's) "
                f"or ask for a smaller call (request id {request_id})",
                error_type="max_tokens",
                request_id=request_id,
                usage=self._usage(tally.floor(reader.usage)),
            ) from exc
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

    async def _create(self, client: Any, params: dict[str, Any]) -> Any:
        """Send the request; the SDK's stream of events."""
        raise NotImplementedError

    def _reader(self, tally: StreamTally) -> ChunkReader:
        raise NotImplementedError

    def _translate(
        self, exc: Exception, *, request_id: str | None, streaming: bool
    ) -> AdapterError | None:
        """The typed error for an exception of the SDK's own; None for any other."""
        raise NotImplementedError
