"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI itself).

Built on the official `openai` package, an optional extra (`pip install loomgraph[openai]`),
imported at the first call only. Same chunk semantics, retries and typed errors as the
Anthropic adapter: text deltas stream out as they arrive, tool calls are assembled from their
argument fragments and handed out only when the choice has finished.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Any

from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, HTTPModel, StreamTally
from loomgraph.models.errors import (
    AdapterError,
    ModelBadResponse,
    ModelConfigError,
    ModelConnectionError,
    ModelTimeout,
    body_error,
    error_for_status,
    parse_retry_after,
    quota_exhausted,
)
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import (
    Message,
    ModelChunk,
    ModelRequest,
    Sampling,
    ToolCall,
    ToolSpec,
    Usage,
)
from loomgraph.protocols.pricing import PriceOverride
from loomgraph.protocols.tool_args import (
    ToolArgLimits,
    ToolArgsRejected,
    parse_tool_args,
)

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "NO_KEY",
    "OpenAICompatModel",
    "openai_messages",
    "openai_tools",
]

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
# Local servers need no key, but the SDK insists on one; this placeholder is sent instead.
NO_KEY = "no-key"
# The chat-completions API has no error flag on tool results; the model reads it from here.
TOOL_ERROR_PREFIX = "ERROR: "

_FINISH_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def openai_messages(messages: Sequence[Message], system: str = "") -> list[dict[str, Any]]:
    """Map loomgraph messages (and the system prompt) to chat-completions messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "user":
            out.append({"role": "user", "content": content})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            entry: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {
                            "name": call["tool"],
                            "arguments": json.dumps(call.get("args") or {}),
                        },
                    }
                    for call in calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""  # null content is only valid next to tool calls
            out.append(entry)
        elif role == "tool":
            if message.get("is_error"):
                content = TOOL_ERROR_PREFIX + content
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": message.get("tool_call_id", ""),
                    "content": content,
                }
            )
        else:
            raise ValueError(f"unknown message role {role!r}")
    return out


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs as chat-completions function tools."""
    out: list[dict[str, Any]] = []
    for spec in tools:
        function: dict[str, Any] = {
            "name": spec["name"],
            "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
        }
        if spec.get("description"):
            function["description"] = spec["description"]
        out.append({"type": "function", "function": function})
    return out


def _assemble(slot: dict[str, Any], limits: ToolArgLimits) -> ToolCall:
    args = parse_tool_args("".join(slot["parts"]), limits)
    return {"id": slot["id"] or f"call_{uuid.uuid4().hex[:12]}", "tool": slot["name"], "args": args}


def _usage(raw: Any) -> Usage:
    # OpenAI counts cached prompt tokens inside prompt_tokens; loomgraph's input_tokens
    # excludes them (as Anthropic's does), so both adapters' usage means the same thing.
    prompt = getattr(raw, "prompt_tokens", 0) or 0
    details = getattr(raw, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=getattr(raw, "completion_tokens", 0) or 0,
        cache_read_tokens=cached,
        cache_write_tokens=0,
    )


class OpenAICompatModel(HTTPModel):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint, streamed."""

    provider = "openai-compat"

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 4096,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] = (),
        seed: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
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
        self._base_url = base_url
        self._api_key = api_key
        self.sampling = Sampling(temperature, top_p, top_k, tuple(stop_sequences), seed)

    def _make_client(self) -> Any:
        base_url = self._base_url or os.environ.get(ENV_BASE_URL)
        if not base_url:
            raise ModelConfigError(
                f"{self.label}: no server URL; set the {ENV_BASE_URL} environment variable "
                "or pass base_url= to OpenAICompatModel"
            )
        try:
            import openai
        except ImportError as exc:
            raise ModelConfigError(
                f"{self.label}: the openai package is not installed; "
                "pip install 'loomgraph[openai]'"
            ) from exc
        return openai.AsyncOpenAI(
            api_key=self._api_key or os.environ.get(ENV_API_KEY) or NO_KEY,
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,  # loomgraph retries; the SDK cannot tell a started stream apart
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.name,
            "messages": openai_messages(request.messages, request.system),
            "max_tokens": request.max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = openai_tools(request.tools)
        if request.tool_choice:
            params["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
        sampling = request.sampling(replace(self.sampling, temperature=self.temperature))
        for name, value in (
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
            ("seed", sampling.seed),
        ):
            if value is not None:
                params[name] = value
        if sampling.stop_sequences:
            params["stop"] = list(sampling.stop_sequences)
        return params

    async def _attempt(
        self, client: Any, params: dict[str, Any], tally: StreamTally
    ) -> AsyncGenerator[ModelChunk, None]:
        try:
            stream = await client.chat.completions.create(**params)
        except Exception as exc:
            raise self._translate(exc) from exc
        request_id: str | None = stream.response.headers.get("x-request-id")
        slots: dict[int, dict[str, Any]] = {}
        usage: Usage | None = None  # None until the server sends its usage
        finish: str | None = None
        called = False
        try:
            while True:
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    err = self._translate(exc, request_id=request_id, streaming=True)
                    err.usage = self._usage(tally.floor(usage or Usage()))
                    raise err from exc
                if getattr(chunk, "usage", None) is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():
                    if choice.index != 0:
                        continue  # n > 1 is never requested
                    delta = choice.delta
                    if delta is not None and delta.content:
                        tally.add(delta.content)
                        yield ModelChunk(type="text", text=delta.content)
                    for part in (delta.tool_calls if delta is not None else None) or ():
                        slot = slots.setdefault(part.index, {"id": "", "name": "", "parts": []})
                        slot["id"] = part.id or slot["id"]
                        if part.function is not None:
                            slot["name"] = part.function.name or slot["name"]
                            slot["parts"].append(part.function.arguments or "")
                            tally.add(part.function.arguments)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                        # Only a finished choice has complete tool calls.
                        try:
                            calls = [
                                _assemble(slots[i], self.tool_arg_limits) for i in sorted(slots)
                            ]
                        except ValueError as exc:
                            raise ModelBadResponse(
                                f"{self.label}: invalid tool arguments JSON: {exc} "
                                f"(request id {request_id})",
                                error_type="tool_args_rejected"
                                if isinstance(exc, ToolArgsRejected)
                                else None,
                                request_id=request_id,
                                usage=self._usage(tally.floor(usage or Usage())),
                            ) from exc
                        slots.clear()
                        for call in calls:
                            called = True
                            yield ModelChunk(type="tool_call", call=call)
        finally:
            await stream.close()
        if finish is None:
            raise ModelConnectionError(
                f"{self.label}: the stream ended before a finish_reason (request id {request_id})",
                request_id=request_id,
                usage=self._usage(tally.floor(usage or Usage())),
            )
        # A server that never sends usage (some local ones) is charged the estimate.
        billed = usage if usage is not None else tally.floor(Usage())
        yield ModelChunk(type="usage", usage=self._usage(billed))
        # Some local servers say "stop" after tool calls; the calls are what counts.
        reason = "tool_use" if called else _FINISH_REASONS.get(finish, finish)
        yield ModelChunk(type="finish", finish_reason=reason)

    def _translate(
        self, exc: Exception, *, request_id: str | None = None, streaming: bool = False
    ) -> AdapterError:
        """The typed error for an SDK or transport exception."""
        import openai

        if isinstance(exc, AdapterError):
            return exc
        if isinstance(exc, openai.APIStatusError):
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
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeout(
                f"{self.label}: timed out after {self.timeout}s (request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, openai.APIConnectionError) or (
            streaming and not isinstance(exc, openai.APIError)
        ):
            cause = exc.__cause__ or exc
            return ModelConnectionError(
                f"{self.label}: connection failed: {type(cause).__name__}: {cause} "
                f"(request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, openai.APIError):
            # An error object inside the stream: no status, only the body's type and message.
            error_type, detail = body_error(exc.body)
            return error_for_status(
                None,
                label=self.label,
                detail=detail or exc.message,
                error_type=error_type,
                request_id=request_id,
                quota=quota_exhausted(exc.body),
            )
        raise exc
