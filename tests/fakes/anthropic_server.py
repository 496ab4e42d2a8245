"""A fake Anthropic Messages API on 127.0.0.1, for tests that drive the real `anthropic` SDK.

The real client (and any worker subprocess given ``ANTHROPIC_BASE_URL=fake.base_url``) talks to it
over HTTP, so retries, streaming, SSE parsing and error mapping are all the SDK's own::

    from tests.fakes.anthropic_server import FakeAnthropic, Fault, Turn, text, tool_use

    with FakeAnthropic() as fake:
        fake.script("List the files", [
            Turn([tool_use("bash", {"command": "ls"})]),            # turn 0: the first request
            Turn([text("Two files.")], faults=[Fault(529, retry_after=0.01)]),  # turn 1
        ])
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url)
        ...
        assert [r.turn_index for r in fake.requests_for("List the files")] == [0, 1, 1]
        assert fake.violations == []

How a request finds its reply:

- The script is the one whose ``match`` is a substring of the text of the first user message
  (the longest ``match`` wins). The turn played is ``turns[k]``, k = the number of assistant
  messages in the request, so the reply depends only on the conversation so far: SDK retries and
  resumed conversations replay deterministically. A turn may be a callable
  ``(request_body) -> Turn``, e.g. to echo ids the client sent back in its tool_results.
- ``Turn.faults`` are played first, one per attempt at that (script, turn): HTTP errors (with an
  optional ``retry-after``), an ``error`` event mid-stream, or a connection dropped mid-stream.
  ``delay_s`` applies to the real reply only.
- ``set_outage(529)`` answers every ``/v1/messages*`` request with that error until
  ``set_outage(None)``.

Every request is recorded in ``fake.requests`` (headers lower-cased). A request the real API
would refuse (missing fields, a ``tool_use`` without its ``tool_result``, no credentials, no
matching script...) gets a 400-style error like the real one and its message is appended to
``fake.violations``, so a test can assert the client never misbehaved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

log = logging.getLogger(__name__)

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

DEFAULT_ERROR_MESSAGES: dict[int, str] = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}

DEFAULT_USAGE: dict[str, int] = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}

STREAM_PIECES = 3


def error_type_for(status: int) -> str:
    """The `error.type` the real API uses for an HTTP status."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def text(s: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": s}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A tool_use content block; the id is fixed here so retries replay the same one."""
    return {"type": "tool_use", "id": id or _new_id("toolu_"), "name": name, "input": input}


@dataclass
class Fault:
    """One failed attempt: an HTTP error status, an `error` event mid-stream, or a dropped stream.

    `hang_s` (for "error_event" and "drop") pauses mid-stream before the fault, so a test can kill
    the client while it is reading. On a non-streaming request, "drop" cuts the JSON body short
    and "error_event" becomes a 529, the nearest thing the API does there.
    """

    kind: int | Literal["error_event", "drop"]
    retry_after: float | None = None
    message: str | None = None
    hang_s: float = 0


@dataclass
class Turn:
    """One assistant reply. `stop_reason` None means "tool_use" if any tool_use block, else "end_turn"."""

    blocks: list[dict[str, Any]]
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None
    delay_s: float = 0
    chunk_delay_s: float = 0
    faults: list[Fault] = field(default_factory=list)

    def resolved_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(b.get("type") == "tool_use" for b in self.blocks) else "end_turn"

    def resolved_usage(self) -> dict[str, Any]:
        return {**DEFAULT_USAGE, **(self.usage or {})}


TurnEntry = Turn | Callable[[dict[str, Any]], Turn]


@dataclass
class RecordedRequest:
    """A request as the fake saw it; `status` is the HTTP status it answered with."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    script: str | None
    turn_index: int | None
    attempt: int
    status: int
    received_at: float
    query: str = ""


class RequestRefused(Exception):
    """A request the real API would refuse; answered as an error and recorded as a violation."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class FakeAnthropic:
    """The fake server. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._scripts: dict[str, list[TurnEntry]] = {}
        self._attempts: dict[tuple[str, int], int] = {}
        self._requests: list[RecordedRequest] = []
        self._violations: list[str] = []
        self._outage: tuple[int, float | None] | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> FakeAnthropic:
        if self._server is not None:
            raise RuntimeError("FakeAnthropic is already running")
        self._stopping.clear()
        self._server = _Server((self._host, self._port), _Handler, fake=self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-anthropic-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # Wakes handler threads blocked reading the next keep-alive request.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # Scripting

    def script(self, match: str, turns: list[TurnEntry]) -> None:
        """Register (or replace) the conversation whose first user message contains `match`.

        An empty `match` is a catch-all: it loses to every other script that matches.
        """
        if not isinstance(match, str):
            raise ValueError("match must be a string")
        with self._lock:
            self._scripts[match] = list(turns)
            self._attempts = {key: n for key, n in self._attempts.items() if key[0] != match}

    def set_outage(self, status: int | None, retry_after: float | None = None) -> None:
        """While set, every /v1/messages* request gets this HTTP error; None ends the outage."""
        with self._lock:
            self._outage = None if status is None else (status, retry_after)

    def reset(self) -> None:
        """Forget scripts, recorded requests, violations, attempt counters and any outage."""
        with self._lock:
            self._scripts.clear()
            self._attempts.clear()
            self._requests.clear()
            self._violations.clear()
            self._outage = None

    # Inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    def requests_for(self, match: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.script == match]

    # Used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _violation(self, message: str) -> None:
        with self._lock:
            self._violations.append(message)

    def _current_outage(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._outage

    def _find_script(self, body: dict[str, Any]) -> tuple[str | None, int | None]:
        """The matching script and the turn index the request asks for (either may be None)."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None, None
        first_user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        if first_user is None:
            return None, None
        haystack = _message_text(first_user)
        turn_index = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        with self._lock:
            matches = [match for match in self._scripts if match in haystack]
        if not matches:
            return None, turn_index
        return max(matches, key=len), turn_index

    def _next_attempt(self, match: str, turn_index: int) -> tuple[TurnEntry | None, int]:
        """The script's entry for this turn (None past its end) and this attempt's 1-based number."""
        with self._lock:
            turns = self._scripts.get(match, [])
            if turn_index >= len(turns):
                return None, 0
            key = (match, turn_index)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            return turns[turn_index], self._attempts[key]

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True if it is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeAnthropic):
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _StreamAborted(Exception):
    """The stream ends here without its terminating chunk (a "drop" fault or server shutdown)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        with contextlib.suppress(ConnectionError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake anthropic: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # Request handling

    def _dispatch(self) -> None:
        fake = self.server.fake
        self._request_id = _new_id("req_")
        self._replied = False
        path, _, query = self.path.partition("?")
        record = RecordedRequest(
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body={},
            script=None,
            turn_index=None,
            attempt=0,
            status=0,
            received_at=time.time(),
            query=query,
        )
        try:
            raw = self._read_body()
            self._handle(fake, record, raw)
        except RequestRefused as refused:
            fake._violation(refused.message)
            self._reply_error(record, refused.status, refused.message)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except _StreamAborted:
            self._abort_connection()
        except Exception as exc:
            log.exception("fake anthropic server failed on %s", self.path)
            fake._violation(f"fake server error: {exc!r}")
            if self._replied:
                self.close_connection = True
            else:
                payload = _error_payload(500, f"fake server error: {exc!r}", self._request_id)
                self._reply_json(500, payload, {"x-should-retry": "false"})

    def _handle(self, fake: FakeAnthropic, record: RecordedRequest, raw: bytes) -> None:
        if self.command != "POST" or record.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise RequestRefused(f"Not found: {self.command} {record.path}", status=404)
        has_bearer = record.headers.get("authorization", "").startswith("Bearer ")
        if not has_bearer and "x-api-key" not in record.headers:
            raise RequestRefused("x-api-key header or Authorization: Bearer header is required", status=401)
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise RequestRefused(f"There was an error parsing the body: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestRefused("Request body must be a JSON object")
        record.body = body
        record.script, record.turn_index = fake._find_script(body)

        if (outage := fake._current_outage()) is not None:
            status, retry_after = outage
            self._reply_error(record, status, DEFAULT_ERROR_MESSAGES.get(status, "Outage"), retry_after)
            return

        if record.path == "/v1/messages/count_tokens":
            _validate(body, require_max_tokens=False)
            parts = [body[key] for key in ("messages", "system", "tools") if key in body]
            record.status = 200
            fake._record(record)
            self._reply_json(200, {"input_tokens": sum(len(json.dumps(p)) for p in parts) // 4})
            return

        _validate(body, require_max_tokens=True)
        turn = self._turn_for(fake, record, body)
        if record.attempt <= len(turn.faults):
            self._play_fault(record, body, turn.faults[record.attempt - 1])
            return
        if fake._sleep(turn.delay_s):
            raise _StreamAborted
        record.status = 200
        fake._record(record)
        message = _message(body, turn)
        if body.get("stream") is True:
            self._stream(message, turn.chunk_delay_s)
        else:
            self._reply_json(200, message)

    def _turn_for(self, fake: FakeAnthropic, record: RecordedRequest, body: dict[str, Any]) -> Turn:
        if record.script is None:
            first = _message_text(body["messages"][0])
            raise RequestRefused(f"fake Anthropic: no script matches the first user message: {first[:200]!r}")
        assert record.turn_index is not None
        entry, record.attempt = fake._next_attempt(record.script, record.turn_index)
        if entry is None:
            raise RequestRefused(
                f"fake Anthropic: script {record.script!r} has no turn {record.turn_index} "
                f"(the request holds {record.turn_index} assistant messages)"
            )
        if isinstance(entry, Turn):
            return entry
        try:
            return entry(body)
        except Exception as exc:
            raise RequestRefused(
                f"fake Anthropic: turn {record.turn_index} of script {record.script!r} raised {exc!r}"
            ) from exc

    def _play_fault(self, record: RecordedRequest, body: dict[str, Any], fault: Fault) -> None:
        fake = self.server.fake
        streaming = body.get("stream") is True
        status = 529 if fault.kind == "error_event" and not streaming else fault.kind
        if isinstance(status, int):
            message = fault.message or DEFAULT_ERROR_MESSAGES.get(status, "Injected fault")
            self._reply_error(record, status, message, fault.retry_after)
            return
        record.status = 200
        fake._record(record)
        partial = _message(body, Turn([text("Partial reply before the fault.")]))
        if not streaming:
            data = json.dumps(partial).encode()
            self._replied = True
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", self._request_id)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            fake._sleep(fault.hang_s)
            raise _StreamAborted
        self._start_stream()
        # message_start, ping, content_block_start, then one text delta (two before a drop).
        for name, data in _stream_events(partial)[: 4 if fault.kind == "error_event" else 5]:
            self._send_event(name, data)
        if fake._sleep(fault.hang_s):
            raise _StreamAborted
        if fault.kind == "drop":
            raise _StreamAborted
        error = {"type": "overloaded_error", "message": fault.message or "Overloaded"}
        self._send_event("error", {"type": "error", "error": error})
        self._end_stream()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    # Replies

    def _reply_error(
        self, record: RecordedRequest, status: int, message: str, retry_after: float | None = None
    ) -> None:
        record.status = status
        self.server.fake._record(record)
        extra = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        self._reply_json(status, _error_payload(status, message, self._request_id), extra)

    def _reply_json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._replied = True
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self._request_id)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, message: dict[str, Any], chunk_delay_s: float) -> None:
        fake = self.server.fake
        self._start_stream()
        events = _stream_events(message)
        if chunk_delay_s <= 0:
            # One write for the whole stream: each extra send hands the GIL to an in-process client.
            self.wfile.write(b"".join(_chunk(name, data) for name, data in events) + b"0\r\n\r\n")
            return
        for name, data in events:
            self._send_event(name, data)
            if fake._sleep(chunk_delay_s):
                raise _StreamAborted
        self._end_stream()

    def _start_stream(self) -> None:
        self._replied = True
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self._request_id)
        self.end_headers()

    def _send_event(self, name: str, data: dict[str, Any]) -> None:
        self.wfile.write(_chunk(name, data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _abort_connection(self) -> None:
        """Close without the terminating chunk, so the client sees an incomplete body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _validate(body: dict[str, Any], *, require_max_tokens: bool) -> None:
    """Refuse what the real API refuses, with messages in its style."""
    if "model" not in body:
        raise RequestRefused("model: Field required")
    if require_max_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise RequestRefused("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise RequestRefused("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise RequestRefused("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        raise RequestRefused("messages: Field required")
    if not isinstance(messages, list):
        raise RequestRefused("messages: Input should be a valid list")
    if not messages:
        raise RequestRefused("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestRefused(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise RequestRefused(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise RequestRefused(f"messages.{i}.content: Field required")
    if messages[0]["role"] != "user":
        raise RequestRefused('messages: first message must use the "user" role')
    _validate_tool_pairing(messages)


def _validate_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """Each tool_use must be answered by a tool_result in the next user turn, and only there.

    Consecutive messages of one role form one turn, as the API merges them.
    """
    turns: list[tuple[str, list[tuple[int, int, dict[str, Any]]]]] = []
    for i, message in enumerate(messages):
        if not turns or turns[-1][0] != message["role"]:
            turns.append((message["role"], []))
        if isinstance(message["content"], list):
            turns[-1][1].extend((i, j, b) for j, b in enumerate(message["content"]) if isinstance(b, dict))
    unanswered: dict[str, int] = {}  # tool_use id -> index of the message holding it
    for role, blocks in turns:
        if role == "assistant":
            unanswered = {str(b.get("id")): i for i, _, b in blocks if b.get("type") == "tool_use"}
            continue
        for i, j, block in blocks:
            if block.get("type") != "tool_result":
                continue
            tool_use_id = str(block.get("tool_use_id"))
            if unanswered.pop(tool_use_id, None) is None:
                raise RequestRefused(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` block "
                    "in the previous message."
                )
        _refuse_unanswered(unanswered)
    _refuse_unanswered(unanswered)


def _refuse_unanswered(unanswered: dict[str, int]) -> None:
    if unanswered:
        raise RequestRefused(
            f"messages.{min(unanswered.values())}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(unanswered)}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message."
        )


def _error_payload(status: int, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type_for(status), "message": message},
        "request_id": request_id,
    }


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _message(body: dict[str, Any], turn: Turn) -> dict[str, Any]:
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": turn.blocks,
        "stop_reason": turn.resolved_stop_reason(),
        "stop_sequence": None,
        "usage": turn.resolved_usage(),
    }


def _stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        events.extend(_block_events(index, block))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if block.get("type") == "tool_use":
        start = {**block, "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in _pieces(json.dumps(block.get("input", {})))
        ]
    elif block.get("type") == "text":
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block.get("text", ""))]
    else:
        start, deltas = block, []
    yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
    for delta in deltas:
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def _chunk(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event as one HTTP chunk."""
    payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _pieces(s: str) -> list[str]:
    """Split `s` into up to STREAM_PIECES parts, as the API streams text in several deltas."""
    size = max(1, -(-len(s) // STREAM_PIECES))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _demo_turns() -> list[TurnEntry]:
    """Any task: write NOTES.md quoting it, then say so. Enough to watch a run end to end."""

    def write_notes(body: dict[str, Any]) -> Turn:
        first = body["messages"][0]["content"]
        task = first if isinstance(first, str) else " ".join(b.get("text", "") for b in first)
        return Turn(
            [
                text("I'll note the task down."),
                tool_use("Write", {"file_path": "NOTES.md", "content": f"# Task\n\n{task}\n"}),
            ]
        )

    return [write_notes, Turn([text("Wrote NOTES.md with the task. (This reply came from the fake API.)")])]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Run the fake Messages API with a demo script, for trying Orchestrator without a key."
    )
    parser.add_argument("--port", type=int, default=8787)
    port = parser.parse_args().port
    fake = FakeAnthropic(port=port).start()
    fake.script("", _demo_turns())
    print(f"Fake Anthropic API on {fake.base_url} (test infrastructure, not a model). Ctrl-C stops it.")
    print(f"Use it with: ANTHROPIC_BASE_URL={fake.base_url} ANTHROPIC_API_KEY=fake make run")
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    fake.stop()
