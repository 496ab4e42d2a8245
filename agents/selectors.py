"""Reads of the agents app, shaped for the pages, the CLI and the admin. One query each where it counts."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from agents.models import Agent, TranscriptEntry


def agent_list(*, project_id: int | None = None) -> QuerySet[Agent]:
    """Every agent in tree order (depth-first), with what a list shows, in one query."""
    agents = Agent.objects.with_tree_fields().select_related("role", "project", "workspace", "budget")
    if project_id is not None:
        agents = agents.filter(project_id=project_id)
    return agents


def agent_get(*, agent_id: int) -> Agent | None:
    return (
        Agent.objects.select_related("role", "project", "workspace", "parent__role")
        .filter(pk=agent_id)
        .first()
    )


def agent_transcript(*, agent: Agent) -> QuerySet[TranscriptEntry]:
    return agent.transcript.select_related("usage").order_by("seq")


def agent_as_dict(agent: Agent) -> dict[str, Any]:
    """The JSON shape scripts get from `manage.py agents --json`. Keep the keys: it is an interface."""
    workspace = getattr(agent, "workspace", None)
    budget = getattr(agent, "budget", None)
    return {
        "id": agent.pk,
        "parent": agent.parent_id,
        "project": agent.project.name,
        "role": agent.role.name,
        "model": agent.model,
        "status": agent.status,
        "status_reason": agent.status_reason,
        "task": agent.task,
        "result": agent.result,
        "input_tokens": agent.input_tokens,
        "output_tokens": agent.output_tokens,
        "cache_write_tokens": agent.cache_write_tokens,
        "cache_read_tokens": agent.cache_read_tokens,
        "cost_usd": str(agent.cost_usd),
        "spent_usd": str(budget.spent_usd) if budget else str(agent.cost_usd),
        "reserved_usd": str(budget.reserved_usd) if budget else "0",
        "budget_usd": str(budget.limit_usd) if budget and budget.limit_usd is not None else None,
        "budget_tokens": budget.limit_tokens if budget else None,
        "waiting_for": agent.waiting_for or None,
        "turns": agent.turns,
        "branch": workspace.branch if workspace else None,
        "worktree": workspace.path if workspace else None,
        "created_at": agent.created_at.isoformat(),
        "finished_at": agent.finished_at.isoformat() if agent.finished_at else None,
    }
