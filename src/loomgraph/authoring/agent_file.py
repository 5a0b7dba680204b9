"""Load and validate agent files: every problem at once, each with file, line and rule.

The file is YAML shaped by `agent_spec.AgentSpec`. `${ENV_VAR}` is replaced before
validation; the values never appear in an error (`secrets.redact`). Relative paths
(instructions_file, a graph file, `sqlite:` files, tool modules) are relative to the
file's folder. What fits the schema but only a backend can check (its `permissions` rules,
its `audit_log` key) is checked by the `checks` the caller hands in: the backends are not
authoring's to import (`agent.from_file` hands in theirs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from loomgraph.authoring.agent_file_schema import line_at, schema_problems, without_failures
from loomgraph.authoring.agent_spec import AgentSpec, ModelSpec, model_name_problem
from loomgraph.authoring.library import load_graph
from loomgraph.authoring.loader import (
    SourceRefused,
    builtin_path,
    graph_from_data,
    graph_lines,
    not_a_mapping,
    parse_yaml,
    read_source,
)
from loomgraph.authoring.secrets import redact, substitute_env
from loomgraph.errors import GraphError, GraphValidationError, Problem, ProblemsError
from loomgraph.graph.imports import import_object
from loomgraph.graph.spec import Graph
from loomgraph.protocols.safe_yaml import Lines, key_first

__all__ = [
    "AgentFile",
    "AgentFileError",
    "AgentSource",
    "SectionCheck",
    "agent_json_schema",
    "load_agent_file",
]


class AgentFileError(ProblemsError, ValueError):
    """An agent file that cannot be used; `problems` lists every problem found (secrets in
    their messages redacted)."""

    subject = "agent file"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__([Problem(p.rule, redact(p.message), p.file, p.line) for p in problems])


@dataclass
class AgentSource:
    """An agent file's spec and where it came from: what a check of one section reads.
    `lines` has each key at its own line (`key_first`): where a problem about it is."""

    spec: AgentSpec
    path: Path
    lines: Lines = field(default_factory=dict, repr=False)

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
        return line_at(self.lines, path)


# A check of one top-level section of an agent file (`permissions`, `audit_log`): every
# problem of that section, located in the file; it reads, never writes, connects or runs.
SectionCheck: TypeAlias = Callable[[AgentSource], list[Problem]]


@dataclass
class AgentFile(AgentSource):
    """A validated agent file: its spec, where it is, its graph and its instructions."""

    graph: Graph = field(kw_only=True)
    instructions: str = field(kw_only=True)

    def __repr__(self) -> str:
        # The graph is a plain pydantic model: its repr would show substituted secrets.
        return redact(
            f"AgentFile(spec={self.spec!r}, path={str(self.path)!r}, graph={self.graph!r}, "
            f"instructions={self.instructions!r})"
        )


def agent_json_schema() -> dict[str, Any]:
    """The JSON Schema of agent files."""
    schema = AgentSpec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def load_agent_file(
    path: str | Path,
    *,
    check_imports: bool = True,
    checks: Mapping[str, SectionCheck] | None = None,
) -> AgentFile:
    """Load and validate an agent file; raise AgentFileError with every problem. `checks`
    maps a top-level key to a check of its section, run when the file has that section,
    the section fits the schema and every `${VAR}` in it is set (else that is the problem
    to report, not what an empty value would make of it)."""
    path = Path(path).resolve()
    file = str(path)
    try:
        text = read_source(path)
    except SourceRefused as refused:
        raise AgentFileError([refused.problem]) from None
    data, value_lines, problems = parse_yaml(text, file)
    lines = key_first(value_lines)
    if data is None and problems:
        raise AgentFileError(problems)
    if not isinstance(data, dict):
        said = not_a_mapping(data, "an agent file", "`name:`, `model:`, `instructions:` …")
        raise AgentFileError([Problem("not-a-mapping", said, file, 1)])
    unset: set[str | int] = set()  # the top-level keys with a `${VAR}` that is not set

    def missing(name: str, where: tuple[str | int, ...]) -> None:
        unset.update(where[:1])
        message = f"${{{name}}} is not set in the environment"
        problems.append(Problem("env-missing", message, file, line_at(lines, where)))

    data = substitute_env(data, missing)
    tools_at: list[int] | None = None
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as err:
        problems += schema_problems(err, data, lines, file)
        # The parts that fit the schema are checked too: every problem at once.
        partial, tools_at = without_failures(data, err)
        try:
            spec = AgentSpec.model_validate(partial)
        except ValidationError:  # should not happen: every failure was left out
            raise AgentFileError(sorted(problems, key=lambda p: p.line or 0)) from None
    source = AgentSource(spec, path, lines)
    checker = _Checker(source, value_lines, check_imports, tools_at)
    problems += checker.problems
    for key, check in (checks or {}).items():
        if getattr(spec, key, None) is not None and key not in unset:
            problems += check(source)
    if problems:
        raise AgentFileError(sorted(problems, key=lambda p: (p.file != file, p.line or 0)))
    assert checker.graph is not None
    return AgentFile(spec, path, lines, graph=checker.graph, instructions=checker.instructions)


class _Checker:
    """The checks past the schema: instructions, model name, graph, tools, backends."""

    def __init__(
        self,
        source: AgentSource,
        value_lines: Lines,
        check_imports: bool,
        tools_at: list[int] | None = None,
    ) -> None:
        spec = source.spec
        self.spec, self.path, self.lines = spec, source.path, source.lines
        # Where each value starts: an inline graph's nodes are at their first line (`_graph`).
        self.value_lines = value_lines
        # Where each of `spec.tools` is in the file's `tools` (some left out: `without_failures`).
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
        self.problems.append(Problem(rule, message, str(self.path), line_at(self.lines, where)))

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
                f"no instructions file {err.name!r} in {folder}",  # (str(err) quotes more)
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
                # As for a graph file: keys at their lines, nodes at their first line inside.
                arch_lines = _under(self.value_lines, "architecture")
                lines = graph_lines(arch_lines, _under(self.lines, "architecture"))
                self.graph = graph_from_data(arch, file=str(self.path), lines=lines)
            else:
                # As everywhere (`library.graph_file`): a built-in name first, then a file,
                # here relative to the agent file's folder.
                local = self.path.parent / arch
                named_file = local.suffix.lower() in (".yaml", ".yml") or local.is_file()
                builtin = builtin_path(arch) is not None
                self.graph = load_graph(local if named_file and not builtin else arch)
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
        if key == "memory" and value == "sqlite::memory:":
            # A private database of one connection, which memory reopens (SqliteMemory
            # refuses it when made): said here, so `validate` and `from_file` agree.
            self.add(
                "backend",
                f"memory {value!r} would lose every row when its connection is reopened; "
                "use memory (kept as long as the process) or sqlite:PATH",
                key,
            )
            return
        if (
            value is None
            or value == "memory"
            or value.startswith(("sqlite:", "postgres://", "postgresql://"))
        ):
            return
        self.add("backend", f"{key} {value!r}: use memory, sqlite:PATH or postgres://…", key)


def _under(lines: Lines, key: str) -> Lines:
    """The lines of the part of the file under a top-level key, by its own data paths."""
    return {path[1:]: line for path, line in lines.items() if path[:1] == (key,)}
