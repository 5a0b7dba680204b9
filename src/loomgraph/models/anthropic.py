"""Claude through the official `anthropic` SDK: streaming, tool use, retries, usage and cost.

The SDK is imported inside methods only, so importing loomgraph does not pay for it. The
SDK's own retries are off; `loomgraph.models.retry` retries instead, because only it knows
whether part of the answer was already streamed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from loomgraph.models import _shape as shape
from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, HTTPModel, StreamTally
from loomgraph.models._shape import MalformedChunk
from loomgraph.models.anthropic_request import (
    anthropic_messages,
    anthropic_system,
    anthropic_tools,
)
from loomgraph.models.errors import (
    AdapterError,
    ModelConnectionError,
    ModelMissingKey,
    ModelTimeout,
    body_error,
    error_for_status,
    parse_retry_after,
    quota_exhausted,
)
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import (
    ModelChunk,
    ModelRequest,
    Sampling,
    ToolCall,
    Usage,
)
from loomgraph.protocols.pricing import PriceOverride
from loomgraph.protocols.tool_args import ToolArgLimits, check_tool_args, parse_tool_args

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "AnthropicModel",
    "anthropic_messages",
    "anthropic_system",
    "anthropic_tools",
]

ENV_API_KEY = "ANTHROPIC_API_KEY"
ENV_BASE_URL = "ANTHROPIC_BASE_URL"

# Anthropic's stop reasons are loomgraph's finish reasons; the context-window one is a
# max-tokens stop as far as the agent is concerned. Unknown reasons pass through unchanged.
_FINISH_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}


class _Turn:
    """The state of one streamed message: open tool blocks, usage so far, stop reason."""

    def __init__(self, tally: StreamTally, limits: ToolArgLimits) -> None:
        self.tally = tally
        self.limits = limits
        self.tool_blocks: dict[int, dict[str, Any]] = {}
        self.other_blocks: set[int] = set()  # open blocks of other types (text, thinking...)
        self.usage = Usage()
        self.output_reported = False  # message_delta carried the output count
        self.stop_reason: str | None = None
        self.stopped = False
        # The message's id and the model that wrote it (for telemetry), from message_start.
        self.response_id: str | None = None
        self.response_model: str | None = None

    def feed(self, event: Any) -> Iterator[ModelChunk]:
        """The chunks one raw stream event produces. An event of the wrong shape raises
        MalformedChunk (or the TypeError/AttributeError reading it does); tool input that is
        not a JSON object within the limits raises ValueError (see `HTTPModel._read`)."""
        kind = shape.get(event, "type")
        if kind == "message_start":
            message = shape.obj(shape.get(event, "message"), "message_start.message")
            self.response_id = shape.label(shape.get(message, "id"))
            self.response_model = shape.label(shape.get(message, "model"))
            usage = shape.get(message, "usage")
            if usage is not None:
                self._take_usage(usage, "message_start.message.usage")
        elif kind == "content_block_start":
            at = shape.index(shape.get(event, "index"), "content_block_start.index")
            block = shape.obj(
                shape.get(event, "content_block"), "content_block_start.content_block"
            )
            block_type = shape.get(block, "type")
            if block_type == "tool_use":
                self._open_tool(at, block)
            else:
                self.other_blocks.add(at)
            if block_type == "text":
                piece = shape.text(shape.get(block, "text"), f"text block {at}'s text")
                if piece:
                    self.tally.add(piece)
                    yield ModelChunk(type="text", text=piece)
        elif kind == "content_block_delta":
            at = shape.index(shape.get(event, "index"), "content_block_delta.index")
            delta = shape.obj(shape.get(event, "delta"), "content_block_delta.delta")
            delta_type = shape.get(delta, "type")
            if delta_type == "text_delta":
                if at not in self.other_blocks:
                    # Text for no open block (never started, already stopped, or a tool's
                    # input): the answer's blocks are not what the stream says they are.
                    what = "a tool_use block" if at in self.tool_blocks else "not an open block"
                    raise MalformedChunk(f"text_delta for block {at}, which is {what}")
                piece = shape.text(shape.get(delta, "text"), "text_delta.text")
                if piece:
                    self.tally.add(piece)
                    yield ModelChunk(type="text", text=piece)
            elif delta_type == "input_json_delta":
                piece = shape.text(
                    shape.get(delta, "partial_json"), "input_json_delta.partial_json"
                )
                tool = self.tool_blocks.get(at)
                if tool is not None:
                    self.tally.add(piece)
                    tool["parts"].append(piece)
                elif at not in self.other_blocks:  # (a server tool's input is not ours to run)
                    raise MalformedChunk(
                        f"input_json_delta for block {at}, which is not an open tool_use block"
                    )
        elif kind == "content_block_stop":
            # Only now is the tool call complete; a partial block is never handed out.
            at = shape.index(shape.get(event, "index"), "content_block_stop.index")
            self.other_blocks.discard(at)
            tool = self.tool_blocks.pop(at, None)
            if tool is not None:
                yield ModelChunk(type="tool_call", call=_tool_call(tool, self.limits))
        elif kind == "message_delta":
            delta = shape.obj(shape.get(event, "delta"), "message_delta.delta")
            reason = shape.text(shape.get(delta, "stop_reason"), "message_delta.stop_reason")
            self.stop_reason = reason or self.stop_reason
            usage = shape.get(event, "usage")
            if usage is not None:
                self._take_usage(usage, "message_delta.usage")
                self.output_reported |= shape.get(usage, "output_tokens") is not None
        elif kind == "message_stop":
            if self.tool_blocks:
                # The model sent a tool call and never finished it: not an answer to act on,
                # and not one to drop either (the run would look complete without the call).
                blocks = ", ".join(map(str, sorted(self.tool_blocks)))
                raise MalformedChunk(
                    f"tool_use block {blocks} was never closed (no content_block_stop "
                    "before message_stop)"
                )
            self.stopped = True

    def reported(self) -> Usage:
        """The message's usage as reported. message_start's output count is its first token
        only; when no message_delta carried the final count, the output is unreported (0)
        and the engine charges its estimate of what was streamed (see docs/models.md)."""
        return self.usage if self.output_reported else replace(self.usage, output_tokens=0)

    def _open_tool(self, at: int, block: Any) -> None:
        if at in self.tool_blocks or at in self.other_blocks:
            raise MalformedChunk(f"content_block_start for block {at}, which is already open")
        call_id = shape.text(shape.get(block, "id"), f"tool_use block {at}'s id")
        name = shape.text(shape.get(block, "name"), f"tool_use block {at}'s name")
        if not call_id or not name:
            raise MalformedChunk(f"tool_use block {at} has no {'id' if not call_id else 'name'}")
        initial = shape.get(block, "input")
        if initial is not None and not isinstance(initial, dict):
            raise MalformedChunk(f"tool_use block {at}'s input is not an object")
        self.tool_blocks[at] = {"id": call_id, "name": name, "parts": [], "initial": initial or {}}

    def _take_usage(self, usage: Any, where: str) -> None:
        # message_delta counts are cumulative, so a later value replaces an earlier one. A
        # report with an impossible count is used not at all (each count read first).
        shape.obj(usage, where)
        counts = {
            ours: shape.count(shape.get(usage, theirs), f"{where}.{theirs}")
            for ours, theirs in (
                ("input_tokens", "input_tokens"),
                ("output_tokens", "output_tokens"),
                ("cache_write_tokens", "cache_creation_input_tokens"),
                ("cache_read_tokens", "cache_read_input_tokens"),
            )
        }
        reported = {ours: value for ours, value in counts.items() if value is not None}
        if reported:
            self.usage = replace(self.usage, **reported)


def _tool_call(block: dict[str, Any], limits: ToolArgLimits) -> ToolCall:
    raw = "".join(block["parts"]).strip()
    args = parse_tool_args(raw, limits) if raw else check_tool_args(block["initial"], limits)
    return {"id": block["id"], "tool": block["name"], "args": args}


def _is_timeout(exc: BaseException) -> bool:
    # Mid-stream the SDK lets the HTTP library's own ReadTimeout through; its class differs
    # between SDK versions (httpx, httpx2), so it is recognised by name.
    return any("Timeout" in cls.__name__ for cls in type(exc).__mro__)


class AnthropicModel(HTTPModel):
    """A Claude model on the Messages API, streamed through the official `anthropic` SDK."""

    provider = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 4096,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] = (),
        seed: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        prompt_caching: bool = False,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        prices: PriceOverride | None = None,
        tool_arg_limits: ToolArgLimits | None = None,
    ) -> None:
        super().__init__(
            name,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout=timeout,
            max_retries=max_retries,
            max_prompt_chars=max_prompt_chars,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            retry_policy=retry_policy,
            prices=prices,
            tool_arg_limits=tool_arg_limits,
        )
        self.prompt_caching = prompt_caching
        self.sampling = Sampling(temperature, top_p, top_k, tuple(stop_sequences), seed)
        # Keys and URLs are read at the first call, not here: a model named in a graph file
        # must construct without credentials (for validation, dry runs and tests).
        self._api_key = api_key
        self._base_url = base_url

    def _make_client(self) -> Any:
        api_key = self._api_key or os.environ.get(ENV_API_KEY)
        if not api_key:
            raise ModelMissingKey(
                f"{self.label}: no API key; set the {ENV_API_KEY} environment variable "
                "or pass api_key= to AnthropicModel"
            )
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=self._base_url or os.environ.get(ENV_BASE_URL) or None,
            timeout=self.timeout,
            max_retries=0,  # loomgraph retries; the SDK cannot tell a started stream apart
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.name,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": anthropic_messages(request.messages),
            "stream": True,
        }
        system = anthropic_system(request.system, caching=self.prompt_caching)
        if system is not None:
            params["system"] = system
        if request.tools:
            params["tools"] = anthropic_tools(request.tools, caching=self.prompt_caching)
        if request.tool_choice:
            params["tool_choice"] = {"type": "tool", "name": request.tool_choice}
        sampling = request.sampling(self._defaults())
        if sampling.stop_sequences:
            params["stop_sequences"] = list(sampling.stop_sequences)
        # Recent SDKs dropped `temperature`, `top_p` and `top_k` from create()'s signature
        # (newer models fix them); older models still accept them in the body.
        body = {
            name: value
            for name, value in (
                ("temperature", sampling.temperature),
                ("top_p", sampling.top_p),
                ("top_k", sampling.top_k),
            )
            if value is not None
        }
        if body:
            params["extra_body"] = body
        return params

    def _defaults(self) -> Sampling:
        # `temperature` may be set on the model after construction (the base keeps it).
        return replace(self.sampling, temperature=self.temperature)

    async def _attempt(
        self, client: Any, params: dict[str, Any], tally: StreamTally
    ) -> AsyncGenerator[ModelChunk, None]:
        try:
            stream = await client.messages.create(**params)
        except Exception as exc:
            raise self._translate(exc) from exc
        request_id: str | None = stream.response.headers.get("request-id")
        turn = _Turn(tally, self.tool_arg_limits)
        try:
            while True:
                try:
                    event = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    err = self._translate(exc, request_id=request_id, streaming=True)
                    err.usage = self._usage(tally.floor(turn.usage))
                    raise err from exc
                for chunk in self._read(turn, event, tally, request_id):
                    yield chunk
        finally:
            await stream.close()
        if not turn.stopped:
            raise ModelConnectionError(
                f"{self.label}: the stream ended before message_stop (request id {request_id})",
                request_id=request_id,
                usage=self._usage(tally.floor(turn.usage)),
            )
        # As reported; a count the provider left out is the engine's to estimate, for every
        # model alike (engine.model_answers.unreported_usage).
        yield self._usage_chunk(turn.reported(), turn.response_id, turn.response_model)
        reason = turn.stop_reason or "end_turn"
        yield ModelChunk(type="finish", finish_reason=_FINISH_REASONS.get(reason, reason))

    def _translate(
        self, exc: Exception, *, request_id: str | None = None, streaming: bool = False
    ) -> AdapterError:
        """The typed error for an SDK or transport exception."""
        import anthropic

        if isinstance(exc, AdapterError):
            return exc
        if isinstance(exc, anthropic.APIStatusError):
            error_type, detail = body_error(exc.body)
            return error_for_status(
                exc.status_code,
                label=self.label,
                detail=detail,
                error_type=error_type,
                request_id=exc.request_id or request_id,
                retry_after=parse_retry_after(exc.response.headers),
                quota=quota_exhausted(exc.body),
            )
        if isinstance(exc, anthropic.APITimeoutError) or _is_timeout(exc):
            return ModelTimeout(
                f"{self.label}: timed out after {self.timeout}s (request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, anthropic.APIConnectionError) or streaming:
            # Mid-stream, the SDK lets transport errors through unwrapped; any failure to
            # read the next event is a broken connection as far as retrying goes.
            cause = exc.__cause__ or exc
            return ModelConnectionError(
                f"{self.label}: connection failed: {type(cause).__name__}: {cause} "
                f"(request id {request_id})",
                request_id=request_id,
            )
        raise exc
