import difflib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

from agents.events import tool_activity

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Tool inputs as the model wrote them (JSON), not as Python reprs."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@register.filter
def percent_of(part: Any, whole: Any) -> int:
    """0 to 100, for a budget bar; 0 when there is no whole."""
    try:
        part, whole = Decimal(str(part or 0)), Decimal(str(whole or 0))
    except InvalidOperation:
        return 0
    if whole <= 0:
        return 0
    return max(0, min(100, int(part * 100 / whole)))


@register.filter
def tool_summary(tool_input: Any, name: str) -> str:
    """What a tool call is about, on one line: the command, the file, the pattern."""
    return tool_activity(name, tool_input).removeprefix(name).removeprefix(": ")


@register.filter
def edit_diff(tool_input: Any, name: str) -> list[tuple[str, str]] | None:
    """An Edit as a unified diff of old and new text; a Write as added lines. Others: None."""
    if not isinstance(tool_input, dict):
        return None
    if name == "Edit" and isinstance(tool_input.get("old_string"), str):
        old = tool_input["old_string"].splitlines()
        new = str(tool_input.get("new_string", "")).splitlines()
        header = [("file", tool_input.get("file_path", ""))]
        lines = list(difflib.unified_diff(old, new, lineterm="", n=2))[2:]
        return header + [(_diff_class(line), line) for line in lines]
    if name == "Write" and isinstance(tool_input.get("content"), str):
        lines = tool_input["content"].splitlines()
        shown = [("add", "+" + line) for line in lines[:200]]
        if len(lines) > 200:
            shown.append(("muted", f"… {len(lines) - 200} more lines"))
        return [("file", tool_input.get("file_path", "")), *shown]
    return None


def _diff_class(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


@register.filter
def kind_label(kind: str) -> str:
    return kind.replace("_", " ").capitalize()


@register.filter
def plain_decimal(value: Any) -> str:
    """5.000000 as 5, 0.000120 as 0.00012: an amount a person would type."""
    if value is None or value == "":
        return ""
    text = format(Decimal(str(value)).normalize(), "f")
    return text
