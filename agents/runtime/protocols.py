"""The three parts of a run: the model, the sink (storage and control) and the tools (agents.tools)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.tools.base import ToolResult


@dataclass(frozen=True)
class ModelReply:
    """One complete reply of the Messages API, as plain JSON-ready data."""

    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, Any]
    model: str
    message_id: str = ""
    request_id: str = ""
    duration_ms: int = 0
    stop_details: dict[str, Any] | None = None
    retries: int = 0

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [block for block in self.content if block.get("type") == "tool_use"]

    @property
    def text(self) -> str:
        return "\n".join(block["text"] for block in self.content if block.get("type") == "text").strip()


@dataclass
class Request:
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)


class Model(Protocol):
    def query(self, request: Request, *, on_text: Callable[[str], None] | None = None) -> ModelReply:
        """Send the conversation, return the complete reply. Raises ModelError / ModelUnavailable."""
        ...


@dataclass(frozen=True)
class Authorization:
    """The permission decision for one tool call; stored with the call."""

    allowed: bool
    input: Any  # what runs (a person may have edited it)
    decision: dict[str, Any]  # {"action": allow|deny, "why": "rule Bash(git *)" | "mode auto" | ..., ...}
    denial: str = ""  # what the model is told when it is not allowed


class Sink(Protocol):
    """Where a run's steps go (stored before the loop acts on them) and where control comes from."""

    def check_control(self) -> None:
        """Raise Cancelled / LeaseLost / ... if the run must stop now."""
        ...

    def reserve(self, request: Request) -> None:
        """Hold the worst-case cost of sending `request`, or raise OutOfBudget."""
        ...

    def release(self) -> None:
        """The call failed: give back what `reserve` held."""
        ...

    def record_reply(self, reply: ModelReply) -> None: ...

    def authorize(self, tool_use: dict[str, Any]) -> Authorization:
        """May this call run, and with which input? Raises AwaitingApproval while a person decides."""
        ...

    def record_tool_call(self, tool_use: dict[str, Any], decision: dict[str, Any] | None = None) -> None: ...

    def record_tool_result(self, tool_use_id: str, result: ToolResult) -> None: ...

    def record_user(self, content: list[dict[str, Any]]) -> None: ...

    def take_inbox(self) -> list[dict[str, Any]]:
        """Undelivered mail as content blocks, recorded as delivered with the transcript entry."""
        ...

    def on_text(self, chunk: str) -> None:
        """Streamed text as it arrives (for live views); nothing is decided on it."""
        ...
