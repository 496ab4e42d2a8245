"""Approvals: tool calls waiting for a person, decided from the team's inbox (dashboard or admin).

The agent waits (`waiting`, for `approval`) without a worker. A decision is one conditional UPDATE
(no request is decided twice) and an audit event; once none of the agent's requests is pending
it is queued again, and its next run finds the decision: approved calls run (with the input a
person may have edited), denied ones answer the model with the reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.errors import OrchestratorError
from agents.events import event_record
from agents.models import (
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    PermissionRule,
    RuleAction,
    WaitingFor,
)
from agents.permissions import main_input, pattern_check, rule_for_call

A = ApprovalStatus


class Event:
    REQUESTED = "approval_requested"
    DECIDED = "approval_decided"
    ESCALATED = "approval_escalated"


def approval_request(*, agent_id: int, tool_use: dict[str, Any], reason: str) -> ApprovalRequest:
    """Store a call that needs a person (once per call: a resumed run finds the same request)."""
    with transaction.atomic():
        request, created = ApprovalRequest.objects.get_or_create(
            agent_id=agent_id,
            tool_use_id=tool_use["id"],
            defaults={"tool": tool_use["name"], "input": tool_use.get("input"), "reason": reason},
        )
        if created:
            event_record(
                agent_id,
                Event.REQUESTED,
                {
                    "approval": request.pk,
                    "tool": request.tool,
                    "summary": main_input(request.tool, request.input)[:300],
                    "reason": reason,
                },
            )
    return request


def approval_decide(
    *,
    request: ApprovalRequest,
    approve: bool,
    by: AbstractBaseUser | None,
    note: str = "",
    edited_input: Any = None,
) -> ApprovalRequest:
    """Approve (optionally with an edited input) or deny with a note the model will read."""
    if not approve and not note.strip():
        note = "A person denied this call."
    if edited_input is not None and not isinstance(edited_input, dict):
        raise OrchestratorError("The edited input must be a JSON object, like the original.")
    with transaction.atomic():
        decided = ApprovalRequest.objects.filter(pk=request.pk, status=A.PENDING).update(
            status=A.APPROVED if approve else A.DENIED,
            approved_input=edited_input if approve else None,
            decided_by=by,
            decided_at=timezone.now(),
            decision_note=note.strip(),
        )
        if not decided:
            request.refresh_from_db()
            raise OrchestratorError(f"Approval {request.pk} was already {request.status}.")
        request.refresh_from_db()
        event_record(
            request.agent_id,
            Event.DECIDED,
            {
                "approval": request.pk,
                "tool": request.tool,
                "decision": request.status,
                "edited": edited_input is not None,
                "note": request.decision_note,
            },
            by=by,
        )
        _resume_if_decided(request.agent_id)
    return request


def _resume_if_decided(agent_id: int) -> None:
    """Queue the agent once none of its calls waits for a person."""
    from agents.services import agent_transition
    from agents.tasks import enqueue_agent_run

    if ApprovalRequest.objects.filter(agent_id=agent_id, status=A.PENDING).exists():
        return
    waiting = Q(status=AgentStatus.WAITING, waiting_for=WaitingFor.APPROVAL)
    if agent_transition(agent_id=agent_id, to=AgentStatus.PENDING, reason="Approval decided.", where=waiting):
        transaction.on_commit(lambda: enqueue_agent_run(agent_id=agent_id))


def approvals_approve_similar(*, request: ApprovalRequest, by: AbstractBaseUser | None) -> list[int]:
    """Approve this request and every pending one of the same team with the same tool and input."""
    similar = pending_for_team(team_id=request.agent.project.team_id).filter(tool=request.tool)
    decided = []
    for other in similar:
        if other.pk == request.pk or other.input == request.input:
            approval_decide(request=other, approve=True, by=by)
            decided.append(other.pk)
    return decided


def approval_make_rule(
    *, request: ApprovalRequest, by: AbstractBaseUser | None, action: str = RuleAction.ALLOW
) -> PermissionRule:
    """Turn this call into a project rule (the next identical call obeys it), and decide it so."""
    pattern = rule_for_call(request.tool, request.input)
    with transaction.atomic():
        rule, _ = PermissionRule.objects.get_or_create(
            project_id=request.agent.project_id, action=action, pattern=pattern, defaults={"created_by": by}
        )
        if request.status == A.PENDING and action in (RuleAction.ALLOW, RuleAction.DENY):
            approve = action == RuleAction.ALLOW
            approval_decide(
                request=request, approve=approve, by=by, note="" if approve else f"Rule {pattern}."
            )
    return rule


def rule_create(
    *, project_id: int, action: str, pattern: str, by: AbstractBaseUser | None = None
) -> PermissionRule:
    try:
        pattern = pattern_check(pattern)
    except ValueError as exc:
        raise OrchestratorError(str(exc)) from None
    if action not in RuleAction.values:
        raise OrchestratorError(f"A rule's action is allow, deny or ask, not {action!r}.")
    rule, _ = PermissionRule.objects.get_or_create(
        project_id=project_id, action=action, pattern=pattern, defaults={"created_by": by}
    )
    return rule


def pending_for_team(*, team_id: int) -> QuerySet[ApprovalRequest]:
    return ApprovalRequest.objects.filter(status=A.PENDING, agent__project__team_id=team_id)


def approvals_escalate() -> list[int]:
    """Pending requests older than ORCHESTRATOR_APPROVAL_ESCALATE_SECONDS get a badge and an event
    (once). Run by the reaper."""
    limit = timezone.now() - timedelta(seconds=settings.ORCHESTRATOR_APPROVAL_ESCALATE_SECONDS)
    escalated = []
    for request in ApprovalRequest.objects.filter(
        status=A.PENDING, escalated_at__isnull=True, created_at__lt=limit
    ):
        with transaction.atomic():
            if ApprovalRequest.objects.filter(pk=request.pk, escalated_at__isnull=True).update(
                escalated_at=timezone.now()
            ):
                waited = int((timezone.now() - request.created_at).total_seconds())
                event_record(
                    request.agent_id,
                    Event.ESCALATED,
                    {"approval": request.pk, "tool": request.tool, "waited_seconds": waited},
                )
                escalated.append(request.pk)
    return escalated
