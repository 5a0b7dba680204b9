"""Load graphs from YAML (keeping line numbers), from dicts, or by built-in name; dump to YAML."""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from loomgraph.authoring.parsed_graphs import read_parsed
from loomgraph.errors import GraphError, GraphValidationError, LoomgraphError, Problem
from loomgraph.graph.spec import Graph

if TYPE_CHECKING:
    from loomgraph.protocols.safe_yaml import Lines

MAX_YAML_BYTES = 1_000_000


class SourceRefused(LoomgraphError):
    """A YAML file not read: missing, not a regular file, over MAX_YAML_BYTES or not UTF-8;
    `problem` says which (rule `unreadable-file` or `yaml-too-large`), naming the file."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _too_large(file: str | None) -> Problem:
    return Problem("yaml-too-large", f"file over {MAX_YAML_BYTES} bytes", file, None)


def read_source(path: str | Path) -> str:
    """The text of a graph or agent file, read bounded: a regular file (a FIFO or device is
    refused unread, opened without waiting), at most MAX_YAML_BYTES bytes (one more is read to
    tell), UTF-8. SourceRefused says why not."""
    file = str(path)
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise SourceRefused(Problem("unreadable-file", str(err), file)) from None
    try:
        # Checked on the descriptor before it is wrapped: `fdopen` of a folder raises
        # IsADirectoryError naming the descriptor, not the file.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceRefused(
                Problem("unreadable-file", "not a regular file (a FIFO, device or folder)", file)
            )
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        try:
            data = stream.read(MAX_YAML_BYTES + 1)
        except OSError as err:
            raise SourceRefused(Problem("unreadable-file", str(err), file)) from None
    if len(data) > MAX_YAML_BYTES:
        raise SourceRefused(_too_large(file))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceRefused(Problem("unreadable-file", str(err), file)) from None


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path) or "the top level"


# The validation rule of each kind of YamlRefused; the others are `yaml-syntax`.
_REFUSAL_RULES = {"alias": "yaml-alias", "depth": "yaml-too-deep"}


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, Lines, list[Problem]]:
    """Parse YAML text into plain data and a map from data paths to source lines (where
    each value starts: a built-in graph's parsed twin keeps this map)."""
    data, lines, _, problems = _parse(text, file)
    return data, lines, problems


def _parse(text: str, file: str | None) -> tuple[Any, Lines, Lines, list[Problem]]:
    """`parse_yaml`, and the line of each mapping key (`Located.key_lines`)."""
    # Bytes, as a file is read (`read_source`): a character takes up to four.
    if len(text) > MAX_YAML_BYTES or (
        4 * len(text) > MAX_YAML_BYTES
        and len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES
    ):
        return None, {}, {}, [_too_large(file)]
    # Imported here: an agent on a built-in graph reads it parsed ahead (`parsed_graphs`).
    import yaml

    from loomgraph.protocols.safe_yaml import BoundedLoader, YamlRefused, locate

    try:
        loader = BoundedLoader(text)  # checks every character first: a NUL raises here
    except yaml.reader.ReaderError as err:
        at = text.count("\n", 0, err.position) + 1
        return None, {}, {}, [Problem("yaml-syntax", str(err), file, at)]
    try:
        located = locate(loader, past_keys=True)  # each key that is no text, a problem
    except YamlRefused as refused:
        kind = _REFUSAL_RULES.get(refused.kind, "yaml-syntax")
        return None, {}, {}, [Problem(kind, str(refused), file, refused.line)]
    except RecursionError:  # the depth limit should stop it first; never a traceback
        deep = str(YamlRefused("depth", None))
        return None, {}, {}, [Problem("yaml-too-deep", deep, file, None)]
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        return None, {}, {}, [Problem("yaml-syntax", str(err.problem or err), file, line)]
    except yaml.YAMLError as err:
        return None, {}, {}, [Problem("yaml-syntax", str(err), file, None)]
    finally:
        loader.dispose()
    problems = [
        Problem(
            "duplicate-name",
            f"key {dup.key!r} appears twice in {_dotted(dup.mapping)}",
            file,
            dup.line,
        )
        for dup in located.duplicates
    ]
    problems += [Problem("yaml-key", str(key), file, key.line) for key in located.refused_keys]
    problems.sort(key=lambda problem: problem.line or 0)
    return located.data, located.lines, located.key_lines, problems


def graph_lines(lines: Lines, key_lines: Lines) -> Lines:
    """The line map a graph's problems are reported by: each mapping key at its own line (a
    misspelt param, a field's `type:`, an unknown top-level key: where it is written, also
    when its value is a block below it), except a node (`nodes.NAME`), at the first line
    inside it, where node-level problems are reported (validation.md); list items and the
    whole file where their values start."""
    merged = {**lines, **key_lines}
    for path, line in lines.items():
        if len(path) == 2 and path[0] == "nodes":
            merged[path] = line
    return merged


def not_a_mapping(data: Any, what: str, keys: str) -> str:
    """What is wrong with a file's top level that is no mapping (`what`: "a graph"): an
    empty file (nothing but blanks and comments) is said to be empty, with the `keys` the
    mapping would hold."""
    if data is None:
        return f"the file is empty: {what} is a mapping of {keys}"
    return f"{what} must be a mapping, got {type(data).__name__}"


def graph_from_data(
    data: Any,
    *,
    file: str | None = None,
    lines: Lines | None = None,
    problems: list[Problem] | None = None,
    validate: bool = True,
) -> Graph:
    """Build and validate a Graph from data; raise GraphValidationError with every problem."""
    problems = list(problems or [])
    lines = lines or {}
    if not isinstance(data, Mapping):
        said = not_a_mapping(data, "a graph", "`name:`, `entry:`, `nodes:` and `edges:`")
        problems.append(Problem("not-a-mapping", said, file, lines.get(())))
        raise GraphValidationError(problems)
    try:
        graph = Graph.model_validate(data)
    except ValidationError as err:
        found = schema_problems(err, lines, file)
        if validate:
            found += beyond_schema(data, err, file, lines)
        raise GraphValidationError(problems + _by_line(found)) from None
    graph.read_from(file, dict(lines))
    graph._resolver = resolve_graph_ref
    if validate:
        from loomgraph.authoring.validate import validate_graph

        # A graph shipped with loomgraph had its flow checked by loomgraph's own test suite
        # (tests/test_strategies.py), and so has any graph taking the same routes (a copy
        # with other limits, prompts or models): building an agent on one need not import
        # networkx.
        problems.extend(validate_graph(graph, flow=not _routes_checked(graph, file)))
    if problems:
        raise GraphValidationError(problems)
    if validate:
        graph.memo().validated = True
    return graph


def beyond_schema(
    data: Mapping[str, Any], err: ValidationError, file: str | None, lines: Lines
) -> list[Problem]:
    """The problems of the parts of a graph that fit the schema, for a graph that does not:
    what failed (a top-level key, a node, an edge) is left out (`past_schema.without_failures`),
    the rest is validated, and a rule that reads what was left out is not reported. So every
    problem that can be found is reported at once, not only the schema's."""
    from loomgraph.authoring.past_schema import without_failures  # only for a failed graph

    part = without_failures(data, err, graph_keys())
    try:
        graph = Graph.model_validate(part.data)
    except (ValidationError, TypeError):  # should not happen: every failure was left out
        return []
    graph.read_from(file, part.renumbered(lines))
    graph._resolver = resolve_graph_ref
    from loomgraph.authoring.validate import validate_graph

    found = validate_graph(graph, flow=not _routes_checked(graph, file))
    return [p for p in found if part.knows(p.rule)]


def _by_line(problems: list[Problem]) -> list[Problem]:
    """Problems in file order (those without a line last), ties as they came."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def schema_problems(err: ValidationError, lines: Lines, file: str | None) -> list[Problem]:
    """Pydantic's errors as `schema` problems, each at the line of its data path; an unknown
    top-level key names the keys a graph has, with the closest one."""
    return [
        Problem(
            "schema",
            _unknown_key(e["loc"][0])
            if e["type"] == "extra_forbidden" and len(e["loc"]) == 1
            else f"{_dotted(tuple(e['loc']))}: {e['msg']}",
            file,
            nearest_line(lines, tuple(e["loc"])),
        )
        for e in err.errors()
    ]


def _unknown_key(key: str | int) -> str:
    known = graph_keys()
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r} at the top level{hint}; a graph has: {', '.join(known)}"


def graph_keys() -> list[str]:
    """The top-level keys of a graph file, in the spec's order."""
    return [field.alias or name for name, field in Graph.model_fields.items()]


def nearest_line(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    """The source line of a data path, or of its nearest ancestor that has one."""
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def graph_from_yaml(text: str, *, file: str | None = None) -> Graph:
    """Load and validate a graph from YAML text."""
    data, lines, key_lines, problems = _parse(text, file)
    if data is None and problems:
        raise GraphValidationError(problems)
    return graph_from_data(data, file=file, lines=graph_lines(lines, key_lines), problems=problems)


def load_graph_file(path: str | Path) -> Graph:
    """Load and validate a graph file (a built-in one as parsed ahead, when that is current)."""
    path = Path(path)
    try:
        text = read_source(path)
    except SourceRefused as refused:
        raise GraphValidationError([refused.problem]) from None
    parsed = read_parsed(path, text) if _shipped(str(path)) else None
    if parsed is not None:
        data, lines = parsed
        return graph_from_data(data, file=str(path), lines=lines)
    return graph_from_yaml(text, file=str(path))


@cache
def builtin_dir() -> Path:
    """The folder of the built-in graph files (inside the wheel, or the source checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "graphs", here.parent.parent / "graphs"):
        if candidate.is_dir():
            return candidate
    raise GraphError(f"built-in graphs not found next to {here}")


def _shipped(file: str | None) -> bool:
    """Whether `file` is one of the built-in graph files."""
    return file is not None and Path(file).resolve().parent == builtin_dir()


def _routes_checked(graph: Graph, file: str | None) -> bool:
    """Whether the graph is a built-in one, or takes exactly the routes of the built-in graph
    of its name: the flow rules depend on nothing else (see `routes`)."""
    if _shipped(file):
        return True
    path = builtin_path(graph.name)  # None for any name but a built-in one: never a path
    return path is not None and routes(_loaded(path)) == routes(graph)


def routes(graph: Graph) -> tuple[Any, ...]:
    """What the flow rules (reachability, loops, ways to END) read of a graph: its entry,
    its nodes with their `on_error` nodes, and its edges in order, each with whether it has
    a condition (what the condition says does not matter to them)."""
    return (
        graph.entry,
        tuple((name, spec.on_error) for name, spec in graph.nodes.items()),
        tuple((edge.source, edge.target, edge.when is None) for edge in graph.edges),
    )


def builtin_path(name: str) -> Path | None:
    """The file of the built-in graph `name` (`plan-execute`, or `plan_execute`), or None
    when no built-in graph has that name. A name is looked up, never made a path: a graph's
    `name: ../../elsewhere` must not read another file."""
    return _builtin_files().get(name.replace("-", "_"))


@cache
def _builtin_files() -> dict[str, Path]:
    return {path.stem: path for path in builtin_dir().glob("*.yaml") if path.is_file()}


def load_graph_file_cached(path: Path) -> Graph:
    """A graph file, parsed and validated once for as long as the file is unchanged; each
    call gets a copy of its own, so editing it (its limits, a prompt) changes no other
    Agent's graph. The copy shares what was worked out from the file (`Graph.memo`: its
    validation, its compiled form) for as long as it is not edited."""
    return _loaded(path).model_copy(deep=True)


def _loaded(path: Path) -> Graph:
    """The one parsed graph of a file (never handed out: `load_graph_file_cached`)."""
    resolved = path.resolve()
    return _load_cached(resolved, resolved.stat().st_mtime_ns)


@cache
def _load_cached(path: Path, mtime_ns: int) -> Graph:
    return load_graph_file(path)


def resolve_graph_ref(ref: str, parent: Graph) -> Graph:
    """The graph a node of `parent` names, by the rule `library.graph_file` follows: a
    built-in graph's name first, then an existing file (whatever its suffix, `Loop.YAML` or
    none), relative to `parent`'s file, else to the working directory."""
    builtin = builtin_path(ref)
    if builtin is not None:
        return load_graph_file_cached(builtin)
    near = [Path(parent.source).parent / ref] if parent.source else []
    for candidate in (*near, Path(ref)):
        if candidate.is_file():
            return load_graph_file_cached(candidate)
    raise GraphError(f"no graph {ref!r}: neither a graph file nor a built-in graph")


def graph_to_yaml(graph: Graph) -> str:
    """The graph as YAML text; loading it back gives an equal graph."""
    import yaml

    return yaml.safe_dump(graph.to_data(), sort_keys=False, allow_unicode=True, width=100)
