"""The model adapter: one streamed Messages API request through the official `anthropic` SDK.

The SDK retries 408/409/429/5xx and connection errors before a stream starts. Once the server has
answered 200 it never retries, so failures mid-stream (an `error` event, a cut connection) are
retried here, with the same backoff rules. A request that fails is not counted: usage comes only
from the one reply that completed.
"""

from __future__ import annotations

import logging
import random
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
        max_retries: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.sleep = sleep

    def query(self, request: Request, *, on_text: Callable[[str], None] | None = None) -> ModelReply:
        attempt = 0
        while True:
            try:
                reply = self._stream_once(request, on_text)
                return ModelReply(**{**reply.__dict__, "retries": attempt})
            except anthropic.APIStatusError as exc:
                if exc.status_code != 200 and exc.status_code not in RETRYABLE_STATUS:
                    raise ModelError(
                        f"The API refused the request ({exc.status_code}): {_api_message(exc)}"
                    ) from exc
                failure, wait = f"{_api_message(exc)} ({exc.status_code})", _retry_after(exc)
            except STREAM_ERRORS as exc:
                failure, wait = f"connection failed: {type(exc).__name__}: {exc}", None
            attempt += 1
            if attempt > self.max_retries:
                raise ModelUnavailable(f"The API kept failing after {attempt} attempts; last: {failure}")
            delay = (
                wait
                if wait is not None
                else min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)
            )
            log.warning("model request failed (%s); retry %d in %.2fs", failure, attempt, delay)
            self.sleep(delay)

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
            for event in stream:
                if on_text is not None and event.type == "text":
                    on_text(event.text)
            final = stream.get_final_message()
            request_id = stream.response.headers.get("request-id", "")
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
