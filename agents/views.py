"""Dashboard pages and controls: thin. Reads come from selectors, every change from a service (the
same ones the admin and the CLI call). Pages work without JavaScript; htmx and the websocket
(agents.consumers) only make them live."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_POST

from agents import selectors
from agents.approvals import approval_decide, approval_make_rule, approvals_approve_similar
from agents.errors import OrchestratorError
from agents.forms import BudgetForm, MessageForm, SpawnForm
from agents.lifecycle import agent_archive
from agents.merges import merge_abandon, merge_request, merge_resolve, merges_for
from agents.models import Agent, AgentStatus, ApprovalRequest, Merge
from agents.services import AGENT_CONTROLS, agent_spawn, message_send, project_for_person
from budgets import charts
from budgets import selectors as money
from budgets.services import budget_set, project_month_budget
from teams.selectors import can_act, projects_acting, projects_visible_to

OVERVIEW_PAGE_SIZE = 100
CHART_DAYS = 30


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    project_id = _int_or_none(request.GET.get("project"))
    status = request.GET.get("status") if request.GET.get("status") in AgentStatus.values else ""
    agents = selectors.agent_overview(user=request.user, project_id=project_id, status=status or None)
    page = Paginator(agents, OVERVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
    filters = {k: v for k, v in {"project": project_id or "", "status": status}.items() if v}
    context = {
        "page_obj": page,
        "projects": projects_visible_to(request.user).order_by("name"),
        "project_id": project_id,
        "status": status,
        "statuses": AgentStatus.choices,
        "filter_query": urlencode(filters),
        # The live connection adds rows for new agents only on the first page, unfiltered by status.
        "ws_query": urlencode({**filters, "page": page.number}),
        "can_spawn": projects_acting(request.user).exists() or request.user.is_superuser,
    }
    return render(request, "agents/agent_list.html", context)


@login_required
def agent_detail(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = _visible_agent(request, agent_id)
    events = selectors.agent_events(agent_id=agent.pk)
    context = {
        "agent": agent,
        "log": selectors.log_items(events),
        "cursor": events[-1].seq if events else 0,
        "children": selectors.agent_rows(
            agent_ids=agent.children.order_by("-pk").values_list("pk", flat=True)
        ),
        "can_act": can_act(request.user, agent.project_id),
        "changes": selectors.agent_changes(agent=agent),
        "merges": merges_for(agent=agent),
    }
    return render(request, "agents/agent_detail.html", context)


@login_required
def agent_new(request: HttpRequest) -> HttpResponse:
    projects = projects_acting(request.user).order_by("name")
    form = SpawnForm(request.POST or None, projects=projects, initial={"parent": request.GET.get("parent")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            repo = _repo_for_spawn(request, data)
            agent = agent_spawn(
                role=data["role"].name,
                task=data["task"],
                repo_path=repo,
                parent=data["parent"],
                model=data["model"],
                budget_usd=data["budget_usd"],
                budget_tokens=data["budget_tokens"],
                spawned_by=request.user,
                permission_mode=data["permission_mode"] or None,
            )
        except OrchestratorError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("dashboard:agent", agent.pk)
    return render(request, "agents/agent_new.html", {"form": form})


def _repo_for_spawn(request: HttpRequest, data: dict) -> str | None:
    """The repository to spawn in, checking the person may act there."""
    if data.get("parent"):
        parent = selectors.agent_visible(user=request.user, agent_id=data["parent"])
        if parent is None or not can_act(request.user, parent.project_id):
            raise OrchestratorError(f"Parent agent {data['parent']} does not exist.")
        return None
    if data.get("project"):
        return data["project"].repo_path
    return project_for_person(user=request.user, repo_path=data["repo"].strip()).repo_path


CONTROLS = {
    **AGENT_CONTROLS,
    "merge": lambda agent, user: merge_request(agent=agent, by=user),
    "archive": lambda agent, user: agent_archive(agent=agent, subtree=True, by=user),
}
DONE = {
    "pause": "Paused.",
    "resume": "Resumed.",
    "retry": "Queued again.",
    "cancel": "Cancelled.",
    "cancel-subtree": "Cancelled with its descendants.",
    "merge": "Merge queued; it is tested and merged in turn.",
    "archive": "Archived: its worktree (and its descendants') removed; the branches stay.",
}


@login_required
@require_POST
def agent_control(request: HttpRequest, agent_id: int, action: str) -> HttpResponse:
    agent = _acting_agent(request, agent_id)
    if action not in CONTROLS:
        raise Http404("No such action.")
    return _respond(request, agent, lambda: CONTROLS[action](agent, request.user), DONE[action])


@login_required
@require_POST
def agent_message(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = _acting_agent(request, agent_id)
    form = MessageForm(request.POST)
    if not form.is_valid():
        return _respond(request, agent, None, "", error="The message is empty or too long.")
    return _respond(
        request,
        agent,
        lambda: message_send(recipient=agent, body=form.cleaned_data["body"], sent_by_user=request.user),
        "Message sent.",
    )


@login_required
@require_POST
def agent_budget(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = _acting_agent(request, agent_id)
    form = BudgetForm(request.POST)
    form.is_valid()
    usd, tokens = form.cleaned_data.get("usd") or None, form.cleaned_data.get("tokens") or None
    return _respond(
        request,
        agent,
        lambda: budget_set(
            agent=agent,
            usd=usd,
            tokens=tokens,
            note=f"set by {request.user} on the dashboard",
            by=request.user,
        ),
        "Budget set.",
    )


@login_required
@require_POST
def merge_action(request: HttpRequest, merge_id: int, action: str) -> HttpResponse:
    """A person settles a conflicted merge: spawn a resolver agent, or abandon it."""
    merge = Merge.objects.filter(pk=merge_id, project__in=projects_visible_to(request.user)).first()
    if merge is None or action not in ("resolve", "abandon"):
        raise Http404("No such merge.")
    agent = _acting_agent(request, merge.agent_id) if merge.agent_id else None
    if agent is None:
        raise Http404("No such merge.")
    if action == "resolve":
        return _respond(
            request, agent, lambda: merge_resolve(merge=merge, by=request.user), "Resolver spawned."
        )
    return _respond(request, agent, lambda: merge_abandon(merge=merge, by=request.user), "Merge abandoned.")


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = projects_visible_to(request.user).select_related("team").filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    today = timezone.localdate()
    by_day = {row["day"]: row["cost_usd"] for row in money.cost_by_day(project_id=project.pk)}
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    context = {
        "project": project,
        "days": CHART_DAYS,
        "totals": money.project_totals(project_id=project.pk),
        "month": project_month_budget(project=project),
        "agent_counts": project.agents.values("status").annotate(n=Count("id")).order_by("status"),
        "chart_days": charts.column_chart(
            [(day.isoformat(), by_day.get(day, 0)) for day in days], label="Cost per day"
        ),
        "chart_roles": charts.bar_chart(
            [(r["role"], r["cost_usd"]) for r in money.cost_by_role(project_id=project.pk)],
            label="Cost by role",
        ),
        "chart_models": charts.bar_chart(
            [(r["model"], r["cost_usd"]) for r in money.cost_by_model(project_id=project.pk)],
            label="Cost by model",
        ),
    }
    return render(request, "projects/project_detail.html", context)


# --- helpers --------------------------------------------------------------------------------


def _visible_agent(request: HttpRequest, agent_id: int) -> Agent:
    agent = selectors.agent_visible(user=request.user, agent_id=agent_id)
    if agent is None:
        raise Http404("No such agent.")
    return agent


def _acting_agent(request: HttpRequest, agent_id: int) -> Agent:
    agent = _visible_agent(request, agent_id)
    if not can_act(request.user, agent.project_id):
        raise PermissionDenied("You may look at this agent but not change it.")
    return agent


def _respond(request: HttpRequest, agent: Agent, change, done: str, error: str = "") -> HttpResponse:
    """Run a control; answer htmx with a flash fragment (the websocket shows the change), and a
    plain form post with a redirect back to the agent's page."""
    if change is not None and not error:
        try:
            change()
        except OrchestratorError as exc:
            error = str(exc)
    if request.htmx:
        html = render_to_string("agents/_flash.html", {"text": error or done, "error": bool(error)})
        return HttpResponse(html)  # 200 either way: htmx swaps only successful responses
    if error:
        messages.error(request, error)
    else:
        messages.success(request, done)
    return redirect("dashboard:agent", agent.pk)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# --- approvals inbox ------------------------------------------------------------------------


@login_required
def approvals_inbox(request: HttpRequest) -> HttpResponse:
    return render(request, "agents/approvals.html", selectors.approvals_inbox(request.user))


APPROVAL_DONE = {
    "approve": "Approved; the agent carries on.",
    "deny": "Denied; the agent hears why.",
    "edit": "Approved with your input.",
    "similar": "Approved, with every pending call like it.",
    "rule": "Rule added and this call approved.",
}


@login_required
@require_POST
def approval_action(request: HttpRequest, approval_id: int, action: str) -> HttpResponse:
    approval = (
        ApprovalRequest.objects.filter(pk=approval_id, agent__project__in=projects_visible_to(request.user))
        .select_related("agent__project")
        .first()
    )
    if approval is None or action not in APPROVAL_DONE:
        raise Http404("No such approval.")
    if not can_act(request.user, approval.agent.project_id):
        raise PermissionDenied("You may look at this approval but not decide it.")
    user = request.user
    try:
        if action == "approve":
            approval_decide(request=approval, approve=True, by=user)
        elif action == "deny":
            approval_decide(request=approval, approve=False, by=user, note=request.POST.get("note", ""))
        elif action == "edit":
            try:
                edited = json.loads(request.POST.get("input", ""))
            except ValueError as exc:
                raise OrchestratorError(f"The edited input is not valid JSON: {exc}") from None
            approval_decide(request=approval, approve=True, by=user, edited_input=edited)
        elif action == "similar":
            approvals_approve_similar(request=approval, by=user)
        else:
            approval_make_rule(request=approval, by=user)
    except OrchestratorError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, APPROVAL_DONE[action])
    if request.htmx:
        return render(request, "agents/_inbox.html", {**selectors.approvals_inbox(user), "oob": True})
    return redirect("dashboard:approvals")
