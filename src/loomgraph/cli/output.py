"""What the `loomgraph` command prints: events, tables, JSON lines, results and exit codes,
and the run a command drives (for the line Ctrl-C prints).

Shared by `cli.main` and `cli.runs`; imports neither.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loomgraph.cli.console import colour, console, safe, say, warn
from loomgraph.protocols import EffectRecord, RunRecord, RunStatus, Transition
from loomgraph.protocols.events import RUN_COMPLETED, RUN_STARTED, Event

_STYLES = {
    "run_started": "bold cyan",
    "node_started": "cyan",
    "tool_call": "magenta",
    "tool_result": "green",
    "node_completed": "dim",
    "error": "bold red",
    "budget_warning": "yellow",
    "budget_exceeded": "bold red",
    "permission_decision": "yellow",
}

# Exit codes (docs/cli.md): 0 fine, 1 the run or the check failed, 2 bad usage or input,
# 3 the run waits for an answer (an approval, or an interrupt's value), 4 its budget ran out,
# 130 stopped by Ctrl-C, 141 its reader closed stdout (as a shell reports SIGPIPE: 128 + 13).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WAITING, EXIT_BUDGET = 0, 1, 2, 3, 4
# The run is being driven elsewhere (another process holds its lease): nothing was done; the
# same command may work later (sysexits' EX_TEMPFAIL).
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141
# What `--log-level` takes (`serve`, `worker`), in any case: argparse lists them on a typo.
LOG_LEVELS = ("debug", "info", "warning", "error")

_EXIT_OF_STATUS = {
    RunStatus.COMPLETED: EXIT_OK,
    RunStatus.AWAITING_APPROVAL: EXIT_WAITING,
    RunStatus.INTERRUPTED: EXIT_WAITING,
    RunStatus.BUDGET_EXHAUSTED: EXIT_BUDGET,
}


def exit_code(status: str) -> int:
    """The exit code for a run that ended with `status`."""
    return _EXIT_OF_STATUS.get(RunStatus(status), EXIT_FAILED)


# ------------------------------------------------------------------ the run a command drives

Sink = Callable[[Event], Awaitable[None]]


@dataclass(slots=True)
class DrivenRun:
    """The run a command drives (`run`; `runs resume | retry | fork | approve | deny`), as
    its events show it, so Ctrl-C can say how to go on with it, whichever command it was
    (`cli.main`). `given_runtime`: `--runtime` as the command line gave it."""

    given_runtime: str | None = None
    run_id: str | None = None
    # How the run last stopped in this command (its `run_completed`); None while it goes on.
    status: RunStatus | None = None

    def going_on(self, run_id: str) -> None:
        """The command goes on with `run_id` (a resume, an answer), before any event."""
        self.run_id, self.status = run_id, None

    def see(self, event: Event) -> None:
        """Follow the run through one of its events: a fork's or a new run's id from its
        `run_started` (the first only: a `map` node's child runs start later), its end."""
        if event.kind == RUN_STARTED and self.run_id is None:
            self.going_on(event.run_id)
        elif event.kind == RUN_COMPLETED and event.run_id == self.run_id:
            self.status = RunStatus(event.payload["status"])

    def sink(self, on_event: Sink) -> Sink:
        """`on_event`, the run's events followed (`see`) on their way to it."""

        async def seen(event: Event) -> None:
            self.see(event)
            await on_event(event)

        return seen

    @property
    def unfinished(self) -> bool:
        """Whether a run was left going on (Ctrl-C cancelled it) or waiting at a question
        asked here: `runs resume` goes on with it."""
        return self.run_id is not None and self.status in (None, RunStatus.INTERRUPTED)


def usage(message: str) -> int:
    """Print `loomgraph: message` on stderr; returns the bad-usage exit code."""
    warn(message)
    return EXIT_USAGE


# ------------------------------------------------------------------ events


def print_event(event: Any) -> None:
    """Print one event as a short human-readable line (model text streams inline)."""
    p = event.payload
    detail = {
        "model_chunk": lambda: repr(p["chunk"].get("text", "")),
        "run_started": lambda: f"run={event.run_id} graph={p['graph']} prompt={p['prompt']!r}",
        "node_started": lambda: f"{p['node']} (visit {p['visit']})",
        "tool_call": lambda: f"{p['call']['tool']}({json.dumps(p['call']['args'])})",
        "tool_result": lambda: (
            f"{p['call']['tool']} -> {p['result'].get('content', '')!r}"
            + (" [error]" if p["result"].get("is_error") else "")
        ),
        "node_completed": lambda: f"{p['node']} -> {p['next']}",
        "run_completed": lambda: (
            f"status={p['status']} output={p['output']!r}"
            + (f" reason={p['reason']}" if p["reason"] else "")
        ),
    }.get(event.kind, lambda: json.dumps(p, default=str)[:200])()
    line = f"[{event.seq:>3}] {event.kind:<15} {detail}"
    if event.kind == "run_completed":
        style = "bold green" if p["status"] == "completed" else "bold red"
    else:
        style = _STYLES.get(event.kind, "")
    say(line, style)
    if event.kind == "run_completed":
        print_request(p.get("result"))


def print_request(result: Any) -> None:
    """What a run stopped at an `interrupt` node asks, from its result (`pending`): the
    question (run text: `say` escapes it) and the type of the value it waits for, with its
    JSON Schema when that says more than the type's name. Nothing for any other result."""
    pending = result.get("pending") if isinstance(result, Mapping) else None
    if not isinstance(pending, Mapping) or not pending.get("type"):
        return  # not an interrupt's request (an approval's call is shown by its events)
    asks = f"      {pending.get('node', '')} asks for a value of type {pending['type']}"
    message = pending.get("message")
    say(asks + (f": {message}" if message else ""), "bold yellow")
    schema = pending.get("schema")
    if isinstance(schema, Mapping) and set(schema) - {"type"}:
        say(f"      the value's JSON Schema: {compact(schema)}", "yellow")


def emit_event(event: Any, as_json: bool) -> None:
    """Print one event: a JSON line with `--json` (ASCII: every control character escaped),
    else a human-readable line (`say` escapes what it holds)."""
    if as_json:
        print(json_line(event.to_dict()), flush=True)
    else:
        print_event(event)


def print_result(result: Any, as_json: bool) -> int:
    """Print how a resumed or forked run ended, as one line; returns its exit code. A run
    journaled with no answer (`output` None: a dead letter made before dead letters had
    `''`, a fleet run that never started) shows the empty answer `''`, as any other run
    that ended without one."""
    data = result.to_dict()
    if data.get("output") is None:
        data["output"] = ""
    if as_json:  # ASCII JSON: control characters escaped
        print(json_line({"result": data}))
    else:  # `say` escapes the run's reason and output
        say(
            f"run {result.run_id}: status={result.status} output={data['output']!r}"
            + (f" reason={result.reason}" if result.reason else ""),
            "bold green" if result.ok else "bold red",
        )
    return exit_code(result.status)


# ------------------------------------------------------------------ tables and records


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under a header: a rich table on a terminal, else left-aligned columns.
    Each cell is one line of terminal-safe text (`safe`): cells hold stored text."""
    rows = [[safe(str(c), newlines=False) for c in row] for row in rows]
    if colour():
        from rich.table import Table
        from rich.text import Text

        grid = Table(box=None, header_style="bold cyan", pad_edge=False)
        for name in head:
            grid.add_column(name, no_wrap=True)
        for row in rows:
            grid.add_row(*(Text(c) for c in row))  # Text: stored "[link=…]" is not markup
        console().print(grid)
        return
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=False)]
    for row in (head, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def when(at: float) -> str:
    """A timestamp as local `YYYY-MM-DD HH:MM:SS`, `-` when unset, or `?` and the stored
    value when it is no time (a damaged row: out of range, not a number)."""
    if not at:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, ValueError, TypeError, OSError):
        return f"?{at!r}"


def json_line(value: Any) -> str:
    """`value` as one line of ASCII JSON (`default=str`); a float that JSON cannot hold
    (infinity, NaN: a damaged row) as null, never the invalid `Infinity`."""
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def compact(value: Any) -> str:
    """A value as one line of JSON, safe for a terminal."""
    return safe(json.dumps(value, ensure_ascii=False, default=str), newlines=False)


def line(text: str) -> None:
    """Print text that holds stored text, terminal-safe (`safe`), in plain."""
    print(safe(text), flush=True)


def record_data(record: RunRecord) -> dict[str, Any]:
    """A run record as JSON-ready data, without its first state."""
    data = asdict(record)
    data.pop("initial", None)  # the first state: `show` prints the state separately
    return data


def transition_data(t: Transition) -> dict[str, Any]:
    """A transition as JSON-ready data (whether it has a snapshot, not the snapshot)."""
    return {
        "seq": t.seq,
        "node": t.node,
        "visit": t.visit,
        "next": t.next_node,
        "patch": t.patch,
        "usage": t.usage.to_dict(),
        "at": t.at,
        "snapshot": t.snapshot is not None,
    }


def print_runs(records: Sequence[RunRecord], as_json: bool) -> None:
    """`runs list`: one line (or JSON line) per run."""
    if as_json:
        for record in records:
            print(json_line(record_data(record)))
        return
    rows = [
        (
            r.run_id,
            r.status,
            r.user_id or "-",
            r.graph_name,
            when(r.created_at),
            f"{r.parent_run_id}@{r.parent_seq}" if r.parent_run_id else "",
        )
        for r in records
    ]
    table(("RUN", "STATUS", "USER", "GRAPH", "CREATED", "FORKED FROM"), rows)


def print_run(
    record: RunRecord,
    transitions: Sequence[Transition],
    effects: Sequence[EffectRecord],
    state: Any,
    as_json: bool,
) -> None:
    """`runs show`: a run's record, transitions, effects, state and result (stored text,
    shown terminal-safe: `safe`)."""
    if as_json:
        print(
            json_line(
                {
                    "run": record_data(record),
                    "transitions": [transition_data(t) for t in transitions],
                    "effects": [asdict(e) for e in effects],
                    "state": state,
                    "result": record.result,
                }
            )
        )
        return
    print_run_header(record)
    if record.reason:
        line(f"reason: {record.reason}")
    print()
    table(
        ("SEQ", "NODE", "VISIT", "NEXT"),
        [(t.seq, t.node, t.visit, t.next_node) for t in transitions],
    )
    statuses: dict[str, int] = {}
    for effect in effects:
        statuses[effect.status] = statuses.get(effect.status, 0) + 1
    # An effect found unfinished after a crash was `unknown_after_crash` until it ran again;
    # its row keeps that (`recovered`), whatever its status now.
    retried = [e.key for e in effects if e.recovered or e.attempts > 1]
    line(
        f"\neffects: {len(effects)} ("
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + ")"
        + (
            f"; unknown_after_crash, executed again after a crash: {', '.join(retried)}"
            if retried
            else ""
        )
    )
    print("\nstate:")
    line(json.dumps(state, indent=2, ensure_ascii=False, default=str))
    if isinstance(record.result, Mapping):
        line(f"\noutput: {compact(record.result.get('output'))}")
    elif record.result is not None:  # a damaged row: shown as it is
        line(f"\nresult (not a result object): {compact(record.result)}")


def print_run_header(record: RunRecord) -> None:
    """A run's first two lines in `runs show`: id, status, graph; user, session, times."""
    line(
        f"run {record.run_id}  status={record.status}  graph={record.graph_name} "
        f"({record.graph_hash})"
    )
    line(
        f"user={record.user_id or '-'}  session={record.session_id or '-'}  "
        f"created={when(record.created_at)}  updated={when(record.updated_at)}"
        + (
            f"  forked from {record.parent_run_id}@{record.parent_seq}"
            if record.parent_run_id
            else ""
        )
    )


def print_queued_run(record: RunRecord, job_id: int | None, as_json: bool) -> None:
    """`runs show` of a run submitted to the fleet that no worker started yet: its record,
    and no state, for it has none yet: its input is held by its queued job (`job_id`, None
    when the journal names none), and reaches the journal when a worker starts the run."""
    job = f" (job {job_id})" if job_id is not None else ""
    held = f"held by the fleet's queue{job} until a worker starts the run"
    if as_json:
        # No input field: the prompt is the job's, not the journal's, until a worker starts.
        data = {"run": record_data(record), "transitions": [], "effects": []}
        print(json_line({**data, "state": None, "result": None, "queued": {"job_id": job_id}}))
        return
    print_run_header(record)
    line(f"\nstate: none yet: run {record.run_id} is queued; its input is {held}")


def print_diff(
    changes: Mapping[str, tuple[Any, Any]], seq_a: int, seq_b: int, as_json: bool
) -> None:
    """`runs diff`: the state fields that changed between two checkpoints."""
    if as_json:
        print(json_line({k: {"before": a, "after": b} for k, (a, b) in changes.items()}))
        return
    if not changes:
        say(f"no change between {seq_a} and {seq_b}")
    for name, (old, new) in changes.items():
        say(f"{name}:", "bold")
        if isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old:
            for item in new[len(old) :]:  # an append reducer: show only what was added
                say(f"  + {compact(item)}", "green")
        else:
            say(f"  - {compact(old)}", "red")
            say(f"  + {compact(new)}", "green")
