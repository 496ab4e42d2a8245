"""The REST API (django-ninja: typed schemas, an OpenAPI document at /api/openapi.json, docs at
/api/docs). Thin like the views: every read is a selector, every change the same service the
dashboard, the admin and the CLI call; everything is scoped to the token owner's teams.

Errors always have one shape: {"error": {"code": "...", "message": "...", "details": ...}}.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer
from pydantic import Field

from agents import selectors
from agents.approvals import approval_decide
from agents.errors import OrchestratorError
from agents.events import event_message
from agents.models import Agent, ApprovalRequest
from agents.services import (
    AGENT_CONTROLS,
    SpawnNotAllowed,
    agent_spawn,
    agents_spawn_batch,
    message_send,
    project_for_person,
)
from budgets.selectors import subtree_totals
from teams.selectors import can_act, projects_visible_to
from teams.services import api_token_user


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = api_token_user(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="Orchestrator API",
    version="1",
    description="Spawn and steer agents, read their events, transcripts and costs. "
    "Authenticate with `Authorization: Bearer <token>` (make tokens at /tokens/).",
    auth=TokenAuth(),
    urls_namespace="api",
)


# --- errors ---------------------------------------------------------------------------------


class ErrorBody(Schema):
    code: str
    message: str
    details: Any = None


class Error(Schema):
    error: ErrorBody


def _error(request: HttpRequest, status: int, code: str, message: str, details: Any = None) -> HttpResponse:
    response = api.create_response(
        request, {"error": {"code": code, "message": message, "details": details}}, status=status
    )
    return response


@api.exception_handler(OrchestratorError)
def _bad_request(request: HttpRequest, exc: OrchestratorError) -> HttpResponse:
    return _error(request, 400, "invalid", str(exc))


@api.exception_handler(SpawnNotAllowed)
def _spawn_not_allowed(request: HttpRequest, exc: SpawnNotAllowed) -> HttpResponse:
    return _error(request, 403, "forbidden", str(exc))


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    details = [
        {"where": ".".join(str(p) for p in e.get("loc", [])), "problem": e.get("msg", "")} for e in exc.errors
    ]
    return _error(request, 422, "validation", "The request does not match the schema.", details)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, "unauthenticated", "A valid API token is required (Authorization: Bearer ...)."
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", str(exc) or "Not found.")


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, "forbidden", str(exc) or "Not allowed.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {400: "bad_request", 429: "rate_limited", 405: "method_not_allowed"}.get(exc.status_code, "error")
    response = _error(request, exc.status_code, code, str(exc))
    if exc.status_code == 429:
        response["Retry-After"] = "60"
    return response


@api.exception_handler(OverflowError)
def _too_big(request: HttpRequest, exc: OverflowError) -> HttpResponse:
    return _error(request, 400, "invalid", "A number in the request is too large.")


@api.exception_handler(DataError)
def _out_of_range(request: HttpRequest, exc: DataError) -> HttpResponse:
    return _error(request, 400, "invalid", "A value in the request is out of range.")


@api.exception_handler(Exception)
def _internal(request: HttpRequest, exc: Exception) -> HttpResponse:
    import logging

    logging.getLogger(__name__).exception("API error on %s", request.path)
    return _error(request, 500, "internal", "Internal error; it was logged.")


MAX_ID = 2**62  # ids beyond this can't exist (and would overflow the database's integers)


# --- schemas --------------------------------------------------------------------------------


class AgentOut(Schema):
    id: int
    parent: int | None
    project: str
    role: str
    model: str
    status: str
    status_reason: str
    task: str
    result: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_usd: str
    spent_usd: str
    reserved_usd: str
    budget_usd: str | None
    budget_tokens: int | None
    waiting_for: str | None
    turns: int
    branch: str | None
    worktree: str | None
    created_at: str
    finished_at: str | None


class SpawnIn(Schema):
    role: str = Field(min_length=1, max_length=50)
    task: str = Field(min_length=1, max_length=100_000)
    repo: str | None = Field(default=None, max_length=1000)
    parent: int | None = Field(default=None, ge=1, le=MAX_ID)
    model: str | None = Field(default=None, max_length=100)
    budget_usd: float | None = Field(default=None, ge=0, le=10**9)
    budget_tokens: int | None = Field(default=None, ge=0, le=10**15)
    permission_mode: Literal["ask", "accept-edits", "plan", "auto"] | None = None


class BatchEntryIn(SpawnIn):
    key: str | None = Field(
        default=None, max_length=200, description="Spawning the same key again creates nothing."
    )


class BatchIn(Schema):
    entries: list[BatchEntryIn] = Field(min_length=1, max_length=5000)


class BatchOut(Schema):
    created: list[int]
    skipped_keys: list[str]  # entries spawned before with the same key (an idempotent re-run)


class EventOut(Schema):
    agent: int
    project: int
    seq: int
    kind: str
    data: dict[str, Any]
    created_at: str
    by: str | None


class EventPage(Schema):
    events: list[EventOut]
    next_after: int
    agent_status: str


class TranscriptOut(Schema):
    seq: int
    kind: str
    payload: dict[str, Any]
    duration_ms: int | None
    created_at: str


class CostOut(Schema):
    agent: int
    cost_usd: str
    input_tokens: int
    output_tokens: int
    subtree_cost_usd: str
    subtree_agents: int


class MessageIn(Schema):
    body: str = Field(min_length=1, max_length=20_000)


class MessageOut(Schema):
    id: int
    recipient: int


class ApprovalOut(Schema):
    id: int
    agent: int
    tool: str
    input: Any
    reason: str
    status: str
    created_at: str
    escalated: bool


class DecideIn(Schema):
    note: str = Field(default="", max_length=5000)
    input: dict[str, Any] | None = None


class WorkflowIn(Schema):
    template: str = Field(min_length=1, max_length=100)
    input: str = Field(min_length=1, max_length=100_000)
    repo: str = Field(min_length=1, max_length=1000)
    budget_usd: float | None = Field(default=None, ge=0, le=10**9)


class WorkflowOut(Schema):
    id: int
    template: str
    status: str
    status_reason: str
    cost_usd: str
    steps: list[dict[str, Any]]


# --- helpers --------------------------------------------------------------------------------


def _agent(request: HttpRequest, agent_id: int, *, act: bool = False) -> Agent:
    agent = selectors.agent_visible(user=request.user, agent_id=agent_id)
    if agent is None:
        raise Http404(f"Agent {agent_id} does not exist.")
    if act and not can_act(request.user, agent.project_id):
        raise PermissionDenied("You may read this agent but not change it (viewer).")
    return agent


def _out(agent: Agent) -> dict[str, Any]:
    agent = selectors.agent_get(agent_id=agent.pk) or agent
    return selectors.agent_as_dict(agent)


def _check_spawn_rate(request: HttpRequest, count: int = 1) -> None:
    """Spawns per minute, per user and per team (counted from the agents themselves, so every
    web process agrees without a shared cache)."""
    since = timezone.now() - timedelta(minutes=1)
    mine = Agent.objects.filter(spawned_by=request.user, created_at__gte=since).count()
    if mine + count > settings.ORCHESTRATOR_SPAWN_RATE_USER:
        raise HttpError(
            429, f"At most {settings.ORCHESTRATOR_SPAWN_RATE_USER} spawns a minute per user; try later."
        )
    teams = request.user.memberships.values_list("team_id", flat=True)
    team_count = Agent.objects.filter(
        project__team_id__in=teams, spawned_by__isnull=False, created_at__gte=since
    ).count()
    if teams and team_count + count > settings.ORCHESTRATOR_SPAWN_RATE_TEAM:
        raise HttpError(
            429, f"At most {settings.ORCHESTRATOR_SPAWN_RATE_TEAM} spawns a minute per team; try later."
        )


def _check_repo(request: HttpRequest, repo: str | None, parent: int | None) -> None:
    """A parent must be one the caller may act on; a repository, one of their projects (or new)."""
    if parent is not None:
        _agent(request, parent, act=True)
    elif repo:
        project_for_person(user=request.user, repo_path=repo)


# --- agents ---------------------------------------------------------------------------------


@api.get("/agents", response=list[AgentOut], tags=["agents"])
def list_agents(
    request: HttpRequest,
    project: int | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
):
    limit, offset = max(1, min(limit, 1000)), max(0, min(offset, 10**9))
    if project is not None and not 0 < project <= MAX_ID:
        return []
    agents = Agent.objects.filter(project__in=projects_visible_to(request.user)).select_related(
        "role", "project", "workspace", "budget"
    )
    if project is not None:
        agents = agents.filter(project_id=project)
    if status:
        agents = agents.filter(status=status)
    return [
        selectors.agent_as_dict(a) for a in agents.order_by("-pk")[max(0, offset) : max(0, offset) + limit]
    ]


@api.post("/agents", response={201: AgentOut}, tags=["agents"])
def spawn(request: HttpRequest, body: SpawnIn):
    _check_spawn_rate(request)
    _check_repo(request, body.repo, body.parent)
    agent = agent_spawn(
        role=body.role,
        task=body.task,
        repo_path=body.repo,
        parent=body.parent,
        model=body.model,
        budget_usd=body.budget_usd,
        budget_tokens=body.budget_tokens,
        permission_mode=body.permission_mode,
        spawned_by=request.user,
    )
    return Status(201, _out(agent))


@api.post("/agents/batch", response={201: BatchOut}, tags=["agents"])
def spawn_batch(request: HttpRequest, body: BatchIn):
    _check_spawn_rate(request, len(body.entries))
    for entry in body.entries:
        _check_repo(request, entry.repo, entry.parent)
    entries = [{k: v for k, v in e.dict().items() if v is not None} for e in body.entries]
    result = agents_spawn_batch(entries=entries, spawned_by=request.user)
    return Status(201, {"created": [a.pk for a in result.created], "skipped_keys": result.skipped})


@api.get("/agents/{agent_id}", response=AgentOut, tags=["agents"])
def get_agent(request: HttpRequest, agent_id: int):
    return _out(_agent(request, agent_id))


@api.get("/agents/{agent_id}/events", response=EventPage, tags=["agents"])
def agent_events(request: HttpRequest, agent_id: int, after: int = 0, limit: int = 500):
    """Events numbered after `after`, in order; poll with `after=next_after` to follow."""
    agent = _agent(request, agent_id)
    events = selectors.agent_events(agent_id=agent.pk, after=max(0, after), limit=max(1, min(limit, 1000)))
    return {
        "events": [event_message(e, project_id=agent.project_id) for e in events],
        "next_after": events[-1].seq if events else max(0, after),
        "agent_status": agent.status,
    }


@api.get("/agents/{agent_id}/transcript", response=list[TranscriptOut], tags=["agents"])
def agent_transcript(request: HttpRequest, agent_id: int):
    agent = _agent(request, agent_id)
    return [
        {
            "seq": e.seq,
            "kind": e.kind,
            "payload": e.payload,
            "duration_ms": e.duration_ms,
            "created_at": e.created_at.isoformat(),
        }
        for e in agent.transcript.order_by("seq")
    ]


@api.get("/agents/{agent_id}/cost", response=CostOut, tags=["agents"])
def agent_cost(request: HttpRequest, agent_id: int):
    agent = _agent(request, agent_id)
    totals = subtree_totals(agent=agent)
    return {
        "agent": agent.pk,
        "cost_usd": str(agent.cost_usd),
        "input_tokens": agent.input_tokens,
        "output_tokens": agent.output_tokens,
        "subtree_cost_usd": str(totals["cost_usd"] or 0),
        "subtree_agents": totals["agents"],
    }


@api.post("/agents/{agent_id}/messages", response={201: MessageOut}, tags=["control"])
def send_message(request: HttpRequest, agent_id: int, body: MessageIn):
    agent = _agent(request, agent_id, act=True)
    message = message_send(recipient=agent, body=body.body, sent_by_user=request.user)
    return Status(201, {"id": message.pk, "recipient": agent.pk})


@api.post("/agents/{agent_id}/{action}", response=AgentOut, tags=["control"])
def control(
    request: HttpRequest,
    agent_id: int,
    action: Literal["pause", "resume", "cancel", "cancel-subtree", "retry"],
):
    agent = _agent(request, agent_id, act=True)
    AGENT_CONTROLS[action](agent, request.user)
    return _out(agent)


# --- approvals ------------------------------------------------------------------------------


def _approval_out(a: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": a.pk,
        "agent": a.agent_id,
        "tool": a.tool,
        "input": a.input,
        "reason": a.reason,
        "status": a.status,
        "created_at": a.created_at.isoformat(),
        "escalated": a.escalated_at is not None,
    }


@api.get("/approvals", response=list[ApprovalOut], tags=["approvals"])
def list_approvals(request: HttpRequest, status: Literal["pending", "approved", "denied"] = "pending"):
    approvals = ApprovalRequest.objects.filter(
        agent__project__in=projects_visible_to(request.user), status=status
    ).order_by("created_at")[:500]
    return [_approval_out(a) for a in approvals]


@api.post("/approvals/{approval_id}/{decision}", response=ApprovalOut, tags=["approvals"])
def decide_approval(
    request: HttpRequest, approval_id: int, decision: Literal["approve", "deny"], body: DecideIn
):
    approval = ApprovalRequest.objects.filter(
        pk=approval_id, agent__project__in=projects_visible_to(request.user)
    ).first()
    if approval is None:
        raise Http404(f"Approval {approval_id} does not exist.")
    _agent(request, approval.agent_id, act=True)
    approval = approval_decide(
        request=approval,
        approve=decision == "approve",
        by=request.user,
        note=body.note,
        edited_input=body.input,
    )
    return _approval_out(approval)


# --- workflows ------------------------------------------------------------------------------


def _workflow_out(workflow) -> dict[str, Any]:
    from workflows.selectors import workflow_steps
    from workflows.services import workflow_cost

    steps = [
        {
            "id": s["id"],
            "role": s["role"],
            "status": s["status"],
            "cost_usd": str(s["cost_usd"]),
            "runs": [
                {"item": r.item_index, "round": r.round, "status": r.status, "agent": r.agent_id}
                for r in s["runs"]
            ],
        }
        for s in workflow_steps(workflow=workflow)
    ]
    return {
        "id": workflow.pk,
        "template": workflow.template.name,
        "status": workflow.status,
        "status_reason": workflow.status_reason,
        "cost_usd": str(workflow_cost(workflow=workflow)),
        "steps": steps,
    }


@api.post("/workflows", response={201: WorkflowOut}, tags=["workflows"])
def start_workflow(request: HttpRequest, body: WorkflowIn):
    from workflows.services import workflow_start

    _check_spawn_rate(request)
    _check_repo(request, body.repo, None)
    workflow = workflow_start(
        template=body.template,
        input=body.input,
        repo_path=body.repo,
        budget_usd=body.budget_usd,
        by=request.user,
    )
    return Status(201, _workflow_out(workflow))


@api.get("/workflows/{workflow_id}", response=WorkflowOut, tags=["workflows"])
def get_workflow(request: HttpRequest, workflow_id: int):
    from workflows.selectors import workflows_visible_to

    workflow = workflows_visible_to(request.user).filter(pk=workflow_id).first()
    if workflow is None:
        raise Http404(f"Workflow {workflow_id} does not exist.")
    return _workflow_out(workflow)
