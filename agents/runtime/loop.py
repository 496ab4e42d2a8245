"""The agent loop: ask the model, run the tools it asks for, repeat until it ends its turn.

Knows nothing of Django. Every step goes to the sink before the loop acts on it, so a run can be
rebuilt from what was stored (see `agents.conversation`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agents.runtime.exceptions import LimitsExceeded, ModelRefused
from agents.runtime.protocols import Model, ModelReply, Request, Sink
from agents.tools.base import ToolBox, ToolResult

INTERRUPTED = (
    "This tool call was interrupted (the worker running it stopped) before its result was recorded. "
    "It may or may not have taken effect: check before repeating it."
)
CUT_OFF = "Your reply was cut off by the output token limit. Continue from where you stopped."


@dataclass(frozen=True)
class Limits:
    """Checked before every model call, so a run never starts a call it may not make."""

    max_turns: int
    run_seconds_left: float | None = None  # of the agent's running-time allowance
    started: float = field(default_factory=time.monotonic)

    def check(self, turns_taken: int) -> None:
        if turns_taken >= self.max_turns:
            raise LimitsExceeded(f"Reached the limit of {self.max_turns} model calls.")
        if self.run_seconds_left is not None and time.monotonic() - self.started > self.run_seconds_left:
            raise LimitsExceeded("Reached the limit of running time for its role.")


@dataclass
class AgentLoop:
    model: Model
    tools: ToolBox
    sink: Sink
    system: str
    messages: list[dict[str, Any]]
    limits: Limits
    turns_taken: int = 0
    # tool_use ids whose call started in an earlier run but never recorded a result
    interrupted: set[str] = field(default_factory=set)

    def run(self) -> str:
        """Step until the model ends its turn; return its final text."""
        self._answer_open_tool_calls()
        while True:
            reply = self.step()
            if reply is not None:
                return reply.text

    def step(self) -> ModelReply | None:
        """One model call and the tools it asks for. Returns the reply when the turn has ended."""
        self.sink.check_control()
        self.limits.check(self.turns_taken)
        self._append_user(self.sink.take_inbox())
        request = Request(system=self.system, messages=self.messages, tools=self.tools.schemas())
        self.sink.reserve(request)
        try:
            reply = self.model.query(request, on_text=self.sink.on_text)
        except BaseException:
            self.sink.release()
            raise
        self.turns_taken += 1
        self.sink.record_reply(reply)
        self.messages.append({"role": "assistant", "content": reply.content})

        if reply.stop_reason == "refusal":
            details = (reply.stop_details or {}).get("explanation") or reply.text or "no explanation given"
            raise ModelRefused(f"The model refused: {details}")
        if reply.tool_uses:
            self._execute(reply.tool_uses)
            return None
        if reply.stop_reason == "pause_turn":
            return None  # the API wants its own content back to continue the same turn
        if reply.stop_reason == "max_tokens":
            self._record_and_append_user([{"type": "text", "text": CUT_OFF}])
            return None
        return reply

    def continue_with(self, content: list[dict[str, Any]]) -> None:
        """Add a user message (already recorded by the caller) before the next step."""
        self._append_user(content)

    def _answer_open_tool_calls(self) -> None:
        """On resume: the last reply may have asked for tools that have no result yet."""
        last = max((i for i, m in enumerate(self.messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return
        answered = {
            block.get("tool_use_id")
            for message in self.messages[last + 1 :]
            for block in message["content"]
            if block.get("type") == "tool_result"
        }
        open_calls = [
            block
            for block in self.messages[last]["content"]
            if block.get("type") == "tool_use" and block["id"] not in answered
        ]
        if open_calls:
            self._execute(open_calls)

    def _execute(self, tool_uses: list[dict[str, Any]]) -> None:
        results = []
        for call in tool_uses:
            if call["id"] in self.interrupted:
                result = ToolResult(content=INTERRUPTED, is_error=True)
            else:
                self.sink.check_control()
                verdict = self.sink.authorize(call)  # may raise AwaitingApproval: we wait, holding nothing
                self.sink.record_tool_call({**call, "input": verdict.input}, verdict.decision)
                if verdict.allowed:
                    result = self.tools.execute(call["name"], verdict.input)
                else:
                    result = ToolResult(content=verdict.denial, is_error=True)
            self.sink.record_tool_result(call["id"], result)
            results.append(_tool_result_block(call["id"], result))
        self._append_user(results)

    def _record_and_append_user(self, content: list[dict[str, Any]]) -> None:
        self.sink.record_user(content)
        self._append_user(content)

    def _append_user(self, content: list[dict[str, Any]]) -> None:
        if not content:
            return
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1]["content"].extend(content)
        else:
            self.messages.append({"role": "user", "content": list(content)})


def _tool_result_block(tool_use_id: str, result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": result.content}
    if result.is_error:
        block["is_error"] = True
    return block
