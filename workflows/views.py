"""Workflow pages: the list, and one workflow as a live graph of its steps with retry and cancel."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.errors import OrchestratorError
from teams.selectors import can_act
from workflows.models import StepRun
from workflows.selectors import workflow_columns, workflows_visible_to
from workflows.services import workflow_cancel, workflow_cost, workflow_step_retry


@login_required
def workflow_list(request: HttpRequest) -> HttpResponse:
    workflows = workflows_visible_to(request.user).order_by("-pk")[:200]
    return render(request, "workflows/workflow_list.html", {"workflows": workflows})


@login_required
def workflow_detail(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = _visible(request, workflow_id)
    return render(request, "workflows/workflow_detail.html", graph_context(workflow, request.user))


def graph_context(workflow, user) -> dict:
    return {
        "workflow": workflow,
        "columns": workflow_columns(workflow=workflow),
        "cost": workflow_cost(workflow=workflow),
        "can_act": can_act(user, workflow.project_id),
    }


@login_required
@require_POST
def workflow_control(request: HttpRequest, workflow_id: int, action: str) -> HttpResponse:
    workflow = _visible(request, workflow_id)
    if not can_act(request.user, workflow.project_id):
        raise PermissionDenied("You may look at this workflow but not change it.")
    try:
        if action == "cancel":
            workflow_cancel(workflow=workflow, by=request.user)
            messages.success(request, "Workflow cancelled; its running agents were cancelled.")
        elif action == "retry":
            run = StepRun.objects.filter(pk=request.POST.get("run"), workflow=workflow).first()
            if run is None:
                raise Http404("No such step run.")
            workflow_step_retry(run=run, by=request.user)
            messages.success(request, f"Step {run.step} retried; the workflow goes on when it finishes.")
        else:
            raise Http404("No such action.")
    except OrchestratorError as exc:
        messages.error(request, str(exc))
    return redirect("workflows:detail", workflow.pk)


def _visible(request: HttpRequest, workflow_id: int):
    workflow = workflows_visible_to(request.user).filter(pk=workflow_id).first()
    if workflow is None:
        raise Http404("No such workflow.")
    return workflow
