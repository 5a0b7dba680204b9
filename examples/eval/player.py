"""Scripted models that play "a model that follows ReAct", carefully or sloppily.

Each reads the task from the request and decides its next tool call from what the task asks:
`careful` makes every call the task needs, `sloppy` only the first (and cancels late orders
nobody asked it to cancel), unless the prompt carries lessons from an earlier attempt. They
also answer the `plan-execute` planner and the `reflexion` evaluator, so the three strategies
can be compared on the same player.
"""

from __future__ import annotations

import json
import re
from typing import Any

from loomgraph.models.scripted import ScriptedModel, Turn
from loomgraph.protocols import ModelRequest

_WEATHER = re.compile(r"weather in (\w+)", re.I)
_CONVERT = re.compile(r"convert (\d+(?:\.\d+)?) ([A-Z]{3}) to ([A-Z]{3})", re.I)
_ORDER = re.compile(r"order ([A-Z]\d\d)\b", re.I)


def needed_calls(task: str) -> list[dict[str, Any]]:
    """The tool calls a task needs, in the order it mentions them."""
    found: list[tuple[int, dict[str, Any]]] = []
    for m in _WEATHER.finditer(task):
        found.append((m.start(), {"tool": "get_weather", "args": {"city": m.group(1)}}))
    for m in _CONVERT.finditer(task):
        args = {"amount": float(m.group(1)), "source": m.group(2), "target": m.group(3)}
        found.append((m.start(), {"tool": "convert_currency", "args": args}))
    for m in _ORDER.finditer(task):
        found.append((m.start(), {"tool": "order_status", "args": {"order_id": m.group(1)}}))
    return [call for _, call in sorted(found, key=lambda pair: pair[0])]


def _task(request: ModelRequest) -> str:
    first = next(m for m in request.messages if m.get("role") == "user")
    text = str(first.get("content") or "")
    step = re.search(r"Do this step: (.*)", text)
    return step.group(1) if step else text


def _results(request: ModelRequest) -> list[str]:
    return [str(m.get("content")) for m in request.messages if m.get("role") == "tool"]


def _respond(request: ModelRequest, careful: bool) -> Turn:
    """Answer a forced `respond` call: a plan, a replan, or an evaluation."""
    prompt = str(request.messages[-1].get("content") or "")
    schema = json.dumps(list(request.tools))
    if '"score"' in schema:  # reflexion's evaluator: does the answer cover every part?
        task = re.search(r"Task: (.*)", prompt)
        answer = re.search(r"Answer: (.*)", prompt, re.S)
        parts = needed_calls(task.group(1) if task else "")
        text = answer.group(1) if answer else ""
        missing = [c for c in parts if str(list(c["args"].values())[-1]) not in text]
        score = 1.0 if not missing else 0.3
        feedback = "complete" if not missing else f"missing {len(missing)} part(s)"
        value: dict[str, Any] = {"score": score, "feedback": feedback}
    elif "Results so far" in prompt:  # plan-execute's replanner: done, with the results
        results = re.findall(r"^- (.*)$", prompt, re.M)
        value = {"done": True, "answer": " ".join(results)}
    else:  # plan-execute's planner: one step per part of the task
        task = prompt.partition(": ")[2].split("\n")[0]
        parts = re.split(r"\band\b|;", task)
        value = {"steps": [p.strip() for p in parts if p.strip()], "parallel": False}
    return Turn(tool_calls=[{"id": "respond", "tool": "respond", "args": value}])


def _act(request: ModelRequest, careful: bool) -> Turn:
    """A ReAct turn: the next needed tool call, or the answer from the results."""
    task = _task(request)
    prompt = str(request.messages[0].get("content") or "")
    careful = careful or "Lessons from earlier attempts" in prompt
    done = _results(request)
    needed = needed_calls(task)
    if not careful:
        if "late" in task.lower() and not done:
            order = _ORDER.search(task)
            if order:
                call = {"tool": "cancel_order", "args": {"order_id": order.group(1)}}
                return _call(call, request)
        needed = needed[:1]
    if len(done) < len(needed):
        return _call(needed[len(done)], request)
    return Turn(text=" ".join(done) if done else "I cannot help with that.")


def _call(call: dict[str, Any], request: ModelRequest) -> Turn:
    return Turn(
        tool_calls=[{"id": f"c{request.call_index}", "tool": call["tool"], "args": call["args"]}]
    )


def player(careful: bool) -> ScriptedModel:
    """The player: careful (every needed call) or sloppy (the first only)."""

    def turn(request: ModelRequest) -> Turn:
        if request.tool_choice == "respond":
            return _respond(request, careful)
        if request.tool_choice is None and not request.tools:  # reflexion's reflect node
            return Turn(text="Call a tool for every part of the task, then answer.")
        return _act(request, careful)

    return ScriptedModel(turn, name="careful" if careful else "sloppy")


careful = player(True)
sloppy = player(False)
