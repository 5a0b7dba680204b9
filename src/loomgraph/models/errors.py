"""Typed errors of the model adapters, and how an HTTP status maps onto them.

Every class here is a `loomgraph.protocols.ModelError`, so callers that only care that "the
model call failed" catch that; callers that care why catch the subclass. Each error knows
whether loomgraph's own retry loop may try the call again (`retryable`) and how long the
provider asked us to wait (`retry_after`, from the `retry-after` header).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from typing import ClassVar

from loomgraph.protocols import ModelError, Usage

__all__ = [
    "AdapterError",
    "ModelAuthError",
    "ModelBadResponse",
    "ModelConfigError",
    "ModelConnectionError",
    "ModelMissingKey",
    "ModelOverloaded",
    "ModelPromptTooLarge",
    "ModelQuotaExhausted",
    "ModelRateLimited",
    "ModelRequestError",
    "ModelServerError",
    "ModelStreamBroken",
    "ModelTimeout",
    "ModelToolCallTruncated",
    "ScriptTurnInvalid",
    "body_error",
    "body_status",
    "error_for_status",
    "parse_retry_after",
    "quota_exhausted",
]


class AdapterError(ModelError):
    """Base of the adapters' errors: a `ModelError` that knows whether it may be retried."""

    retryable_by_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_step: bool = False,
        usage: Usage | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, request_id=request_id, retry_step=retry_step, usage=usage
        )
        self.retryable = self.retryable_by_default if retryable is None else retryable
        self.retry_after = retry_after
        self.error_type = error_type
        self.attempts = 1


class ModelConfigError(AdapterError):
    """The adapter is misconfigured (found before anything was sent)."""


class ModelMissingKey(ModelConfigError):
    """No API key was given and the environment variable that supplies one is unset."""


class ScriptTurnInvalid(ModelConfigError, ValueError):
    """A `ScriptedModel` turn it cannot read: an unknown or missing key, or a value of the
    wrong type. `index` is the turn's (its place in the list, or the call index a script
    function answered), `key` the key at fault (None when the turn itself is), `allowed`
    the keys its dict may have."""

    def __init__(
        self,
        message: str,
        *,
        index: int = 0,
        key: str | None = None,
        allowed: tuple[str, ...] = (),
    ) -> None:
        # Keywords with defaults: unpickling calls `cls(message)`, then restores the fields.
        super().__init__(message)
        self.index = index
        self.key = key
        self.allowed = allowed


class ModelRequestError(AdapterError):
    """The provider rejected the request as invalid (400, 404, 409, 422, ...); not retried."""


class ModelPromptTooLarge(ModelRequestError):
    """The prompt is over the configured limit (checked before sending) or the API's (413)."""


class ModelAuthError(AdapterError):
    """The key was refused (401) or lacks permission (403); not retried."""


class ModelQuotaExhausted(AdapterError):
    """The account's spend limit, quota or credit is used up (a 429, 400 or 402 saying so).

    Not retried: waiting seconds does not restore access; a person has to raise the limit or
    add credit. Told apart from a rate limit by the body (see `quota_exhausted`).
    """


class ModelRateLimited(AdapterError):
    """429: too many requests; retried after `retry-after`."""

    retryable_by_default = True


class ModelOverloaded(AdapterError):
    """529 (or an `overloaded_error` event): the provider is overloaded; retried."""

    retryable_by_default = True


class ModelServerError(AdapterError):
    """A 5xx from the provider; 500, 502, 503 and 504 are retried."""

    retryable_by_default = True


class ModelConnectionError(AdapterError):
    """The connection failed or dropped before a complete answer; retried."""

    retryable_by_default = True


class ModelTimeout(ModelConnectionError):
    """The request timed out; retried."""


class ModelBadResponse(AdapterError):
    """The model produced something unusable (e.g. tool arguments that are not a JSON object).

    Retried like a broken stream: the call as a whole may succeed next time.
    """

    retryable_by_default = True


class ModelToolCallTruncated(ModelBadResponse):
    """The answer reached `max_tokens` inside a tool call, so its arguments are cut off.

    Not retried: the same request stops at the same limit again (and is paid for again). The
    message names the limit; raise `max_tokens` (the model's or the request's).
    """

    retryable_by_default = False


class ModelStreamBroken(AdapterError):
    """A stream failed after chunks were already handed out; the whole step must be retried.

    Always carries `retry_step=True` and the usage the provider billed for the attempt.
    """


# Anthropic names the error in the body (`error.type`); an SSE `error` event arrives on a 200
# response, so the type is the only way to tell an overload from a bad request there.
_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_RETRIED_5XX = frozenset({500, 502, 503, 504})

# Error codes meaning "no money left", wherever a provider puts them: Anthropic's
# `error.type` (`billing_error`, HTTP 402) and `error.details.error_code`
# (`enforced_spend_limit_reached`, on a 429 without retry-after); OpenAI's `error.type`
# (`insufficient_quota`) and `error.code` (the specific billing cause), on a 429.
_QUOTA_CODES = frozenset(
    {
        "billing_error",
        "enforced_spend_limit_reached",
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "billing_hard_limit_reached",
    }
)
# The messages, for servers that only say it in words: Anthropic's spend limits on a 400
# ("You have reached your specified API usage limits"), a low credit balance, OpenAI's
# "You exceeded your current quota", and OpenAI-compatible proxies that copy them.
_QUOTA_TEXT = re.compile(
    r"spend(?:ing)? limit|api usage limit|credit balance|exceeded your current quota"
    r"|insufficient[ _](?:quota|credits?|funds|balance)",
    re.IGNORECASE,
)


def quota_exhausted(body: object) -> bool:
    """Whether an API error body says the spend limit, quota or credit is used up."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return bool(_QUOTA_TEXT.search(error))
    if not isinstance(error, dict):
        return False
    details = error.get("details")
    codes = [error.get("type"), error.get("code")]
    if isinstance(details, dict):
        codes.append(details.get("error_code"))
    if any(isinstance(c, str) and c in _QUOTA_CODES for c in codes):
        return True
    message = error.get("message")
    return isinstance(message, str) and bool(_QUOTA_TEXT.search(message))


def error_for_status(
    status: int | None,
    *,
    label: str,
    detail: str = "",
    error_type: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    quota: bool = False,
) -> AdapterError:
    """The typed error for an HTTP status (or, on a 200 stream, the body's error type).

    `quota` (from `quota_exhausted(body)`) turns a 4xx or status-less error into
    `ModelQuotaExhausted`, whatever the status says.
    """
    if (status is None or status < 400) and error_type in _TYPE_STATUS:
        status = _TYPE_STATUS[error_type]
    cls: type[AdapterError]
    retryable: bool | None = None
    if status == 402 or (quota and (status is None or 400 <= status < 500)):
        cls = ModelQuotaExhausted
    elif status in (401, 403):
        cls = ModelAuthError
    elif status == 413:
        cls = ModelPromptTooLarge
    elif status == 429:
        cls = ModelRateLimited
    elif status == 529:
        cls = ModelOverloaded
    elif status == 408:
        cls = ModelTimeout
    elif status is not None and status >= 500:
        cls = ModelServerError
        retryable = status in _RETRIED_5XX
    elif status is None:
        # An error without a status (e.g. an error object inside a stream) is the server's.
        cls = ModelServerError
    else:
        cls = ModelRequestError
    parts = [f"{label}: HTTP {status if status is not None else '?'}"]
    if error_type:
        parts.append(f" {error_type}")
    if detail:
        parts.append(f": {detail}")
    parts.append(f" (request id {request_id or 'unknown'})")
    return cls(
        "".join(parts),
        status=status,
        request_id=request_id,
        retryable=retryable,
        retry_after=retry_after,
        error_type=error_type,
    )


def body_error(body: object) -> tuple[str | None, str]:
    """The error type and message of an API error body (`{"error": {"type", "message"}}`)."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            etype = error.get("type") or error.get("code")
            message = error.get("message")
            return (etype if isinstance(etype, str) else None, str(message or ""))
        if isinstance(error, str):
            return None, error[:500]
    if isinstance(body, str):
        return None, body[:500]
    return None, ""


def body_status(body: object) -> int | None:
    """The HTTP status an error body names in its `code` (vLLM's `{"error": {"code": 400}}`
    in a stream, whose response said 200), or None: a number from 400 to 599 only."""
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date), or None.

    A value that is no finite number (`nan`, `inf`, text) is no instruction: None, and the
    backoff applies (a NaN delay would make `asyncio.sleep` return at once)."""
    if not headers:
        return None
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(float(email.utils.mktime_tz(parsed)) - time.time(), 0.0)


def _seconds(value: str | None) -> float | None:
    """A header's number, at least 0; None when it is absent or not a finite number."""
    try:
        number = float(value) if value else math.nan
    except ValueError:
        return None
    return max(number, 0.0) if math.isfinite(number) else None
