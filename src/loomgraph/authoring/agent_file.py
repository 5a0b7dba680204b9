"""Load and validate agent files: every problem at once, each with file, line and rule.

The file is YAML shaped by `agent_spec.AgentSpec`. `${ENV_VAR}` is replaced before
validation; the values never appear in an error (`secrets.redact`). Relative paths
(instructions_file, a graph file, `sqlite:` files, tool modules) are relative to the
file's folder.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loomgraph.authoring.agent_spec import AgentSpec, ModelSpec, model_name_problem
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import SourceRefused, graph_from_data, parse_yaml, read_source
from loomgraph.authoring.secrets import redact, substitute_env
from loomgraph.errors import GraphError, GraphValidationError, Problem, ProblemsError
from loomgraph.graph.imports import import_object
from loomgraph.graph.spec import Graph
from loomgraph.protocols.safe_yaml import Lines

__all__ = ["AgentFile", "AgentFileError", "agent_json_schema", "load_agent_file"]


class AgentFileError(ProblemsError, ValueError):
    """An agent file that cannot be used; `problems` lists every problem found (secrets in
    their messages redacted)."""

    subject = "agent file"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__([Problem(p.rule, redact(p.message), p.file, p.line) for p in problems])


@dataclass
class AgentFile:
    """A validated agent file: its spec, where it is, its graph and its instructions."""

    spec: AgentSpec
    path: Path
    graph: Graph
    instructions: str
    lines: Lines = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        # The graph is a plain pydantic model: its repr would show substituted secrets.
        return redact(
            f"AgentFile(spec={self.spec!r}, path={str(self.path)!r}, graph={self.graph!r}, "
            f"instructions={self.instructions!r})"
        )

    @property
    def folder(self) -> Path:
        """The file's folder: relative paths in the file start here."""
        return self.path.parent

    def relative(self, value: str) -> str:
        """A path from the file, made absolute against the file's folder."""
        return value if Path(value).is_absolute() else str(self.folder / value)

    def backend(self, spec: str | None) -> str | None:
        """A memory or runtime spec with a relative `sqlite:` path made absolute."""
        if spec is None or not spec.startswith("sqlite:") or spec == "sqlite::memory:":
            return spec
        return "sqlite:" + self.relative(spec.removeprefix("sqlite:"))

    def line_of(self, *path: str | int) -> int | None:
        """The source line of a data path (or of its nearest parent)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def agent_json_schema() -> dict[str, Any]:
    """The JSON Schema of agent files."""
    schema = AgentSpec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def load_agent_file(path: str | Path, *, check_imports: bool = True) -> AgentFile:
    """Load and validate an agent file; raise AgentFileError with every problem."""
    path = Path(path).resolve()
    file = str(path)
    try:
        text = read_source(path)
    except SourceRefused as refused:
        raise AgentFileError([refused.problem]) from None
    data, lines, problems = parse_yaml(text, file)
    if data is None and problems:
        raise AgentFileError(problems)
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise AgentFileError(
            [Problem("not-a-mapping", f"an agent file is a mapping, got {kind}", file, 1)]
        )

    def missing(name: str, where: tuple[str | int, ...]) -> None:
        problems.append(
            Problem(
                "env-missing",
                f"${{{name}}} is not set in the environment",
                file,
                _line(lines, where),
            )
        )

    data = substitute_env(data, missing)
    tools_at: list[int] | None = None
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as err:
        problems += _schema_problems(err, data, lines, file)
        # The parts that fit the schema are checked too: every problem at once.
        partial, tools_at = _without_failures(data, err)
        try:
            spec = AgentSpec.model_validate(partial)
        except ValidationError:  # should not happen: every failure was left out
            raise AgentFileError(sorted(problems, key=lambda p: p.line or 0)) from None
    checker = _Checker(spec, path, lines, check_imports, tools_at)
    problems += checker.problems
    if problems:
        raise AgentFileError(sorted(problems, key=lambda p: (p.file != file, p.line or 0)))
    assert checker.graph is not None
    return AgentFile(spec, path, checker.graph, checker.instructions, lines)


# Stand-ins for the required keys, when they failed the schema (reported already), so the
# parts that fit it can still be checked: what checks those parts reads neither.
_PLACEHOLDERS = {"schema_version": 1, "name": "agent"}


def _without_failures(
    data: dict[str, Any], err: ValidationError
) -> tuple[dict[str, Any], list[int]]:
    """The file's data without what failed the schema, for the checks past it: a key that
    failed (or that the spec does not have) is left out, so it takes its default and is not
    checked; a `tools` entry that failed is left out alone. Also the index in the file of
    each tool left (for the lines of their problems)."""
    partial: dict[Any, Any] = dict(data)
    failed_tools: set[int] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        if not loc:
            continue
        tools = partial.get("tools")
        if (
            loc[0] == "tools"
            and len(loc) >= 2
            and isinstance(loc[1], int)
            and isinstance(tools, list)
        ):
            failed_tools.add(loc[1])
        else:
            partial.pop(loc[0], None)
    tools = partial.get("tools")
    kept = (
        [i for i in range(len(tools)) if i not in failed_tools] if isinstance(tools, list) else []
    )
    if isinstance(tools, list):
        partial["tools"] = [tools[i] for i in kept]
    for key, value in _PLACEHOLDERS.items():
        partial.setdefault(key, value)
    return partial, kept


def _line(lines: Lines, path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _schema_problems(err: ValidationError, data: Any, lines: Lines, file: str) -> list[Problem]:
    """Pydantic's errors as Problems at their lines: union branches folded (a mapping where a
    name could also go reports the mapping's errors), unknown keys with a suggestion."""
    found: list[tuple[tuple[Any, ...], Problem]] = []
    for e in err.errors():
        full = tuple(e["loc"])
        loc = _data_path(data, full)
        where = ".".join(str(p) for p in loc) or "the top level"
        if e["type"] == "extra_forbidden":
            rule, message = "unknown-key", _unknown_key(loc, data)
        elif e["type"] == "missing":
            rule, message = "schema", f"{where}: missing key {full[-1]!r}"
        else:
            rule, message = "schema", f"{where}: {e['msg']}"
            if e["type"] == "literal_error" and loc == ("schema_version",):
                message += " (the only agent-file version is 1)"
        problem = Problem(rule, message, file, _line(lines, loc))
        if problem not in (p for _, p in found):
            found.append((loc, problem))
    branch_types = ("valid string", "valid dictionary", "Unable to extract tag")
    kept = [
        p
        for loc, p in found
        if not any(t in p.message for t in branch_types)
        or not any(
            (o[: len(loc)] == loc and o != loc) or (q.rule != p.rule and o == loc)
            for o, q in found
            if q is not p
        )
    ]
    return sorted(kept, key=lambda p: p.line or 0)


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The part of a pydantic location that names places in the data (not union branches)."""
    path: list[Any] = []
    here = data
    for part in loc:
        inside = isinstance(here, dict) and part in here
        if not inside and not (isinstance(here, list) and isinstance(part, int)):
            continue
        if isinstance(here, list) and not 0 <= part < len(here):
            continue
        here = here[part]
        path.append(part)
    return tuple(path)


def _unknown_key(loc: tuple[Any, ...], data: Any) -> str:
    key = loc[-1] if loc else "?"
    options = _allowed_keys(loc[:-1], data)
    close = difflib.get_close_matches(str(key), options, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = ".".join(str(p) for p in loc[:-1]) or "the top level"
    return f"unknown key {key!r} in {where}{hint}; known keys: {', '.join(options)}"


def _allowed_keys(parent: tuple[Any, ...], data: Any) -> list[str]:
    """The keys the model at `parent` accepts (following the data through the spec)."""
    from loomgraph.authoring import agent_spec as s

    model: Any = AgentSpec
    here = data
    for part in parent:
        here = here[part]
        if isinstance(part, int):
            continue
        if model is AgentSpec and part == "tools":
            continue
        fields = getattr(model, "model_fields", {})
        nested = {
            "model": ModelSpec,
            "budget": s.BudgetSpec,
            "per_user": s.CapsSpec,
            "audit_log": s.AuditLogSpec,
            "telemetry": s.TelemetrySpec,
        }.get(str(part))
        if nested is not None:
            model = nested
        elif model is s.BudgetSpec and part == "users":
            model = s.CapsSpec
        elif part not in fields:
            model = s.CapsSpec  # a user's caps under budget.users
    if isinstance(here, dict) and "mcp" in here:
        model = s.MCPHttpSpec if here["mcp"] == "http" else s.MCPStdioSpec
    return sorted(getattr(model, "model_fields", {}))


class _Checker:
    """The checks past the schema: instructions, model name, graph, tools, backends."""

    def __init__(
        self,
        spec: AgentSpec,
        path: Path,
        lines: Lines,
        check_imports: bool,
        tools_at: list[int] | None = None,
    ) -> None:
        self.spec, self.path, self.lines = spec, path, lines
        # Where each of `spec.tools` is in the file's `tools` (some left out: `_without_failures`).
        self.tools_at = tools_at if tools_at is not None else list(range(len(spec.tools)))
        self.problems: list[Problem] = []
        self.graph: Graph | None = None
        self.instructions = ""
        self._instructions()
        self._model(check_imports)
        self._graph()
        if check_imports:
            self._tools()
        for key in ("memory", "runtime"):
            self._backend(key, getattr(spec, key))

    def add(self, rule: str, message: str, *where: str | int) -> None:
        self.problems.append(Problem(rule, message, str(self.path), _line(self.lines, where)))

    def _instructions(self) -> None:
        spec = self.spec
        if spec.instructions is not None and spec.instructions_file is not None:
            self.add(
                "instructions",
                "give instructions or instructions_file, not both",
                "instructions_file",
            )
            return
        if spec.instructions_file is None:
            self.instructions = spec.instructions or ""
            return
        import jinja2

        folder = self.path.parent
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        try:
            template = env.get_template(Path(spec.instructions_file).as_posix())
            self.instructions = template.render(name=spec.name)
        except jinja2.TemplateNotFound as err:
            self.add(
                "instructions-file",
                f"no instructions file {str(err)!r} in {folder}",
                "instructions_file",
            )
        except jinja2.TemplateSyntaxError as err:
            self.add(
                "instructions-template",
                f"{err.filename or spec.instructions_file}:{err.lineno}: "
                f"Jinja2 template error: {err.message}",
                "instructions_file",
            )
        except jinja2.UndefinedError as err:
            self.add(
                "instructions-template",
                f"{spec.instructions_file}: {err.message} (a template sees only `name`)",
                "instructions_file",
            )
        except RecursionError:  # brackets or includes nested past the stack: no traceback
            self.add(
                "instructions-template",
                f"{spec.instructions_file}: the template is nested too deeply",
                "instructions_file",
            )

    def _model(self, check_imports: bool) -> None:
        name = self.spec.model_spec.name
        where: tuple[str, ...] = (
            ("model", "name") if isinstance(self.spec.model, ModelSpec) else ("model",)
        )
        problem = model_name_problem(name)
        if problem is not None:
            self.add("model", problem, *where)
            return
        scheme = name.partition(":")[0]
        if check_imports and ":" in name and scheme not in ("anthropic", "openai", "openai-compat"):
            try:
                import_object(name, near=self.path, what="model")
            except ImportError as err:
                self.add("import", str(err), *where)

    def _graph(self) -> None:
        arch = self.spec.architecture
        try:
            if isinstance(arch, dict):
                sub = {k[1:]: v for k, v in self.lines.items() if k[:1] == ("architecture",)}
                self.graph = graph_from_data(arch, file=str(self.path), lines=sub)
            else:
                local = self.path.parent / arch
                self.graph = load_graph(local if arch.endswith((".yaml", ".yml")) else arch)
        except GraphValidationError as err:
            self.problems += err.problems
        except GraphError as err:
            self.add("architecture", str(err), "architecture")

    def _tools(self) -> None:
        for i, entry in zip(self.tools_at, self.spec.tools, strict=True):
            if isinstance(entry, str):
                try:
                    import_object(entry, near=self.path, what="tool")
                except ImportError as err:
                    self.add("import", str(err), "tools", i)

    def _backend(self, key: str, value: str | None) -> None:
        if (
            value is None
            or value == "memory"
            or value.startswith(("sqlite:", "postgres://", "postgresql://"))
        ):
            return
        self.add("backend", f"{key} {value!r}: use memory, sqlite:PATH or postgres://…", key)
