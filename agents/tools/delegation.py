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
                budget_usd=tool_input.get("budget_usd"),
                parent=agent_id,
                commit_parent_work=True,
            )
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        limit = child.budget.limit_usd
        budget = f" with a budget of ${limit}" if limit is not None else ""
        return (
            f"Spawned agent {child.pk} ({child.role.name}){budget} on branch {child.workspace.branch}; it starts "
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

    def request_budget(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.models import Agent
        from agents.services import message_send

        if parent_id is None:
            raise ToolError("You have no parent agent to ask; a person sets your budget.")
        try:
            message_send(
                recipient=parent_id,
                sender=Agent.objects.get(pk=agent_id),
                body=(
                    f"Agent {agent_id} asks for ${tool_input['amount_usd']} more budget: {tool_input['reason']}\n"
                    f"Give it with GrantBudget (agent {agent_id}) if the work is worth it."
                ),
            )
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return f"Asked agent {parent_id} for ${tool_input['amount_usd']}; it will see the request with its next step."

    def grant_budget(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
        from agents.models import Agent
        from budgets.services import budget_grant

        child = Agent.objects.filter(pk=tool_input["agent"], parent_id=agent_id).first()
        if child is None:
            raise ToolError(f"Agent {tool_input['agent']} is not one of your children.")
        try:
            amount = budget_grant(
                parent=Agent.objects.get(pk=agent_id), child=child, usd=tool_input["amount_usd"]
            )
        except OrchestratorError as exc:
            raise ToolError(str(exc)) from None
        return f"Granted ${amount} to agent {child.pk}; if it was waiting for budget it carries on."

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
                    "budget_usd": {
                        "type": "number",
                        "minimum": 0,
                        "description": "Dollars carved out of your budget for it (default: its role's share "
                        "of what you have left; capped by what you have left). Unspent money comes back.",
                    },
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
        Tool(
            name="RequestBudget",
            description=(
                "Ask the agent that spawned you for more budget, saying why. It sees the request with its "
                "next step and may grant it."
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "amount_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Dollars wanted."},
                    "reason": {"type": "string", "minLength": 1, "description": "What the money is for."},
                },
                "required": ["amount_usd", "reason"],
                "additionalProperties": False,
            },
            handler=request_budget,
        ),
        Tool(
            name="GrantBudget",
            description=(
                "Give one of your child agents more budget, out of yours (for example when it ran out or "
                "asked with RequestBudget). A child waiting for budget carries on."
            ),
            input_schema={
                "type": "object",
                "properties": {
                    "agent": {"type": "integer", "description": "The child's id."},
                    "amount_usd": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "Dollars to give.",
                    },
                },
                "required": ["agent", "amount_usd"],
                "additionalProperties": False,
            },
            handler=grant_budget,
        ),
    ]
