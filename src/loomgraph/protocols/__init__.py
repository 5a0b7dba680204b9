"""The contracts: data types, backend protocols and event kinds.

One module per concept; every public name is re-exported here, so
`from loomgraph.protocols import X` works for all of them. This package imports nothing of
loomgraph's except `loomgraph.errors`.
"""

from typing import TYPE_CHECKING

from loomgraph.protocols.backend_specs import (
    SPEC_FORMS,
    backend_scheme,
    backend_spec_problem,
    dsn_problem,
    split_schema,
    sqlite_path,
    sqlite_path_problem,
)
from loomgraph.protocols.bundle import Deps, SizeLimits
from loomgraph.protocols.checks import OPTIONAL_MEMBERS, close_backend, implements
from loomgraph.protocols.events import (
    BUDGET_EXCEEDED,
    BUDGET_WARNING,
    EFFECT_UNKNOWN_AFTER_CRASH,
    ERROR,
    EVENT_KINDS,
    MEMORY_EXTRACTION_FAILED,
    MEMORY_REMEMBER_FAILED,
    MODEL_CHUNK,
    MODEL_RETRY,
    NODE_COMPLETED,
    NODE_RETRY,
    NODE_STARTED,
    OUTPUT_VOID,
    PERMISSION_DECISION,
    PROVISIONAL_KINDS,
    RUN_COMPLETED,
    RUN_STARTED,
    TOOL_CALL,
    TOOL_PROGRESS,
    TOOL_RESULT,
    Event,
    VoidReason,
)
from loomgraph.protocols.governance import (
    KEPT_DEADLINE,
    Budget,
    BudgetExceeded,
    BudgetScope,
    Decision,
    EffectRef,
    Hooks,
    Permissions,
    PinnablePolicy,
    Reservation,
    RunClock,
    Verdict,
)
from loomgraph.protocols.json_values import same_json
from loomgraph.protocols.lazy import lazy_names
from loomgraph.protocols.ledger import Bindable, LedgerHost, LedgerSite, PostgresSite, SqliteSite
from loomgraph.protocols.memory import Episode, Memory, Seed
from loomgraph.protocols.messages import (
    INVALID_ARGUMENTS,
    ImageBlock,
    Message,
    ToolCall,
    ToolOrigin,
    ToolResult,
    ToolSpec,
)
from loomgraph.protocols.models import (
    FinishReason,
    Model,
    ModelAnswerIncomplete,
    ModelAnswerTruncated,
    ModelChunk,
    ModelError,
    ModelRefused,
    ModelRequest,
    ModelResponse,
    Sampling,
)
from loomgraph.protocols.observability import (
    AuditAction,
    AuditEntry,
    AuditLog,
    AuditMode,
    AuditOutbox,
    LinkableSpan,
    OutcomeOutbox,
    Span,
    Telemetry,
)
from loomgraph.protocols.paths import NodePath, journaled_usage, top_level
from loomgraph.protocols.pending import Pending
from loomgraph.protocols.pricing import (
    DEFAULT_PRICES,
    Price,
    PriceOverride,
    compute_cost,
    price_for,
    register_price,
    with_cost,
)
from loomgraph.protocols.runtime import (
    FINAL_STATUSES,
    EffectRecord,
    EffectStatus,
    Lease,
    PinnedGraph,
    RunLeases,
    RunReader,
    RunRecord,
    RunStart,
    RunStatus,
    RunStopped,
    Runtime,
    RunWriter,
    Transition,
    UnknownRun,
    current_fence,
)
from loomgraph.protocols.shapes import shape
from loomgraph.protocols.shown_text import DISGUISING, shown_escape
from loomgraph.protocols.spellings import as_latin, without_invisible
from loomgraph.protocols.stored_text import (
    MAX_ID_BYTES,
    MAX_ID_CHARS,
    escaped,
    id_length_problem,
    storable,
)
from loomgraph.protocols.tasks import (
    CancelReason,
    cancel_reason,
    finished,
    stops_the_task,
    within,
)
from loomgraph.protocols.tool_args import (
    ToolArgLimits,
    ToolArgsRejected,
    check_tool_args,
    parse_tool_args,
)
from loomgraph.protocols.tool_identity import ToolIdentity
from loomgraph.protocols.tools import (
    ArgumentChecker,
    ArgumentReader,
    StartableToolHost,
    TextSink,
    ToolHost,
    ToolRun,
    UntrustedDescriptions,
    tool_run,
)
from loomgraph.protocols.usage import (
    CHARS_PER_TOKEN,
    MAX_REPORTED_TOKENS,
    USAGE_FIELDS,
    Usage,
    estimate_output_tokens,
    estimate_prompt_tokens,
    floor_usage,
)

if TYPE_CHECKING:
    from loomgraph.protocols.safe_yaml import (
        MAX_YAML_DEPTH,
        BoundedLoader,
        Duplicate,
        LineMap,
        Lines,
        Located,
        YamlRefused,
        key_first,
        locate,
        located_data,
    )

__all__ = [  # noqa: RUF022 - grouped by concept, not sorted
    # backend_specs: `runtime=`, `memory=`, `--runtime`; a SQL backend's DSN or path
    "SPEC_FORMS",
    "backend_scheme",
    "backend_spec_problem",
    "dsn_problem",
    "split_schema",
    "sqlite_path",
    "sqlite_path_problem",
    # messages: the conversation
    "INVALID_ARGUMENTS",
    "ImageBlock",
    "Message",
    "ToolCall",
    "ToolOrigin",
    "ToolIdentity",
    "ToolResult",
    "ToolSpec",
    # usage: tokens, calls and cost as one value; the tokenizer-free estimates
    "CHARS_PER_TOKEN",
    "MAX_REPORTED_TOKENS",
    "USAGE_FIELDS",
    "Usage",
    "estimate_output_tokens",
    "estimate_prompt_tokens",
    "floor_usage",
    # models
    "FinishReason",
    "Model",
    "ModelAnswerIncomplete",
    "ModelAnswerTruncated",
    "ModelChunk",
    "ModelError",
    "ModelRefused",
    "ModelRequest",
    "ModelResponse",
    "Sampling",
    # pricing
    "DEFAULT_PRICES",
    "Price",
    "PriceOverride",
    "compute_cost",
    "price_for",
    "register_price",
    "with_cost",
    # tools
    "ArgumentChecker",
    "ArgumentReader",
    "StartableToolHost",
    "TextSink",
    "UntrustedDescriptions",
    "ToolHost",
    "ToolRun",
    "tool_run",
    # runtime: the journal
    "FINAL_STATUSES",
    "EffectRecord",
    "EffectStatus",
    "Lease",
    "Pending",
    "PinnedGraph",
    "RunLeases",
    "RunReader",
    "RunRecord",
    "RunStart",
    "RunStatus",
    "RunStopped",
    "RunWriter",
    "Runtime",
    "Transition",
    "UnknownRun",
    "current_fence",
    # memory
    "Episode",
    "Memory",
    "Seed",
    # governance: budgets, permissions, hooks
    "Budget",
    "BudgetExceeded",
    "KEPT_DEADLINE",
    "BudgetScope",
    "Decision",
    "EffectRef",
    "Hooks",
    "Permissions",
    "PinnablePolicy",
    "Reservation",
    "RunClock",
    "Verdict",
    # lazy: a package's public names imported on first use
    "lazy_names",
    # json_values: JSON values equal as JSON (`true` is not `1`)
    "same_json",
    # shapes: a value named by its type and size, never its contents (for audited reasons)
    "shape",
    # shown_text: the characters that disguise shown text, and their visible escape
    "DISGUISING",
    "shown_escape",
    # spellings: how text is disguised (invisible characters, lookalike letters)
    "as_latin",
    "without_invisible",
    # stored_text: text every backend's text column keeps (NUL, lone surrogates escaped),
    # and the longest id every backend indexes
    "MAX_ID_BYTES",
    "MAX_ID_CHARS",
    "escaped",
    "id_length_problem",
    "storable",
    # tasks: a step a cancellation must not cut off; a cancel that is the task's own; who
    # cancelled a run; an await bounded in time that keeps a cancel
    "CancelReason",
    "cancel_reason",
    "finished",
    "stops_the_task",
    "within",
    # tool_args: a model's tool-call arguments, checked against limits
    "ToolArgLimits",
    "ToolArgsRejected",
    "check_tool_args",
    "parse_tool_args",
    # ledger: where a journal keeps a budget's ledger, and budgets bound to it
    "Bindable",
    "LedgerHost",
    "LedgerSite",
    "PostgresSite",
    "SqliteSite",
    # the dependency bundle a run executes against
    "Deps",
    "SizeLimits",
    # paths: a node's place in a run
    "NodePath",
    "journaled_usage",
    "top_level",
    # observability
    "AuditAction",
    "AuditEntry",
    "AuditLog",
    "AuditMode",
    "AuditOutbox",
    "OutcomeOutbox",
    "LinkableSpan",
    "Span",
    "Telemetry",
    # checks: a backend object against its protocol, at runtime
    "OPTIONAL_MEMBERS",
    "close_backend",
    "implements",
    # events: what a run tells its consumer
    "Event",
    "EVENT_KINDS",
    "BUDGET_EXCEEDED",
    "BUDGET_WARNING",
    "EFFECT_UNKNOWN_AFTER_CRASH",
    "ERROR",
    "MEMORY_EXTRACTION_FAILED",
    "MEMORY_REMEMBER_FAILED",
    "MODEL_CHUNK",
    "MODEL_RETRY",
    "NODE_COMPLETED",
    "NODE_RETRY",
    "NODE_STARTED",
    "OUTPUT_VOID",
    "PERMISSION_DECISION",
    "PROVISIONAL_KINDS",
    "RUN_COMPLETED",
    "RUN_STARTED",
    "TOOL_CALL",
    "TOOL_PROGRESS",
    "TOOL_RESULT",
    "VoidReason",
    # safe_yaml: the loader of the files people write (loaded on first use)
    "MAX_YAML_DEPTH",
    "BoundedLoader",
    "Duplicate",
    "LineMap",
    "Lines",
    "Located",
    "YamlRefused",
    "key_first",
    "locate",
    "located_data",
]

# Loaded on first use: the YAML loader imports PyYAML, which a run never needs.
_YAML = "loomgraph.protocols.safe_yaml"
__getattr__ = lazy_names(
    "loomgraph.protocols",
    {
        name: _YAML
        for name in (
            "MAX_YAML_DEPTH",
            "BoundedLoader",
            "Duplicate",
            "LineMap",
            "Lines",
            "Located",
            "YamlRefused",
            "key_first",
            "locate",
            "located_data",
        )
    },
    globals(),
)
