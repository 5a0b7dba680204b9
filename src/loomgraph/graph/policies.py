"""Per-node policies declared in YAML: retry (attempts, backoff, error types) and timeout."""

from __future__ import annotations

import builtins
from functools import cache

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.protocols import ModelError

# The longest wait between two attempts, in seconds: `backoff` may not exceed it, and the
# doubling stops there (a wait of days, or an infinite one, is never what a graph meant).
MAX_RETRY_WAIT = 3600.0


class RetryPolicy(BaseModel):
    """Try a failing node again: `attempts` in all, waiting `backoff * 2**n` seconds between
    (at most 3600 each)."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(2, ge=1, le=20, description="tries in all, the first included")
    backoff: float = Field(
        0.0,
        ge=0,
        le=MAX_RETRY_WAIT,
        description="seconds before the first retry; doubles, up to 3600 s a wait",
    )
    # Not `on`: YAML 1.1 reads a bare `on` key as the boolean true.
    errors: list[str] = Field(
        default_factory=lambda: ["Exception"],
        description="error type names that are retried (an error matches a name of its class "
        "or of any base class), e.g. TimeoutError, ModelRateLimited",
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        return min(self.backoff * 2.0 ** (attempt - 1), MAX_RETRY_WAIT)

    def retries(self, error: BaseException) -> bool:
        """True when `error`, or an error it was raised from, is of a type this policy
        retries (a model's own `RuntimeError` arrives as the `ModelError` it caused)."""
        names: set[str] = set()
        chain: list[BaseException] = []
        cause: BaseException | None = error
        while cause is not None and cause not in chain:  # a cycle of causes ends here
            chain.append(cause)
            names.update(cls.__name__ for cls in type(cause).__mro__)
            cause = cause.__cause__
        return any(name in names for name in self.errors)


@cache
def _loomgraph_error_names() -> frozenset[str]:
    # Model errors are raised by adapters (loaded lazily), so their names are listed here.
    names = {
        "ModelError",
        "ModelRateLimited",
        "ModelOverloaded",
        "ModelAuthError",
        "ModelRequestError",
        "ModelServerError",
        "ModelConnectionError",
        "ModelTimeout",
        "ModelMissingKey",
        "ModelPromptTooLarge",
        "ModelStreamBroken",
        "ModelBadResponse",
        "ModelConfigError",
        "OutputValidationError",
        "StateError",
        "ConditionError",
        "NodeError",
        "ScriptExhausted",
        "StructuredOutputError",
    }
    stack: list[type] = [ModelError]
    while stack:
        cls = stack.pop()
        names.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return frozenset(names)


def known_error_type(name: str) -> bool:
    """True for the name of a built-in exception or of an error loomgraph raises."""
    found = getattr(builtins, name, None)
    return (
        isinstance(found, type) and issubclass(found, BaseException)
    ) or name in _loomgraph_error_names()
