"""Reads of workflows, shaped for the page, the command and the admin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from workflows.models import Workflow
from workflows.spec import Spec


def workflow_steps(*, workflow: Workflow) -> list[dict[str, Any]]:
    """Each step of the spec with its runs (every item and round) and its cost, in order."""
    spec = Spec.from_dict(workflow.spec)
    runs = list(workflow.step_runs.select_related("agent__role").order_by("item_index", "round"))
    depth: dict[str, int] = {}
    for step_id in spec.order():
        step = spec.step(step_id)
        depth[step_id] = 1 + max((depth[d] for d in step.needs), default=-1)
    steps = []
    for step_id in spec.order():
        step = spec.step(step_id)
        mine = [r for r in runs if r.step == step_id]
        latest: dict[int, Any] = {}
        for run in mine:
            latest[run.item_index] = run
        steps.append(
            {
                "id": step_id,
                "role": step.role,
                "needs": step.needs,
                "depth": depth[step_id],
                "for_each": step.for_each,
                "loop": step.loop,
                "condition": step.condition,
                "runs": mine,
                "latest": list(latest.values()),
                "status": _step_status([r.status for r in latest.values()]),
                "cost_usd": sum((r.agent.cost_usd for r in mine if r.agent), Decimal(0)),
            }
        )
    return steps


def _step_status(statuses: list[str]) -> str:
    if not statuses:
        return "waiting"
    for status in ("failed", "cancelled", "running"):
        if status in statuses:
            return status
    return "skipped" if set(statuses) == {"skipped"} else "completed"


def workflow_columns(*, workflow: Workflow) -> list[list[dict[str, Any]]]:
    """The steps grouped by depth in the graph (a column per level, left to right)."""
    steps = workflow_steps(workflow=workflow)
    columns: list[list[dict[str, Any]]] = [[] for _ in range(1 + max((s["depth"] for s in steps), default=0))]
    for step in steps:
        columns[step["depth"]].append(step)
    return columns


def workflows_visible_to(user) -> QuerySet[Workflow]:
    from teams.selectors import projects_visible_to

    return Workflow.objects.filter(project__in=projects_visible_to(user)).select_related(
        "template", "project"
    )
