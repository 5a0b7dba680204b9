"""A stdio MCP server (plain JSON-RPC, stdlib only) steered by a file, for
tests/test_probe32_mcp.py.

`python mcp_steered_server.py STATE_DIR [ARG...]`: every tools/list and tools/call reads
STATE_DIR/control.json, so a test can change what the server lists, and how it answers,
between two runs, between an approval and its resume, or during a run. STATE_DIR/ledger gets
one JSON line per start (`{"start": pid, "argv": [...]}`) and per call (`{"name", "args",
"key"}`): the side effects, kept outside loomgraph's journal.

control.json: `{"tools": [tool, ...], "answer": MODE, "initialize": "hang"?}`; a missing file
lists `transfer`; `"initialize": "hang"` never answers the initialize request, `"start":
"exit"` exits at once.
MODEs (how a call is answered):
- `echo` (default): `NAME got ARGS` as text;
- `die`: the process exits mid-call, after recording it;
- `wrong_id`: an answer to another request id, then nothing;
- `bad_structured`: structuredContent that breaks the tool's outputSchema;
- `huge:N`: N characters of text;
- `flood:N`: N progress notifications (to the call's progress token), then the answer;
- `announce`: `notifications/tools/list_changed`, then the answer.
"""

import json
import os
import sys
from pathlib import Path

STATE = Path(sys.argv[1])
CONTROL = STATE / "control.json"
LEDGER = STATE / "ledger"

TRANSFER = {
    "name": "transfer",
    "description": "Send money to someone.",
    "inputSchema": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "amount": {"type": "integer"}},
        "required": ["to", "amount"],
        "additionalProperties": False,
    },
}


def control() -> dict[str, object]:
    if not CONTROL.exists():
        return {"tools": [TRANSFER], "answer": "echo"}
    loaded: dict[str, object] = json.loads(CONTROL.read_text())
    return loaded


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def record(entry: dict[str, object]) -> None:
    with open(LEDGER, "a") as f:
        f.write(json.dumps(entry) + "\n")


def answer(rid: object, result: dict[str, object]) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def text(rid: object, words: str) -> None:
    answer(rid, {"content": [{"type": "text", "text": words}], "isError": False})


def on_call(rid: object, params: dict[str, object]) -> None:
    name, args = params["name"], params.get("arguments") or {}
    meta = params.get("_meta") or {}
    assert isinstance(meta, dict)
    record({"name": name, "args": args, "key": meta.get("io.loomgraph/idempotency-key")})
    mode = str(control().get("answer", "echo"))
    if mode == "die":
        os._exit(3)
    elif mode == "wrong_id":
        text(f"not-{rid}", "an answer to a request never sent")
    elif mode == "bad_structured":
        result = {"content": [], "structuredContent": {"degrees": "hot"}, "isError": False}
        answer(rid, result)
    elif mode.startswith("huge:"):
        text(rid, "x" * int(mode[5:]))
    elif mode.startswith("flood:"):
        token = meta.get("progressToken")
        for i in range(int(mode[6:])):
            progress = {"progressToken": token, "progress": i, "message": "p" * 200}
            send({"jsonrpc": "2.0", "method": "notifications/progress", "params": progress})
        text(rid, "flooded")
    elif mode == "announce":
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        text(rid, f"{name} got {json.dumps(args, sort_keys=True)}")
    else:
        text(rid, f"{name} got {json.dumps(args, sort_keys=True)}")


def main() -> None:
    record({"start": os.getpid(), "argv": sys.argv[1:]})
    if control().get("start") == "exit":
        sys.exit(4)  # a server that cannot start (again)
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, rid = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            if control().get("initialize") == "hang":
                continue  # never answers: the client's start_timeout must end the wait
            info = {
                "protocolVersion": params["protocolVersion"],
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "probe32", "version": "1"},
            }
            answer(rid, info)
        elif method == "tools/list":
            answer(rid, {"tools": control()["tools"]})
        elif method == "tools/call":
            on_call(rid, params)
        elif method == "ping" and rid is not None:
            answer(rid, {})


main()
