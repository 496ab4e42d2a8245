"""Where the money went: cost and tokens rolled up per agent, subtree, role, model, project, day.

Each is one aggregate query, whatever the number of agents or usage rows.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate

from agents.models import Agent
from budgets.models import UsageRecord

TOTALS = {
    "cost_usd": Sum("cost_usd"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "calls": Count("id"),
}


def _usage(project_id: int | None) -> QuerySet[UsageRecord]:
    usage = UsageRecord.objects.all()
    return usage.filter(agent__project_id=project_id) if project_id is not None else usage


def cost_by_role(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(
        _usage(project_id).values(role=F("agent__role__name")).annotate(**TOTALS).order_by("-cost_usd")
    )


def cost_by_model(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(_usage(project_id).values("model").annotate(**TOTALS).order_by("-cost_usd"))


def cost_by_project() -> list[dict[str, Any]]:
    return list(
        UsageRecord.objects.values(project=F("agent__project__name")).annotate(**TOTALS).order_by("-cost_usd")
    )


def cost_by_day(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(
        _usage(project_id)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(**TOTALS)
        .order_by("day")
    )


def subtree_totals(*, agent: Agent) -> dict[str, Any]:
    """The agent and all its descendants, from the totals kept on each agent row."""
    return agent.descendants(include_self=True).aggregate(
        cost_usd=Sum("cost_usd"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        agents=Count("id"),
    )
