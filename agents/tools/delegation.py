"""SpawnAgent and SendMessage: the tools through which agents work as a team.

Unlike the file tools these talk to the database, through the same services the CLI uses.
"""

from __future__ import annotations

from typing import Any

from agents.errors import OrchestratorError
from agents.tools.base import Tool, ToolContext, ToolError


def delegation_tools(*, agent_id: int, parent_id: int | None, roles: list[str]) -> list[Tool]:
    def spawn(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.services import agent_spawn

        try:
            child = agent_spawn(
                role=tool_input["role"],
                task=tool_input["task"],
                model=tool_input.get("model"),
                parent=agent_id,
                commit_parent_work=True,
            )
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return (
            f"Spawned agent {child.pk} ({child.role.name}) on branch {child.workspace.branch}; it starts "
            "from your files as they are now. When you end your turn you will wait, without using any "
            "resources, and be woken with the results of all your children once they have finished."
        )

    def send(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.models import Agent
        from agents.services import message_send

        to = str(tool_input["to"]).strip().lstrip("#")
        if to == "parent":
            if parent_id is None:
                raise ToolError("You have no parent agent: you were spawned by a person.")
            recipient_id = parent_id
        elif to.isdigit():
            recipient_id = int(to)
        else:
            raise ToolError(f'"to" must be an agent id or "parent", not {tool_input["to"]!r}.')
        me = Agent.objects.only("project_id").get(pk=agent_id)
        if not Agent.objects.filter(pk=recipient_id, project_id=me.project_id).exists():
            raise ToolError(f"There is no agent {recipient_id} in your project.")
        if recipient_id == agent_id:
            raise ToolError("You can't send a message to yourself.")
        try:
            message_send(recipient=recipient_id, sender=me, body=tool_input["body"])
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return f"Message sent to agent {recipient_id}; it will read it with its next step."

    return [
        Tool(
            name="SpawnAgent",
            description=(
                "Spawn a child agent to do part of your work. It gets its own git branch and worktree, "
                "starting from your files as they are now. Returns the child's id. When all the work you "
                "delegated is under way, end your turn: you will be woken with each child's final result."
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": roles, "description": "The child's role."},
                    "task": {"type": "string", "minLength": 1, "description": "What the child should do."},
                    "model": {"type": "string", "description": "Model id; default: the role's."},
                },
                "required": ["role", "task"],
                "additionalProperties": False,
            },
            handler=spawn,
        ),
        Tool(
            name="SendMessage",
            description=(
                'Send a message to another agent of your project: "to" is its id, or "parent" for the '
                "agent that spawned you. It arrives with the recipient's next step."
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "to": {"type": ["string", "integer"], "description": 'An agent id, or "parent".'},
                    "body": {"type": "string", "minLength": 1, "description": "The message."},
                },
                "required": ["to", "body"],
                "additionalProperties": False,
            },
            handler=send,
        ),
    ]
