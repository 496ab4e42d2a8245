"""Reads of the agents app, shaped for the pages, the CLI and the admin. One query each where it counts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from agents.events import Kind
from agents.models import Agent, AgentEvent, ApprovalRequest, ApprovalStatus, TranscriptEntry
from teams.selectors import projects_acting, projects_visible_to

User = AbstractBaseUser | AnonymousUser


def agent_list(*, project_id: int | None = None) -> QuerySet[Agent]:
    """Every agent in tree order (depth-first), with what a list shows, in one query."""
    agents = Agent.objects.with_tree_fields().select_related("role", "project", "workspace", "budget")
    if project_id is not None:
        agents = agents.filter(project_id=project_id)
    return agents


def agent_overview(
    *, user: User, project_id: int | None = None, status: str | None = None
) -> QuerySet[Agent]:
    """The overview's rows: the agents of the projects `user` may see, as a tree, newest first."""
    agents = (
        Agent.objects.with_tree_fields()
        .tree_filter(project__in=projects_visible_to(user))
        .order_siblings_by("-pk")
        .select_related("role", "project", "budget")
        .extra(order_by=["__tree.tree_ordering"])  # the tree's order, stated (for the paginator)
    )
    if project_id is not None:
        agents = agents.tree_filter(project_id=project_id)
    if status:
        agents = agents.filter(status=status)
    return agents


def agent_rows(*, agent_ids: Iterable[int]) -> list[Agent]:
    """Overview rows for some agents (live updates), with their depth in the tree."""
    ids = list(agent_ids)
    if not ids:
        return []
    agents = {a.pk: a for a in Agent.objects.filter(pk__in=ids).select_related("role", "project", "budget")}
    depths = _depths(agents.values())
    for agent in agents.values():
        agent.tree_depth = depths[agent.pk]
    return [agents[pk] for pk in ids if pk in agents]


def _depths(agents: Iterable[Agent]) -> dict[int, int]:
    """Depth of each agent, by walking up parent links (one query per level, not per agent)."""
    parent_of = {a.pk: a.parent_id for a in agents}
    missing = {p for p in parent_of.values() if p is not None and p not in parent_of}
    while missing:
        found = dict(Agent.objects.filter(pk__in=missing).values_list("pk", "parent_id"))
        parent_of |= found
        missing = {p for p in found.values() if p is not None and p not in parent_of}

    def depth(pk: int) -> int:
        count = 0
        while (pk := parent_of.get(pk)) is not None:
            count += 1
        return count

    return {pk: depth(pk) for pk in (a.pk for a in agents)}


def agent_visible(*, user: User, agent_id: int) -> Agent | None:
    """The agent if `user` may see it; None for both "no such agent" and "not yours"."""
    return (
        Agent.objects.filter(pk=agent_id, project__in=projects_visible_to(user))
        .select_related("role", "project", "workspace", "parent__role", "budget")
        .first()
    )


def agent_events(*, agent_id: int, after: int = 0, limit: int = 5000) -> list[AgentEvent]:
    return list(
        AgentEvent.objects.filter(agent_id=agent_id, seq__gt=after)
        .select_related("by_user")
        .order_by("seq")[:limit]
    )


def log_items(events: Iterable[AgentEvent | dict[str, Any]], *, merge: bool = True) -> list[dict[str, Any]]:
    """Events shaped for the agent page's log: with `merge`, consecutive text chunks become one
    item and a tool call's result joins its call (a page load); without, one item per event (a
    live update, which finds the earlier items already on the page)."""
    items: list[dict[str, Any]] = []
    tools: dict[str, dict[str, Any]] = {}
    for event in events:
        e = _as_dict(event)
        kind, data = e["kind"], e["data"]
        if merge and kind == Kind.TEXT and items and items[-1]["kind"] == Kind.TEXT:
            items[-1]["data"] = {"text": items[-1]["data"]["text"] + data.get("text", "")}
            items[-1]["seq"] = e["seq"]
            continue
        if merge and kind == Kind.TOOL_FINISHED and data.get("id") in tools:
            tools[data["id"]]["result"] = data
            continue
        item = {**e, "result": None}
        if kind == Kind.TOOL_STARTED:
            tools[data.get("id")] = item
        items.append(item)
    return items


def _as_dict(event: AgentEvent | dict[str, Any]) -> dict[str, Any]:
    if isinstance(event, AgentEvent):
        return {
            "seq": event.seq,
            "kind": event.kind,
            "data": event.data,
            "created_at": event.created_at,
            "by": event.by_user.get_username() if event.by_user_id else None,
        }
    return {**event, "created_at": datetime.fromisoformat(event["created_at"])}


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


def agent_changes(*, agent: Agent) -> dict[str, Any]:
    """The agent's branch against where it started: per-file diff and its commits (for the page
    and the admin). Read from the repository's git dir, so it works after archiving too."""
    from pathlib import Path

    from agents import workspaces

    workspace = getattr(agent, "workspace", None)
    if workspace is None:
        return {"files": [], "commits": [], "error": ""}
    try:
        git_dir = workspaces.common_dir(Path(agent.project.repo_path))
        return {
            "files": workspaces.diff(git_dir=git_dir, base=workspace.base_commit, head=workspace.branch),
            "commits": workspaces.commits(git_dir=git_dir, base=workspace.base_commit, head=workspace.branch),
            "error": "",
        }
    except workspaces.WorkspaceError as exc:
        return {"files": [], "commits": [], "error": str(exc)}


def approvals_inbox(user: User) -> dict[str, Any]:
    """The approval inbox of `user`'s teams: what waits, the last decisions, where they may act."""
    visible = projects_visible_to(user)
    requests = ApprovalRequest.objects.filter(agent__project__in=visible).select_related(
        "agent__role", "agent__project__team", "decided_by"
    )
    return {
        "pending": requests.filter(status=ApprovalStatus.PENDING).order_by("created_at"),
        "decided": requests.exclude(status=ApprovalStatus.PENDING).order_by("-decided_at")[:30],
        "acting": set(projects_acting(user).values_list("pk", flat=True)),
    }
