"""The shape every tool has, and the toolbox the loop executes calls through.

Framework-free: nothing here imports Django, so tools are testable on their own and the loop in
`agents.runtime` can run them without a database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

log = logging.getLogger(__name__)


class ToolError(Exception):
    """A failure the model should see as an `is_error` tool_result (bad path, missing file...)."""


@dataclass
class ToolContext:
    """What a tool may know about the agent calling it."""

    worktree: Path
    agent_id: int | None = None
    # Polled by long-running tools (Bash) so a cancel or pause takes effect mid-command.
    should_stop: Callable[[], bool] = lambda: False
    # The project's sandbox switches for Bash (see agents.sandbox).
    sandbox_network: bool = False
    sandbox_opt_out: bool = False


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False
    duration_ms: int = 0


Handler = Callable[[ToolContext, dict[str, Any]], str]


@dataclass(frozen=True)
class Tool:
    """A declarative tool: what the model is told (name, description, schema) and what runs."""

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Handler

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass
class ToolBox:
    """The tools one agent may use, bound to that agent's context."""

    tools: dict[str, Tool]
    context: ToolContext
    _validators: dict[str, jsonschema.protocols.Validator] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, tools: Iterable[Tool], context: ToolContext) -> ToolBox:
        return cls(tools={tool.name: tool for tool in tools}, context=context)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    def execute(self, name: str, tool_input: Any) -> ToolResult:
        """Run one call. Never raises for a tool's own failure: the model gets an error result."""
        started = time.monotonic()
        try:
            content = self._run(name, tool_input)
            is_error = False
        except ToolError as exc:
            content, is_error = str(exc), True
        except Exception as exc:  # a bug in a tool must not kill the agent; it is logged
            log.exception("tool %s crashed", name)
            content, is_error = f"{name} failed unexpectedly: {type(exc).__name__}: {exc}", True
        return ToolResult(
            content=content, is_error=is_error, duration_ms=int((time.monotonic() - started) * 1000)
        )

    def _run(self, name: str, tool_input: Any) -> str:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            raise ToolError(f"Unknown tool {name!r}. Tools available to you: {known}.")
        if not isinstance(tool_input, dict):
            raise ToolError(f"{name} input must be a JSON object, got: {json.dumps(tool_input)[:200]}")
        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = jsonschema.Draft202012Validator(tool.input_schema)
        errors = sorted(validator.iter_errors(tool_input), key=lambda e: list(e.path))
        if errors:
            details = "; ".join(_describe(error) for error in errors[:5])
            raise ToolError(f"Invalid input for {name}: {details}")
        return tool.handler(self.context, tool_input)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.path)
    return f"{where}: {error.message}" if where else error.message
