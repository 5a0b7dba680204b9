"""The contracts package: Usage arithmetic and JSON shape, statuses, event kinds, checks."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

import loomgraph.protocols as protocols
from loomgraph.agent.result import RunResult
from loomgraph.protocols import (
    EVENT_KINDS,
    FINAL_STATUSES,
    AuditLog,
    EffectStatus,
    RunStatus,
    ToolCall,
    ToolHost,
    ToolResult,
    ToolSpec,
    Usage,
    implements,
)

PACKAGE = Path(protocols.__file__).parent


# --------------------------------------------------------------------------- Usage


def test_usage_adds_field_by_field() -> None:
    a = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25, model_calls=1)
    b = Usage(input_tokens=1, cache_read_tokens=7, tool_calls=2, cost_usd=0.5)
    assert a + b == Usage(
        input_tokens=11,
        output_tokens=5,
        cache_read_tokens=7,
        model_calls=1,
        tool_calls=2,
        cost_usd=0.75,
    )
    assert sum([a, b]) == a + b
    assert a + Usage() == a
    total = Usage()
    total += a
    assert total == a and Usage() == Usage()  # frozen: `+=` makes a new value
    with pytest.raises(TypeError):
        a + {"input_tokens": 1}  # type: ignore[operator]


def test_usage_totals_and_truth() -> None:
    usage = Usage(input_tokens=3, cache_read_tokens=4, cache_write_tokens=5, output_tokens=6)
    assert usage.prompt_tokens == 12 and usage.total_tokens == 18
    assert not Usage() and Usage(tool_calls=1) and Usage(cost_usd=0.1)
    with pytest.raises(AttributeError):
        usage.input_tokens = 1  # type: ignore[misc]


def test_usage_json_shape_leaves_out_zero_fields() -> None:
    usage = Usage(input_tokens=400, output_tokens=0, cache_read_tokens=600, cost_usd=0.0)
    assert usage.to_dict() == {"input_tokens": 400, "cache_read_tokens": 600}
    assert Usage().to_dict() == {}
    assert Usage.from_dict(json.loads(json.dumps(usage.to_dict()))) == usage
    assert Usage.from_dict({}) == Usage()


def test_usage_from_external_data_refuses_unknown_keys_and_non_numbers() -> None:
    with pytest.raises(ValueError, match=r"unknown usage key\(s\) 'prompt_tokens'"):
        Usage.from_dict({"input_tokens": 1, "prompt_tokens": 2})
    with pytest.raises(ValueError, match="must be a number"):
        Usage.from_dict({"input_tokens": "1"})
    with pytest.raises(ValueError, match="must be a number"):
        Usage.from_dict({"input_tokens": True})
    # The journal's own rows are trusted: no checks.
    assert Usage.from_dict({"output_tokens": 2}, trusted=True) == Usage(output_tokens=2)
    assert Usage.from_dict({"output_tokens": 2, "x": 1}, trusted=True) == Usage(output_tokens=2)


def test_run_result_keeps_usage_typed_and_its_dict_json_shaped() -> None:
    result = RunResult(
        "out", "r1", None, "u1", "completed", usage=Usage(input_tokens=2, model_calls=1)
    )
    assert result.status is RunStatus.COMPLETED and result.ok
    data = result.to_dict()
    assert data["usage"] == {"input_tokens": 2, "model_calls": 1}
    assert type(data["status"]) is str and data["status"] == "completed"
    again = RunResult.from_dict(json.loads(json.dumps(data)))
    assert again == result and again.usage == Usage(input_tokens=2, model_calls=1)


# --------------------------------------------------------------------------- statuses


def test_statuses_keep_their_journal_strings() -> None:
    assert [s.value for s in RunStatus] == [
        "queued",
        "running",
        "completed",
        "failed",
        "limit_reached",
        "budget_exhausted",
        "interrupted",
        "awaiting_approval",
        "cancelled",
        "dead_letter",
    ]
    assert [s.value for s in EffectStatus] == ["pending", "done", "failed", "unknown_after_crash"]
    assert RunStatus("completed") is RunStatus.COMPLETED and RunStatus.FAILED == "failed"
    assert json.dumps({"s": RunStatus.CANCELLED}) == '{"s": "cancelled"}'
    assert f"{RunStatus.INTERRUPTED}" == "interrupted" == str(RunStatus.INTERRUPTED)


def test_one_definition_of_final() -> None:
    assert {"completed", "limit_reached", "budget_exhausted"} == FINAL_STATUSES
    assert {s for s in RunStatus if s.final} == FINAL_STATUSES


# --------------------------------------------------------------------------- events


def test_every_event_kind_is_a_constant() -> None:
    from loomgraph.protocols import events

    constants = {
        value
        for name, value in vars(events).items()
        if name.isupper() and isinstance(value, str) and name != "EVENT_KINDS"
    }
    assert constants == EVENT_KINDS
    assert {"budget_warning", "permission_decision", "model_retry", "node_retry"} <= EVENT_KINDS


def test_no_bare_event_kind_strings_in_emit_calls() -> None:
    """`emit("kind", …)` names its kind through a constant, everywhere in the package."""
    src = PACKAGE.parent
    offenders = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                offenders.append(f"{path.relative_to(src)}:{node.lineno}")
    assert offenders == []


# --------------------------------------------------------------------------- the package


def test_every_public_name_is_exported() -> None:
    names = set(protocols.__all__)
    assert len(names) == len(protocols.__all__)
    for module in PACKAGE.glob("*.py"):
        if module.name == "__init__.py":
            continue
        mod = __import__(f"loomgraph.protocols.{module.stem}", fromlist=["__all__"])
        exported = set(getattr(mod, "__all__", ()))
        if module.stem == "events":
            exported = {n for n in vars(mod) if n.isupper() or n == "Event"} - {"Any", "Final"}
        assert exported <= names, module.name


def test_modules_are_small_and_import_only_errors_and_each_other() -> None:
    for module in PACKAGE.glob("*.py"):
        text = module.read_text()
        assert len(text.splitlines()) <= 400, module.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loomgraph"):
                assert node.module == "loomgraph.errors" or node.module.startswith(
                    "loomgraph.protocols"
                ), f"{module.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("loomgraph") for a in node.names), module.name
    assert not (PACKAGE / "contracts.py").exists()


# --------------------------------------------------------------------------- checks


class _OldHost:
    """A tool host written before close() joined the protocol."""

    def specs(self) -> list[ToolSpec]:
        return []

    def spec(self, name: str) -> ToolSpec | None:
        return None

    async def call(self, call: ToolCall, *, idempotency_key: str) -> ToolResult:
        return {"content": ""}


class _NewHost(_OldHost):
    async def close(self) -> None:
        pass


def test_close_is_optional_at_runtime_only() -> None:
    assert implements(_NewHost(), ToolHost) and isinstance(_NewHost(), ToolHost)
    assert implements(_OldHost(), ToolHost) and not isinstance(_OldHost(), ToolHost)

    class NoCall:
        def specs(self) -> list[Any]:
            return []

        def spec(self, name: str) -> None:
            return None

    assert not implements(NoCall(), ToolHost)
    assert not implements(object(), AuditLog)


async def test_every_built_in_backend_has_close(tmp_path: Path) -> None:
    from loomgraph.governance import StandardBudget
    from loomgraph.governance.null import NoBudget
    from loomgraph.memory.in_memory import InMemoryMemory
    from loomgraph.memory.null import NoMemory
    from loomgraph.observability import FileAuditLog, NoAuditLog
    from loomgraph.protocols import Budget, Memory, Runtime
    from loomgraph.runtime.memory import InMemoryRuntime
    from loomgraph.tools.registry import ToolRegistry

    backends: list[tuple[Any, type]] = [
        (NoBudget(), Budget),
        (StandardBudget(), Budget),
        (NoAuditLog(), AuditLog),
        (FileAuditLog(tmp_path / "audit.jsonl", unsigned=True), AuditLog),
        (NoMemory(), Memory),
        (InMemoryMemory(), Memory),
        (ToolRegistry(), ToolHost),
        (InMemoryRuntime(), Runtime),
    ]
    for backend, protocol in backends:
        assert isinstance(backend, protocol), type(backend).__name__
        await backend.close()
        await backend.close()  # closing twice is harmless


def test_model_error_takes_a_usage_or_its_dict_shape() -> None:
    from loomgraph.protocols import ModelError

    assert ModelError("x").usage == Usage()
    assert ModelError("x", usage=Usage(input_tokens=3)).usage == Usage(input_tokens=3)
    legacy: Any = {"input_tokens": 3}
    assert ModelError("x", usage=legacy).usage == Usage(input_tokens=3)
