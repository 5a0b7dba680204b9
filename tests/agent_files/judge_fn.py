"""A function a graph file next to it names as `judge_fn:judge`."""

from typing import Any


def judge(state: Any) -> dict[str, Any]:
    return {"output": "judged"}
