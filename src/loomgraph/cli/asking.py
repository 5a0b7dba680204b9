"""Asking the person at the terminal: the value an `interrupt` node waits for, and whether a
tool call a rule asks about may run. One way of asking for both: a line read from the
terminal, at most `TRIES` times, an empty line or Ctrl-D leaving the run waiting.

Imported when `console.can_ask` says someone is there to ask (and for `value_of`, by
`runs resume --value`; and for `next_line`, by `--approve` in a pipe, which reads its answers
as they were given, ahead of the prompt too): a pipe, a file, `--json` or `--no-input` are
never asked otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from loomgraph.cli.console import safe, warn
from loomgraph.engine.effects import Approval, BoundValue
from loomgraph.protocols import Decision, RunStatus, Runtime, ToolCall

# A wrong answer is refused with the reason and asked again, this many times in all; then
# the run is left waiting, as after Ctrl-D.
TRIES: Final = 3
# Who the journal and the audit log name as the approver of an answer given here.
APPROVER: Final = "terminal"

# Goes on with the run given an answer (`resume_input`); its result (as a dict) once it stops.
GoOn = Callable[[Any], Awaitable[Mapping[str, Any]]]


def value_of(text: str) -> Any:
    """An answer as typed (or given as `--value`): the JSON value the text is, else the
    text itself, a plain string (quote text that reads as JSON: `"42"`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ------------------------------------------------------------------ reading a line

# Bytes read past the line a prompt took (a pasted block): dropped at the next prompt.
_TYPED = bytearray()


async def read_line(prompt: str) -> str | None:
    """Print `prompt` on stdout and read one line typed after it, without holding up the
    event loop (a run's lease is kept alive meanwhile); None at the end of input (Ctrl-D),
    or after `TRIES` lines that are not UTF-8 text."""
    for _ in range(TRIES):
        # What was typed before this prompt (the rest of a pasted block, keys pressed ahead)
        # never answers it: it was not typed in answer to what the prompt shows.
        _discard_typed_ahead()
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = await next_line()
        if line is None:  # Ctrl-D: the next output starts on a line of its own
            sys.stdout.write("\n")
            return None
        try:
            return line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:  # mangled into U+FFFD it would answer something else
            warn("not UTF-8 text; try again", "yellow")
    return None


async def next_line() -> bytes | None:
    """The next line from stdin (what was typed before Ctrl-D counts as one), read without
    holding up the event loop, so Ctrl-C cancels the wait at once; None at the end of input."""
    while b"\n" not in _TYPED:
        chunk = await _read_some()
        if not chunk:  # Ctrl-D: what was typed before it, else nothing
            if not _TYPED:
                return None
            break
        _TYPED.extend(chunk)
    line, _, rest = bytes(_TYPED).partition(b"\n")
    _TYPED[:] = rest
    return line


def _discard_typed_ahead() -> None:
    """Forget what stdin holds unread: this process's buffer and the terminal's own."""
    _TYPED.clear()
    fd = sys.stdin.fileno()
    if os.isatty(fd):
        import termios

        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(fd, termios.TCIFLUSH)


async def _read_some() -> bytes:
    """What stdin has for us once it has anything (a line, or Ctrl-D: b"")."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no file behind it (a test's StringIO)
        return sys.stdin.readline().encode("utf-8", "surrogateescape")
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except PermissionError:  # a file (`< answers`, /dev/null): epoll refuses it; never blocks
        ready.set_result(None)
    else:
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal went away (EIO): nobody is there to answer
        return b""


# ------------------------------------------------------------------ an interrupt's question


def question_of(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The question a run's result (as a dict) waits at: its `pending` with the type asked
    for, or None (it completed, failed, or awaits an approval)."""
    pending = result.get("pending")
    if result.get("status") != RunStatus.INTERRUPTED or not isinstance(pending, Mapping):
        return None
    return pending if pending.get("type") else None


async def answer_questions(
    result: Mapping[str, Any], runtime: Runtime, go_on: GoOn
) -> Mapping[str, Any]:
    """While the run (`result`) waits at an `interrupt` node, ask its question here and go
    on with the answer (`go_on`, bound to the question's key); the result it stopped with
    last. An answer not given (Ctrl-D, an empty line, `TRIES` wrong ones) leaves it waiting."""
    while (pending := question_of(result)) is not None:
        answer = await ask_value(str(result.get("run_id", "")), pending, runtime)
        if answer is None:
            return result
        result = await go_on(resume_input(answer))
    return result


def resume_input(answer: BoundValue) -> Any:
    """What `Agent.resume(value=...)` is given: the answer bound to its question's key, or
    the plain value for a run journaled before questions had keys (answered by node)."""
    return answer if answer.key else answer.value


async def ask_value(run_id: str, pending: Mapping[str, Any], runtime: Runtime) -> BoundValue | None:
    """Ask for the value `pending` waits for (the question is printed already, with its
    event): read as `--value` is, checked as `Agent.resume(value=...)` checks it; a wrong
    one refused with the reason and asked again. None when none was given."""
    key, asked = str(pending.get("key") or ""), str(pending["type"])
    prompt = (
        f"answer ({safe(asked, newlines=False)}: JSON, or text for a string; "
        "empty or Ctrl-D: not now)> "
    )
    for _ in range(TRIES):
        text = await read_line(prompt)
        if text is None or not text.strip():
            return None
        answer = BoundValue(value_of(text), key)
        problem = await _problem(runtime, run_id, answer)
        if problem is None:
            return answer
        warn(f"{problem}; try again", "yellow")
    warn(f"no answer after {TRIES} tries", "yellow")
    return None


async def _problem(runtime: Runtime, run_id: str, answer: BoundValue) -> str | None:
    """Why the run refuses `answer` (the check `Agent.resume(value=...)` makes, on the run as
    the journal has it now), or None. A question answered meanwhile elsewhere is no wrong
    value to retry: `ValueNotPending` is raised, as for `runs resume --request`."""
    from loomgraph.agent.answers import resume_value
    from loomgraph.agent.checkpoints import ResumeError, ValueNotPending

    record = await runtime.load_run(run_id)
    if record is None:
        return f"run {run_id} is not in the journal"
    try:
        resume_value(record, resume_input(answer))
    except ValueNotPending:
        raise
    except ResumeError as err:
        return str(err)
    return None


# ------------------------------------------------------------------ an approval


def approval_question(call: ToolCall, decision: Decision) -> str:
    """What a call a rule asks about is, and why it asks, terminal-safe (the reason may come
    from a policy callable)."""
    why = safe(f"{decision.rule}{': ' + decision.reason if decision.reason else ''}")
    return f"{safe(call['tool'])}({json.dumps(call['args'])}) needs approval ({why})"


class TerminalApprover:
    """The approval handler of a command someone runs at a terminal: approve, deny, or
    approve with edited arguments (a JSON object, which meets the rules again). Not
    answering (Ctrl-D, an empty line, `TRIES` answers it cannot read) leaves the run waiting
    when its journal keeps it (`can_wait`), else denies the call: nobody could answer later.
    `pause` takes the live status line away while asking."""

    def __init__(
        self,
        *,
        can_wait: bool,
        pause: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.can_wait = can_wait
        self.pause = pause
        # Calls asked about at once (a `map` node's branches) are asked one after another:
        # one terminal, one question on it at a time.
        self._one_at_a_time = asyncio.Lock()

    async def __call__(self, call: ToolCall, decision: Decision) -> Approval | None:
        """Ask about `call`; the answer, or None to stop the run and wait."""
        async with self._one_at_a_time:
            with self.pause() if self.pause is not None else nullcontext():
                sys.stdout.write(f"\nloomgraph: {approval_question(call, decision)}\n")
                answer = await self._ask(call)
        if answer is not None:
            return answer
        if self.can_wait:
            return None
        return Approval(call["id"], False, approver=APPROVER, reason="not approved on the terminal")

    async def _ask(self, call: ToolCall) -> Approval | None:
        later = "leave it waiting" if self.can_wait else "no"
        prompt = f"allow? [y]es, [n]o, [e]dit the arguments; empty or Ctrl-D: {later}> "
        for _ in range(TRIES):
            text = await read_line(prompt)
            if text is None or not text.strip():
                return None
            word = text.strip().lower()
            if word in ("y", "yes"):
                return Approval(call["id"], True, approver=APPROVER)
            if word in ("n", "no"):
                return Approval(call["id"], False, approver=APPROVER, reason="denied")
            if word in ("e", "edit"):
                edited = await _edited(call)
                if edited is None:
                    return None
                return Approval(call["id"], True, edited, APPROVER)
            warn(f"{safe(word, newlines=False)!r} is not y, n or e; try again", "yellow")
        return None


async def _edited(call: ToolCall) -> dict[str, Any] | None:
    """The call's arguments as the person edits them: a JSON object, asked `TRIES` times."""
    print(f"the arguments now: {json.dumps(call['args'])}", flush=True)
    for _ in range(TRIES):
        text = await read_line("the arguments to run it with (a JSON object)> ")
        if text is None or not text.strip():
            return None
        try:
            edited = json.loads(text)
        except json.JSONDecodeError as err:
            warn(f"not JSON: {err}; try again", "yellow")
            continue
        if isinstance(edited, dict):
            return edited
        warn("the arguments must be a JSON object; try again", "yellow")
    return None
