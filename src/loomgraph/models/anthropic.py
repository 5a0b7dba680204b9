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

from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, HTTPModel, StreamTally
from loomgraph.models.anthropic_request import (
    anthropic_messages,
    anthropic_system,
    anthropic_tools,
)
from loomgraph.models.errors import (
    AdapterError,
    ModelBadResponse,
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
from loomgraph.protocols.tool_args import (
    ToolArgLimits,
    ToolArgsRejected,
    check_tool_args,
    parse_tool_args,
)

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
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.stopped = False

    def feed(self, event: Any) -> Iterator[ModelChunk]:
        """The chunks one raw stream event produces (raises ValueError on bad tool JSON)."""
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self._take_usage(getattr(event.message, "usage", None))
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                initial = getattr(block, "input", None)
                self.tool_blocks[event.index] = {
                    "id": block.id,
                    "name": block.name,
                    "parts": [],
                    "initial": initial if isinstance(initial, dict) else {},
                }
            elif block.type == "text" and getattr(block, "text", ""):
                self.tally.add(block.text)
                yield ModelChunk(type="text", text=block.text)
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                self.tally.add(delta.text)
                yield ModelChunk(type="text", text=delta.text)
            elif delta.type == "input_json_delta" and event.index in self.tool_blocks:
                self.tally.add(delta.partial_json)
                self.tool_blocks[event.index]["parts"].append(delta.partial_json or "")
        elif kind == "content_block_stop":
            # Only now is the tool call complete; a partial block is never handed out.
            block = self.tool_blocks.pop(event.index, None)
            if block is not None:
                yield ModelChunk(type="tool_call", call=_tool_call(block, self.limits))
        elif kind == "message_delta":
            self.stop_reason = getattr(event.delta, "stop_reason", None) or self.stop_reason
            self._take_usage(getattr(event, "usage", None))
        elif kind == "message_stop":
            self.stopped = True

    def _take_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative, so a later value replaces an earlier one.
        if usage is None:
            return
        for ours, theirs in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_write_tokens", "cache_creation_input_tokens"),
            ("cache_read_tokens", "cache_read_input_tokens"),
        ):
            value = getattr(usage, theirs, None)
            if isinstance(value, int):
                self.usage = replace(self.usage, **{ours: value})


def _tool_call(block: dict[str, Any], limits: ToolArgLimits) -> ToolCall:
    raw = "".join(block["parts"]).strip()
    args = parse_tool_args(raw, limits) if raw else check_tool_args(block["initial"], limits)
    return {"id": block["id"], "tool": block["name"], "args": args}


def _rejected(exc: ValueError) -> str | None:
    return "tool_args_rejected" if isinstance(exc, ToolArgsRejected) else None


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
                try:
                    chunks = list(turn.feed(event))
                except ValueError as exc:
                    raise ModelBadResponse(
                        f"{self.label}: invalid tool input JSON: {exc} (request id {request_id})",
                        error_type=_rejected(exc),
                        request_id=request_id,
                        usage=self._usage(tally.floor(turn.usage)),
                    ) from exc
                for chunk in chunks:
                    yield chunk
        finally:
            await stream.close()
        if not turn.stopped:
            raise ModelConnectionError(
                f"{self.label}: the stream ended before message_stop (request id {request_id})",
                request_id=request_id,
                usage=self._usage(tally.floor(turn.usage)),
            )
        yield ModelChunk(type="usage", usage=self._usage(turn.usage))
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
