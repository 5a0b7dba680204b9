"""Typed errors of the permission layer: a malformed rule, a bad permission file or entry."""

from __future__ import annotations

from loomgraph.errors import LoomgraphError

__all__ = ["PermissionConfigError", "PermissionTypeError", "RuleSyntaxError"]


def _where(file: str | None, line: int | None) -> str:
    if file is None and line is None:
        return ""
    return f"{file or '<permissions>'}{f':{line}' if line else ''}: "


class PermissionConfigError(LoomgraphError, ValueError):
    """Permissions that cannot be built: an unknown key, mode or set, a bad value or file."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{_where(file, line)}{message}")

    def at(self, file: str | None, line: int | None) -> PermissionConfigError:
        """The same error located in a file; a line it already names is kept."""
        if self.file is not None:
            return self
        return type(self)(self.message, file=file, line=self.line or line)


class PermissionTypeError(PermissionConfigError, TypeError):
    """A permission setting of the wrong type (a string where a list of rules belongs)."""


class RuleSyntaxError(PermissionConfigError):
    """A malformed rule; names the rule text and the 0-based character position."""

    def __init__(
        self,
        rule: str,
        position: int,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.rule, self.position, self.problem = rule, position, problem
        LoomgraphError.__init__(self)
        self.message, self.file, self.line = problem, file, line
        self.args = (
            f"{_where(file, line)}invalid permission rule {rule!r}: {problem} "
            f"(at position {position})",
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def at(self, file: str | None, line: int | None) -> RuleSyntaxError:
        """The same error located in a file; a line it already names is kept."""
        if self.file is not None:
            return self
        return RuleSyntaxError(
            self.rule, self.position, self.problem, file=file, line=self.line or line
        )
