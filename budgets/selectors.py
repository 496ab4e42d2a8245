"""Where the money went: cost and tokens rolled up per agent, subtree, role, model, project, day.

Each is one aggregate query over the daily rollup (budgets.UsageDaily) or the totals kept on agent
rows, so its cost does not grow with the number of usage rows.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, QuerySet, Sum

from agents.models import Agent
from budgets.models import UsageDaily

TOTALS = {
    "cost_usd": Sum("cost_usd"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "calls": Sum("calls"),
}


def _daily(project_id: int | None) -> QuerySet[UsageDaily]:
    daily = UsageDaily.objects.all()
    return daily.filter(project_id=project_id) if project_id is not None else daily


def cost_by_role(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(_daily(project_id).values("role").annotate(**TOTALS).order_by("-cost_usd"))


def cost_by_model(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(_daily(project_id).values("model").annotate(**TOTALS).order_by("-cost_usd"))


def cost_by_project() -> list[dict[str, Any]]:
    return list(
        UsageDaily.objects.values(project_name=F("project__name")).annotate(**TOTALS).order_by("-cost_usd")
    )


def cost_by_day(*, project_id: int | None = None) -> list[dict[str, Any]]:
    return list(_daily(project_id).values("day").annotate(**TOTALS).order_by("day"))


def subtree_totals(*, agent: Agent) -> dict[str, Any]:
    """The agent and all its descendants, from the totals kept on each agent row."""
    return agent.descendants(include_self=True).aggregate(
        cost_usd=Sum("cost_usd"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        agents=Count("id"),
    )


def project_totals(*, project_id: int) -> dict[str, Any]:
    return _daily(project_id).aggregate(**TOTALS)
