"""Who decides a tool call: the project's rules first, then the agent's permission mode.

Order (the first that applies decides): a deny rule; plan mode refusing anything but reading; an
ask rule; an allow rule; then the mode: `ask` asks for every tool that changes something,
`accept-edits` lets Write and Edit through and asks for the rest, `auto` allows. What decided is
stored with the call (`why`), so every call can be traced to its rule or mode.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents.models import PermissionMode, PermissionRule, RuleAction

READ_ONLY_TOOLS = frozenset({"Read", "Glob", "Grep"})
EDIT_TOOLS = frozenset({"Write", "Edit"})
# Tools that change nothing in the world outside the orchestrator's own records.
BOOKKEEPING_TOOLS = frozenset({"SendMessage", "RequestBudget", "SubmitResult"})
STRICTNESS = [PermissionMode.AUTO, PermissionMode.ACCEPT_EDITS, PermissionMode.ASK, PermissionMode.PLAN]
PATTERN = re.compile(r"^(?P<tool>[A-Za-z*][\w*]*)(?:\((?P<glob>.*)\))?$", re.DOTALL)
INPUT_KEYS = ("command", "file_path", "path", "pattern", "role", "to", "message", "title", "step")


@dataclass(frozen=True)
class Decision:
    action: str  # allow | deny | ask
    why: str
    rule: int | None = None


def main_input(tool: str, tool_input: Any) -> str:
    """What a rule's glob is matched against: the command, the path, the pattern..."""
    if isinstance(tool_input, dict):
        for key in INPUT_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str | int):
                return str(value)
    return json.dumps(tool_input, sort_keys=True)


def pattern_check(pattern: str) -> str:
    """Return the pattern if it is well formed (`Tool` or `Tool(glob)`), else raise ValueError."""
    pattern = (pattern or "").strip()
    if not PATTERN.match(pattern):
        raise ValueError(f"Rule {pattern!r} is not `Tool` or `Tool(pattern)`, e.g. Bash(git status*).")
    return pattern


def rule_matches(pattern: str, tool: str, tool_input: Any) -> bool:
    match = PATTERN.match(pattern.strip())
    if not match or not fnmatch.fnmatchcase(tool, match["tool"]):
        return False
    glob = match["glob"]
    return glob is None or fnmatch.fnmatchcase(main_input(tool, tool_input), glob)


def changes_something(tool: str) -> bool:
    return tool not in READ_ONLY_TOOLS and tool not in BOOKKEEPING_TOOLS


def decide(*, mode: str, rules: Iterable[PermissionRule], tool: str, tool_input: Any) -> Decision:
    matching = [r for r in rules if rule_matches(r.pattern, tool, tool_input)]
    by_action = {
        action: next((r for r in matching if r.action == action), None) for action in RuleAction.values
    }
    if by_action[RuleAction.DENY]:
        rule = by_action[RuleAction.DENY]
        return Decision("deny", f"rule deny {rule.pattern}", rule.pk)
    if mode == PermissionMode.PLAN and changes_something(tool):
        return Decision("deny", "plan mode: only tools that read are allowed")
    for action in (RuleAction.ASK, RuleAction.ALLOW):
        if by_action[action]:
            rule = by_action[action]
            return Decision(action, f"rule {action} {rule.pattern}", rule.pk)
    if mode == PermissionMode.ASK and changes_something(tool):
        return Decision("ask", "ask mode: it changes something")
    if mode == PermissionMode.ACCEPT_EDITS and changes_something(tool) and tool not in EDIT_TOOLS:
        return Decision("ask", "accept-edits mode: only file edits are allowed without asking")
    return Decision("allow", f"{mode} mode")


def stricter(a: str, b: str) -> str:
    """The stricter of two modes (a child never gets looser permissions than its parent)."""
    return max(a, b, key=STRICTNESS.index)


def rule_for_call(tool: str, tool_input: Any) -> str:
    """A rule pattern matching exactly this call ("make this a rule")."""
    value = main_input(tool, tool_input)
    escaped = re.sub(r"([*?\[])", r"[\1]", value)
    return f"{tool}({escaped})"
