"""A scripted fake OpenAI-compatible model server for driving the real OpenClaw gateway in tests.

Serves ``POST /v1/chat/completions`` (streaming SSE and non-streaming JSON) and ``GET /v1/models`` on
127.0.0.1:<free port> from a background thread (standard library only).

Behaviour is scripted: tests push responses onto a queue (:meth:`FakeModelServer.enqueue`); each chat
completion request pops the next one, and when the queue is empty the server answers with
:attr:`FakeModelServer.default` (a plain text answer unless changed, e.g. to an :class:`ErrorReply` to make every
call fail). Every request is recorded (:attr:`FakeModelServer.requests`) so tests can count model calls and look
at what the gateway sent (messages, tools, tool results, ``stream_options``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL_ID = "fake-sonnet"
DEFAULT_TEXT = "Hello from the fake model."


@dataclass(frozen=True)
class TextReply:
    """A plain assistant answer. Token counts are reported in the usage chunk / ``usage`` field."""

    text: str = DEFAULT_TEXT
    prompt_tokens: int = 1200
    completion_tokens: int = 12
    cached_tokens: int = 0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCallReply:
    """An assistant message that calls one tool (``finish_reason: tool_calls``)."""

    name: str
    arguments: dict[str, Any] | str
    call_id: str = "call_fake_1"
    text: str = ""
    prompt_tokens: int = 1300
    completion_tokens: int = 20
    cached_tokens: int = 0

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error answer (default: 500 with an OpenAI-style error body)."""

    status: int = 500
    message: str = "fake upstream failure"
    error_type: str = "server_error"
    headers: tuple[tuple[str, str], ...] = ()


Reply = TextReply | ToolCallReply | ErrorReply


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    reply: Reply | None = None

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/chat/completions")

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []

    @property
    def tool_names(self) -> list[str]:
        if not isinstance(self.body, dict):
            return []
        names = []
        for tool in self.body.get("tools") or []:
            fn = tool.get("function") or {}
            if fn.get("name"):
                names.append(fn["name"])
        return names

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``role: tool`` messages (tool results the gateway sends back to the model)."""
        return [m for m in self.messages if m.get("role") == "tool"]

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))


@dataclass
class FakeModelServer:
    """Scripted fake OpenAI-compatible server. Use as a context manager or call start()/stop()."""

    model_ids: tuple[str, ...] = (DEFAULT_MODEL_ID,)
    default: Reply = field(default_factory=TextReply)
    host: str = "127.0.0.1"
    port: int = 0
    chunk_delay: float = 0.0

    def __post_init__(self) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -- scripting ---------------------------------------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self._lock:
            self.default = reply

    def reset(self) -> None:
        """Forget the queue and the recorded requests (the default reply is kept)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- observation -------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_chat]

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeModelServer:
        server = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------------------------
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _next_id(self) -> str:
        return f"chatcmpl-fake-{next(self._ids)}"


def _usage(reply: TextReply | ToolCallReply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    if reply.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def _split_text(text: str) -> list[str]:
    """Split into a few word-ish deltas so the gateway sees several assistant deltas."""
    if not text:
        return []
    parts: list[str] = []
    words = text.split(" ")
    for i, word in enumerate(words):
        parts.append(word if i == 0 else " " + word)
    # merge into at most 3 chunks to keep streams short
    if len(parts) > 3:
        parts = [parts[0], "".join(parts[1:-1]), parts[-1]]
    return parts


def _make_handler(owner: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeModel/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # ---- helpers
        def _send_json(self, status: int, payload: Any, extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra_headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return raw.decode("utf-8", "replace")

        def _record(self, body: Any) -> RecordedRequest:
            rec = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=time.time(),
            )
            owner._record(rec)
            return rec

        # ---- routes
        def do_GET(self) -> None:
            self._record(None)
            if self.path.rstrip("/").endswith("/models"):
                now = int(time.time())
                data = [{"id": m, "object": "model", "created": now, "owned_by": "fake"} for m in owner.model_ids]
                self._send_json(200, {"object": "list", "data": data})
            else:
                self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            body = self._read_body()
            rec = self._record(body)
            if not rec.is_chat:
                self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            reply = owner._next_reply()
            rec.reply = reply
            if isinstance(reply, ErrorReply):
                self._send_json(
                    reply.status,
                    {"error": {"message": reply.message, "type": reply.error_type, "code": None}},
                    reply.headers,
                )
                return
            model = (body or {}).get("model") or owner.model_ids[0]
            if rec.stream:
                self._stream(reply, model)
            else:
                self._send_json(200, self._completion(reply, model))

        def _completion(self, reply: TextReply | ToolCallReply, model: str) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            finish = "stop"
            if isinstance(reply, ToolCallReply):
                message["tool_calls"] = [
                    {
                        "id": reply.call_id,
                        "type": "function",
                        "function": {"name": reply.name, "arguments": reply.arguments_json},
                    }
                ]
                finish = "tool_calls"
            else:
                finish = reply.finish_reason
            return {
                "id": owner._next_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": _usage(reply),
            }

        def _stream(self, reply: TextReply | ToolCallReply, model: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            cid = owner._next_id()
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
                return {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **extra,
                }

            events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
            events.extend(chunk({"content": part}) for part in _split_text(reply.text))
            if isinstance(reply, ToolCallReply):
                args = reply.arguments_json
                half = len(args) // 2
                events.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": reply.call_id,
                                    "type": "function",
                                    "function": {"name": reply.name, "arguments": args[:half]},
                                }
                            ]
                        }
                    )
                )
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}))
                events.append(chunk({}, "tool_calls"))
            else:
                events.append(chunk({}, reply.finish_reason))
            # Final usage chunk (OpenAI sends it with empty choices when stream_options.include_usage is set;
            # we always send it).
            events.append(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(reply),
                }
            )
            try:
                for ev in events:
                    self._write_chunk(f"data: {json.dumps(ev)}\n\n".encode())
                    if owner.chunk_delay:
                        time.sleep(owner.chunk_delay)
                self._write_chunk(b"data: [DONE]\n\n")
                self._write_chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


if __name__ == "__main__":  # manual use: python -m tests.openclaw.fake_model
    import sys

    srv = FakeModelServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
