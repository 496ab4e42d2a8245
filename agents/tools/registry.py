"""Which tools an agent gets: its role's list, bound to its worktree."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agents.tools.base import Tool, ToolBox, ToolContext
from agents.tools.delegation import delegation_tools
from agents.tools.files import FILE_TOOLS
from agents.tools.git import git_tools
from agents.tools.shell import BASH_TOOL

log = logging.getLogger(__name__)


def toolbox_for(
    *,
    agent_id: int,
    parent_id: int | None,
    worktree: Path,
    tool_names: list[str],
    roles: list[str],
    should_stop: Callable[[], bool],
    extra: list[Tool] | None = None,
    sandbox_network: bool = False,
    sandbox_opt_out: bool = False,
) -> ToolBox:
    available: dict[str, Tool] = {
        tool.name: tool
        for tool in [
            *FILE_TOOLS,
            BASH_TOOL,
            *delegation_tools(agent_id=agent_id, parent_id=parent_id, roles=roles),
            *git_tools(agent_id=agent_id),
        ]
    }
    unknown = [name for name in tool_names if name not in available]
    if unknown:
        log.warning("agent %s: role lists unknown tools %s; ignored", agent_id, unknown)
    tools = [available[name] for name in tool_names if name in available]
    tools += [tool for tool in extra or [] if tool.name not in tool_names]  # given by other apps (workflows)
    context = ToolContext(
        worktree=worktree,
        agent_id=agent_id,
        should_stop=should_stop,
        sandbox_network=sandbox_network,
        sandbox_opt_out=sandbox_opt_out,
    )
    return ToolBox.of(tools, context)
