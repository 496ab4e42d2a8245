"""The model adapter: one streamed Messages API request through the official `anthropic` SDK.

The SDK retries 408/409/429/5xx and connection errors before a stream starts. Once the server has
answered 200 it never retries, so failures mid-stream (an `error` event, a cut connection) are
retried here, with the same backoff rules, for up to `retry_seconds`; after that the caller parks
the agent. A request that fails is not counted: usage comes only from the reply that completed.

`check_stop` is called between stream events and during backoff; `abort()` (from another thread)
closes the stream in flight, so a cancel takes effect even while a stream is stalled.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2

from agents.runtime.exceptions import ModelError, ModelUnavailable
from agents.runtime.protocols import ModelReply, Request

log = logging.getLogger(__name__)

# Errors after which the same request may succeed.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    anthropic.APIConnectionError,
    httpx2.TransportError,
)


class AnthropicModel:
    def __init__(
        self,
        *,
        client: anthropic.Anthropic,
        model: str,
        max_tokens: int,
        retry_seconds: float = 120,
        check_stop: Callable[[], None] = lambda: None,
        wait: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.retry_seconds = retry_seconds
        self.check_stop = check_stop
        self.wait = wait
        self._response: Any = None  # the HTTP response being streamed, for abort()

    def query(self, request: Request, *, on_text: Callable[[str], None] | None = None) -> ModelReply:
        attempt = 0
        give_up_at = time.monotonic() + self.retry_seconds
        while True:
            self.check_stop()
            try:
                reply = self._stream_once(request, on_text)
                return ModelReply(**{**reply.__dict__, "retries": attempt})
            except anthropic.APIStatusError as exc:
                if exc.status_code != 200 and exc.status_code not in RETRYABLE_STATUS:
                    raise ModelError(
                        f"The API refused the request ({exc.status_code}): {_api_message(exc)}"
                    ) from exc
                failure, retry_after = f"{_api_message(exc)} ({exc.status_code})", _retry_after(exc)
            except STREAM_ERRORS as exc:
                self.check_stop()  # an abort() surfaces as a closed connection
                failure, retry_after = f"connection failed: {type(exc).__name__}: {exc}", None
            attempt += 1
            backoff = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)
            delay = retry_after if retry_after is not None else backoff
            if time.monotonic() + delay > give_up_at:
                raise ModelUnavailable(
                    f"The API kept failing for {self.retry_seconds:.0f} s; last: {failure}"
                )
            log.warning("model request failed (%s); retry %d in %.2fs", failure, attempt, delay)
            self.wait(delay)

    def abort(self) -> None:
        """End the stream in flight, from another thread, when the run must stop.

        Closing the response is not enough: a read blocked in the other thread waits for the
        next chunk. Shutting the socket down wakes it at once.
        """
        response = self._response
        if response is None:
            return
        try:
            network_stream = response.extensions.get("network_stream")
            sock = network_stream.get_extra_info("socket") if network_stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                response.close()
        except Exception:  # the stream may have ended meanwhile; stopping is best effort
            log.debug("aborting the stream failed", exc_info=True)

    def _stream_once(self, request: Request, on_text: Callable[[str], None] | None) -> ModelReply:
        started = time.monotonic()
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": request.system,
            "messages": request.messages,
        }
        if request.tools:
            params["tools"] = request.tools
        with self.client.messages.stream(**params) as stream:
            self._response = stream.response
            try:
                for event in stream:
                    self.check_stop()
                    if on_text is not None and event.type == "text":
                        on_text(event.text)
                final = stream.get_final_message()
                request_id = stream.response.headers.get("request-id", "")
            finally:
                self._response = None
        stop_details = getattr(final, "stop_details", None)
        return ModelReply(
            content=[block.model_dump(mode="json", exclude_none=True) for block in final.content],
            stop_reason=final.stop_reason or "end_turn",
            usage=final.usage.model_dump(mode="json", exclude_none=True),
            model=final.model,
            message_id=final.id,
            request_id=request_id,
            duration_ms=int((time.monotonic() - started) * 1000),
            stop_details=stop_details.model_dump(mode="json")
            if hasattr(stop_details, "model_dump")
            else None,
        )


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(error.get("message") or exc.message)


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
