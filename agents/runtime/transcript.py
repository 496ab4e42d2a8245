"""Rebuilding the conversation from stored transcript entries (to resume after waiting or a crash)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rebuilt:
    messages: list[dict[str, Any]] = field(default_factory=list)
    # tool calls that started but never recorded a result: the model is told they were interrupted
    interrupted: set[str] = field(default_factory=set)


def rebuild(entries: Iterable[tuple[str, dict[str, Any]]]) -> Rebuilt:
    """Messages in API form from (kind, payload) pairs in sequence order."""
    out = Rebuilt()
    started: set[str] = set()
    answered: set[str] = set()
    for kind, payload in entries:
        if kind == "assistant":
            out.messages.append({"role": "assistant", "content": list(payload["content"])})
        elif kind == "user":
            _append_user(out.messages, list(payload["content"]))
        elif kind == "tool_call":
            started.add(payload["id"])
        elif kind == "tool_result":
            answered.add(payload["tool_use_id"])
            block = {
                "type": "tool_result",
                "tool_use_id": payload["tool_use_id"],
                "content": payload["content"],
            }
            if payload.get("is_error"):
                block["is_error"] = True
            _append_user(out.messages, [block])
    out.interrupted = started - answered
    return out


def _append_user(messages: list[dict[str, Any]], content: list[dict[str, Any]]) -> None:
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(content)
    else:
        messages.append({"role": "user", "content": content})
