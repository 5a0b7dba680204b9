"""Every typed error of loomgraph descends from `LoomgraphError`.

Imports nothing of loomgraph's, so every layer can raise these. The classes defined here
are the root and the graph errors; the others live beside the code that raises them and
subclass the root (`tests/test_error_tree.py` checks every public one). Where callers may
already catch a builtin, the builtin stays a base too (shown as `+ ValueError`). The tree,
with where each class lives (relative to `loomgraph.`):

    LoomgraphError                          errors
    ├── ProblemsError                       errors
    │   ├── AgentFileError + ValueError     authoring.agent_file
    │   └── DatasetError + ValueError       eval.dataset
    ├── GraphError                          errors
    │   ├── GraphValidationError + ProblemsError  errors
    │   ├── ConditionError                  errors
    │   ├── NodeError                       errors
    │   ├── StateError                      errors
    │   │   ├── StateTooLarge               engine.state_size
    │   │   ├── StateNotJson                engine.state_size
    │   │   └── StateChangedInPlace         engine.users_view
    │   ├── UnknownNodeKind                 graph.registry
    │   ├── NodeKindLoadError               graph.registry
    │   ├── UnknownGraph                    authoring.library
    │   ├── UnknownNode + KeyError          testing
    │   ├── RenderError                     authoring.diagram (and .render)
    │   ├── LoaderTagError + TemplateSyntaxError  graph.condition_code
    │   └── GraphChanged                    agent.resume_errors
    ├── RunStopped                          protocols
    ├── TypeSyntaxError + ValueError        graph.field_types
    ├── NotJsonData + ValueError            graph.outside_values (ResumeError, StateError name it)
    ├── FieldNotRead + KeyError             engine.users_view (a node's failure: NodeError names it)
    ├── MapPathError + LookupError          nodes.map (a node's failure: NodeError names it)
    ├── OutputValidationError + ValueError  nodes.structured
    ├── ResumeError + ValueError            agent.resume_errors (also from agent.checkpoints)
    │   ├── AnswerNeeded                    agent.resume_errors
    │   ├── NotACheckpoint                  agent.resume_errors
    │   ├── RunNotStarted                   agent.resuming
    │   │   └── RunQueued                   agent.resuming
    │   └── RunOfAnotherAgent               agent.resume_errors
    ├── FleetError                          agent.fleet_errors
    │   ├── FleetNeedsPostgres + TypeError  agent.fleet_errors
    │   ├── JobUnusable                     agent.fleet_errors
    │   ├── JobFromNewerVersion             agent.fleet_errors
    │   ├── RunWaitTimeout + TimeoutError   agent.submitting
    │   ├── RunNotCancellable               agent.submitting
    │   └── RunJobPending                   agent.fleet_errors
    ├── ConfigError + ValueError            agent.config_errors
    ├── UnknownRun + KeyError               protocols
    │   └── RunPossiblyLost                 runtime.errors
    ├── BudgetExceeded                      protocols
    ├── AmbiguousLedger                     governance.ledger_sites
    ├── BudgetConfigError + ValueError      governance.caps
    │   └── UnpricedModel                   governance.caps
    ├── ModelError                          protocols
    │   ├── ModelAnswerIncomplete           protocols
    │   │   ├── ModelAnswerTruncated        protocols
    │   │   └── ModelRefused                protocols
    │   └── AdapterError                    models.errors
    │       ├── ModelConfigError            models.errors
    │       │   ├── ModelMissingKey         models.errors
    │       │   └── ScriptTurnInvalid + ValueError  models.errors
    │       ├── ModelRequestError           models.errors
    │       │   └── ModelPromptTooLarge     models.errors
    │       ├── ModelAuthError              models.errors
    │       ├── ModelQuotaExhausted         models.errors
    │       ├── ModelRateLimited            models.errors
    │       ├── ModelOverloaded             models.errors
    │       ├── ModelServerError            models.errors
    │       ├── ModelConnectionError        models.errors
    │       │   └── ModelTimeout            models.errors
    │       ├── ModelBadResponse            models.errors
    │       └── ModelStreamBroken           models.errors
    ├── ScriptExhausted + RuntimeError      models.scripted
    ├── ToolArgsRejected + ValueError       protocols.tool_args
    ├── ServiceUnavailable                  errors
    │   ├── LedgerUnavailable               governance.ledger
    │   └── SlotsUnavailable                workers.slots
    ├── JournalError                        runtime.errors
    │   ├── JournalCorrupted                runtime.errors
    │   │   └── JournalDamaged              runtime.errors
    │   ├── JournalVersionError             runtime.errors
    │   ├── JournalUnavailable              runtime.errors
    │   ├── JournalEncodingError + TypeError  runtime.errors
    │   ├── JournalIdError + ValueError     runtime.errors
    │   ├── RunConflict                     runtime.errors
    │   │   └── RunExists                   runtime.errors
    │   └── UnknownEffect + KeyError        runtime.errors
    ├── MemoryBackendError                  memory.errors
    │   ├── MemoryCorrupted                 memory.errors
    │   └── MemoryUnavailable               memory.errors
    ├── MemoryInputError + ValueError       memory.errors
    │   ├── BlockNameError                  memory.errors
    │   └── UserIdError                     memory.errors
    ├── ExtractionError + ValueError        memory.extract
    ├── Unreadable                          governance.shell_words
    ├── PermissionConfigError + ValueError  governance.rule_errors
    │   ├── PermissionTypeError + TypeError governance.rule_errors
    │   └── RuleSyntaxError                 governance.rule_errors
    ├── ToolArgsInvalid                     engine.tool_gate
    ├── InputTooLarge + ValueError          errors
    ├── AuditLogError                       observability.audit_chain
    │   ├── AuditLogUnavailable + ServiceUnavailable  observability.audit_chain
    │   └── AuditConfigError + ValueError   observability.audit_key
    │       └── AuditKeyMissing             observability.audit_key
    ├── SqliteFileProblem                   _storage.sqlite_files
    ├── BadEventId + ValueError             agent.event_ids
    ├── ServeError                          serve.errors
    │   ├── BadRequest + ValueError         serve.errors
    │   │   ├── NotText                     serve.bodies
    │   │   └── UnknownCursor               serve.run_pages
    │   ├── UnsupportedMediaType            serve.bodies
    │   ├── Unauthorized                    serve.errors
    │   │   └── DevModeRefused + ValueError serve.auth
    │   ├── Forbidden                       serve.errors
    │   ├── NotFound                        serve.errors
    │   ├── Conflict                        serve.errors
    │   ├── Invalid + ValueError            serve.errors
    │   └── TooLarge                        serve.errors
    ├── Closing                             serve.hub
    ├── MCPServerError                      tools.mcp.connection
    │   └── MCPListingTooLarge              tools.mcp.connection
    ├── ToolNameCollision + ValueError      tools.mcp.host
    ├── MissingToolDependency + LookupError tools.context
    ├── JsonArgumentsInvalid + ValueError   tools.json_schema
    ├── ToolDefaultInvalid + ValueError     tools.schema_defs (and tools.schema)
    ├── ToolSchemaNotJSON + ValueError      tools.schema_defs
    ├── AgentNotFound + ValueError          cli.agent_args
    └── UsageError                          cli.journal

Three exceptions stay outside on purpose: they are raised and caught inside one module and
never reach a caller — `authoring.loader._AliasRefused`, `governance.hooks._Failed` and
`_storage.cursor.Constraint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a graph: where it is and which rule it breaks."""

    rule: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file or '<graph>'}:{self.line}" if self.line else (self.file or "<graph>")
        return f"{where}: [{self.rule}] {self.message}"


class LoomgraphError(Exception):
    """The root of every error loomgraph raises on purpose."""


class ServiceUnavailable(LoomgraphError):
    """A service the run depends on (its journal) could not be reached: not the run's own
    failure. The engine lets it through rather than journal the run as failed (nor route it
    to `on_error`, nor retry the node), so the run stays where its journal left it and is
    resumed as after a crash."""


class ProblemsError(LoomgraphError):
    """A file (a graph, an agent file, a dataset) is invalid; `problems` lists every problem
    found, not only the first, each with its file and line."""

    subject = "input"  # what was invalid, as the message names it

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid {self.subject} ({len(problems)} problem(s)):\n{lines}")

    @property
    def rules(self) -> set[str]:
        """The names of the rules that failed."""
        return {p.rule for p in self.problems}

    @property
    def file(self) -> str | None:
        """The file of the first problem."""
        return self.problems[0].file if self.problems else None

    @property
    def line(self) -> int | None:
        """The line of the first problem."""
        return self.problems[0].line if self.problems else None


class GraphError(LoomgraphError):
    """Base class of the errors the graph layer raises."""


class GraphValidationError(GraphError, ProblemsError):
    """A graph failed validation; `problems` lists every problem found, not only the first."""

    subject = "graph"


class ConditionError(GraphError):
    """An edge condition raised while it was evaluated.

    `position` numbers the edge among its node's edges from 1, as diagrams label it (`[2]`);
    `edge` is its index in the file's `edges:` list, from 0.
    """

    def __init__(
        self,
        node: str,
        edge: int,
        expression: str,
        cause: BaseException,
        *,
        position: int | None = None,
        target: str | None = None,
    ) -> None:
        which = f"edge [{position}]" if position is not None else "the edge"
        to = f" to {target!r}" if target is not None else ""
        super().__init__(
            f"condition of {which} from node {node!r}{to} failed: {expression!r}: "
            f"{type(cause).__name__}: {cause}"
        )
        self.node = node
        self.edge = edge
        self.position = position
        self.expression = expression


class NodeError(GraphError):
    """A node raised; the run ends with status `failed` naming the node."""

    def __init__(self, node: str, cause: BaseException) -> None:
        super().__init__(f"node {node!r} failed: {type(cause).__name__}: {cause}")
        self.node = node
        self.cause = cause


def problem_said(error: Mapping[str, Any]) -> str:
    """One of pydantic's validation errors as where and what (`score: Field required`),
    without the value it quotes."""
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def error_summary(error: BaseException) -> str:
    """`error` told without content, for telemetry and an audit log that capture none.

    An error's message can quote what the run handled (a tool's rejected arguments, an answer
    that did not fit, a provider's echo of the prompt), so only names are kept: the error's
    class name, and for a node's failure (or an edge condition's) the node too
    (`node 'tools' failed: ToolArgsInvalid`, nested for a subgraph's node)."""
    if isinstance(error, NodeError):
        return f"node {error.node!r} failed: {error_summary(error.cause)}"
    if isinstance(error, ConditionError):
        return f"ConditionError: an edge condition of node {error.node!r} failed"
    return type(error).__name__


class InputTooLarge(LoomgraphError, ValueError):
    """A prompt larger than the Agent's size limit; nothing was written."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} characters; the limit is {limit} (size_limits=)")
        self.what = what
        self.size = size
        self.limit = limit


class StateError(GraphError):
    """A patch wrote a value that does not fit the declared field type, or an unknown field."""
