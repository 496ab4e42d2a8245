"""Writes of the agents app: projects, spawning, status transitions, mail and control.

Running an agent in a worker lives in agents.execution; this module is what people, the CLI, the
admin and the delegation tools call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.brokers import get_broker

from agents import hooks, workspaces
from agents.errors import ConfigurationError, InvalidTransition, OrchestratorError
from agents.events import Kind, event_record, event_record_first
from agents.models import (
    FINISHED_STATUSES,
    Agent,
    AgentStatus,
    Merge,
    MergeStatus,
    Message,
    MessageKind,
    PermissionMode,
    Project,
    Role,
    WaitingFor,
    Workspace,
)
from agents.permissions import stricter
from agents.tasks import enqueue_agent_run
from budgets.models import Budget
from budgets.pricing import PricingError, price_for_model
from budgets.services import (
    BudgetError,
    budget_create,
    budget_return_leftover,
    parse_tokens,
    parse_usd,
    project_check_cap,
)
from teams.models import Team
from teams.selectors import can_act, default_team, team_for_new_project

S = AgentStatus
# The only status changes there are. Anything else is refused with InvalidTransition.
TRANSITIONS: dict[str, set[str]] = {
    S.PENDING: {S.RUNNING, S.PAUSED, S.CANCELLED, S.FAILED},
    S.RUNNING: {S.PENDING, S.WAITING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED},
    S.WAITING: {S.PENDING, S.PAUSED, S.CANCELLED, S.FAILED},
    S.PAUSED: {S.PENDING, S.WAITING, S.CANCELLED},
    S.FAILED: {S.PENDING},
    S.CANCELLED: {S.PENDING},
    S.COMPLETED: set(),
}


def allowed_sources(target: str) -> set[str]:
    return {source for source, targets in TRANSITIONS.items() if target in targets}


def agent_transition(
    *,
    agent_id: int,
    to: str,
    reason: str = "",
    lease_token: Any = None,
    where: Q | None = None,
    extra: Mapping[str, Any] | None = None,
    by: AbstractBaseUser | None = None,
) -> bool:
    """Move an agent to `to` if the table allows it from its current status; record the change.

    One conditional UPDATE, so two racing callers can't both succeed. With `lease_token`, only
    the worker holding that lease may make the change (fencing). With `where`, the row must also
    match it; if it does not, nothing changes and False is returned (for sweeps like the reaper).
    """
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "status_reason": reason, "updated_at": now}
    if to != S.RUNNING:
        fields |= {"lease_token": None, "lease_expires_at": None}
    if to != S.WAITING:
        fields |= {"wake_at": None, "waiting_for": ""}
    fields |= extra or {}
    if to in FINISHED_STATUSES:
        fields["finished_at"] = now
    elif to == S.PENDING:
        fields["finished_at"] = None
    query = Agent.objects.filter(pk=agent_id, status__in=allowed_sources(to))
    if lease_token is not None:
        query = query.filter(lease_token=lease_token)
    if where is not None:
        query = query.filter(where)
    with transaction.atomic():
        previous = query.select_for_update().values_list("status", flat=True).first()
        if previous is not None and query.update(**fields):
            event_record(
                agent_id, Kind.STATUS, {"from": previous, "to": to, "reason": reason}, by=by, activity=""
            )
            if to in FINISHED_STATUSES:
                transaction.on_commit(
                    lambda: hooks.agent_finished.send(sender=Agent, agent_id=agent_id, status=to)
                )
            return True
    if where is not None:
        return False
    current = Agent.objects.filter(pk=agent_id).values_list("status", flat=True).first()
    if current is None:
        raise OrchestratorError(f"Agent {agent_id} does not exist.")
    if lease_token is not None and current in allowed_sources(to):
        raise InvalidTransition(f"Agent {agent_id} is held by another worker now.")
    raise InvalidTransition(
        f"Agent {agent_id} is {current}; it cannot become {to} "
        f"(only from {', '.join(sorted(allowed_sources(to))) or 'nowhere'})."
    )


# --- Projects and spawning ------------------------------------------------------------------


def project_for_repo(*, repo_path: str, team: Team | None = None) -> Project:
    """The project for a local git repository, created on first use (in `team`, else the default team)."""
    try:
        info = workspaces.inspect_repo(repo_path)
    except workspaces.WorkspaceError as exc:
        raise OrchestratorError(str(exc)) from None
    project = Project.objects.filter(repo_path=str(info.path)).first()
    if project is None:
        project, _ = Project.objects.get_or_create(
            repo_path=str(info.path),
            defaults={"name": info.path.name, "base_branch": info.branch, "team": team or default_team()},
        )
    return project


class SpawnNotAllowed(OrchestratorError):
    """A person asked to spawn where they may not act."""


def project_for_person(*, user: AbstractBaseUser, repo_path: str) -> Project:
    """The project a person spawns in by repository path (the dashboard, the API, `--as-user`): an
    existing one they may act in, or a new one belonging to their team (not the default team)."""
    try:
        path = str(workspaces.inspect_repo(repo_path).path)
    except workspaces.WorkspaceError as exc:
        raise OrchestratorError(str(exc)) from None
    existing = Project.objects.filter(repo_path=path).first()
    if existing is not None:
        if not can_act(user, existing.pk):
            raise SpawnNotAllowed(
                f"That repository belongs to another team's project: {user} may not spawn agents in {path}."
            )
        return existing
    team = team_for_new_project(user)
    if team is None:
        raise SpawnNotAllowed(f"{user} is not a member of a team that may spawn agents.")
    return project_for_repo(repo_path=path, team=team)


def check_model_access() -> None:
    """Spawning needs somewhere to send requests; say plainly how to configure it."""
    if not (settings.ANTHROPIC_API_KEY or settings.ANTHROPIC_BASE_URL):
        raise ConfigurationError(
            "No model access configured: set ANTHROPIC_API_KEY to an Anthropic API key (or "
            "ANTHROPIC_BASE_URL to an Anthropic-compatible endpoint) in the environment of the web "
            "and worker processes, then restart them."
        )


@dataclass(frozen=True)
class SpawnRequest:
    """A validated request to spawn one agent."""

    role: Role
    task: str
    project: Project
    parent: Agent | None
    model: str
    budget_usd: Decimal | None = None
    budget_tokens: int | None = None
    start_point: str | None = None  # a branch to start from instead of the parent's or the base
    permission_mode: str = ""  # blank: the role's (a child never gets looser than its parent)
    spawn_key: str = ""


def spawn_request_validate(
    *,
    role: str,
    task: str,
    repo_path: str | None = None,
    parent: Agent | int | None = None,
    model: str | None = None,
    budget_usd: Any = None,
    budget_tokens: Any = None,
    cap_budget_to_parent: bool = False,
    project: Project | None = None,
) -> SpawnRequest:
    """Check everything a spawn needs without creating anything.

    A child may not ask for more than its parent has left, unless `cap_budget_to_parent` (then it
    gets what is left, see budgets.services.budget_create)."""
    usd, tokens = parse_usd(budget_usd), parse_tokens(budget_tokens)
    task = (task or "").strip()
    if not task:
        raise OrchestratorError("The task is empty: say what the agent should do.")
    role_obj = Role.objects.filter(name=role).first()
    if role_obj is None:
        known = ", ".join(Role.objects.order_by("name").values_list("name", flat=True))
        raise OrchestratorError(f"Unknown role {role!r}. Roles: {known}.")
    if isinstance(parent, int | str) and not isinstance(parent, Agent):
        parent_obj = Agent.objects.select_related("project").filter(pk=int(parent)).first()
        if parent_obj is None:
            raise OrchestratorError(f"Parent agent {parent} does not exist.")
        parent = parent_obj
    if parent is not None:
        if parent.is_finished:
            raise OrchestratorError(f"Parent agent {parent.pk} is {parent.status}; it can't take children.")
        project = parent.project
        if repo_path and Path(repo_path).expanduser().resolve() != Path(project.repo_path):
            raise OrchestratorError(f"A child works on its parent's repository ({project.repo_path}).")
    elif project is not None:
        pass  # already resolved by the caller (a batch inspects each repository once)
    elif repo_path:
        project = project_for_repo(repo_path=repo_path)
    else:
        raise OrchestratorError("Say which repository the agent works on (--repo PATH).")
    model = (model or "").strip() or role_obj.default_model or settings.ORCHESTRATOR_DEFAULT_MODEL
    try:
        price_for_model(model=model)
    except PricingError as exc:
        raise OrchestratorError(str(exc)) from None
    project_check_cap(project=project)
    if parent is not None and usd is not None and not cap_budget_to_parent:
        available = Budget.objects.filter(agent=parent).first()
        if available is not None and available.limit_usd is not None and usd > available.available_usd:
            raise BudgetError(
                f"Agent {parent.pk} has ${available.available_usd} of budget left; it can't give ${usd}."
            )
    return SpawnRequest(
        role=role_obj,
        task=task,
        project=project,
        parent=parent,
        model=model,
        budget_usd=usd,
        budget_tokens=tokens,
    )


def agent_spawn(
    *,
    role: str,
    task: str,
    repo_path: str | None = None,
    parent: Agent | int | None = None,
    model: str | None = None,
    budget_usd: Any = None,
    budget_tokens: Any = None,
    spawned_by: AbstractBaseUser | None = None,
    commit_parent_work: bool = False,
    start_point: str | None = None,
    permission_mode: str | None = None,
) -> Agent:
    """Create an agent with its worktree and queue its first run once the transaction commits.

    `commit_parent_work`: commit what the parent has written so far first, so the child starts
    from it. Only the parent's own worker may ask for that (one writer per worktree); it also
    caps a requested budget to what the parent has left instead of refusing it.
    """
    check_model_access()
    request = spawn_request_validate(
        role=role,
        task=task,
        repo_path=repo_path,
        parent=parent,
        model=model,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        cap_budget_to_parent=commit_parent_work,
    )
    if permission_mode and permission_mode not in PermissionMode.values:
        raise OrchestratorError(
            f"Unknown permission mode {permission_mode!r}. Modes: {', '.join(PermissionMode.values)}."
        )
    request = replace(request, start_point=start_point, permission_mode=permission_mode or "")
    return _create_agents([request], spawned_by=spawned_by, commit_parent_work=commit_parent_work)[0]


BATCH_FIELDS = {
    "role",
    "task",
    "repo",
    "parent",
    "model",
    "budget_usd",
    "budget_tokens",
    "permission_mode",
    "key",
}


@dataclass
class BatchResult:
    created: list[Agent]
    skipped: list[str]  # keys already spawned by an earlier run


def agents_spawn_batch(
    *,
    entries: Iterable[Mapping[str, Any]],
    spawned_by: AbstractBaseUser | None = None,
    progress: Callable[[str], None] | None = None,
) -> BatchResult:
    """Spawn many agents: every entry is validated before any is created; all or nothing.

    An entry's `key` makes it idempotent: a key already spawned in its project is skipped, so
    running the same batch again creates nothing. `progress` hears how far it got.
    """
    check_model_access()
    say = progress or (lambda _: None)
    requests, keys_seen = [], set()
    projects: dict[str, Project] = {}  # one repository inspection per path, not per entry
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping):
            raise OrchestratorError(
                f"Entry {number}: expected a mapping of fields, got {type(entry).__name__}."
            )
        unknown = set(entry) - BATCH_FIELDS
        if unknown:
            raise OrchestratorError(
                f"Entry {number}: unknown field(s) {', '.join(sorted(map(str, unknown)))}."
            )
        key = str(entry.get("key") or "").strip()
        if key and key in keys_seen:
            raise OrchestratorError(f"Entry {number}: key {key!r} appears twice in the batch.")
        keys_seen.add(key)
        mode = entry.get("permission_mode") or ""
        if mode and mode not in PermissionMode.values:
            raise OrchestratorError(f"Entry {number}: unknown permission mode {mode!r}.")
        repo = entry.get("repo")
        try:
            if repo and not entry.get("parent") and str(repo) not in projects:
                projects[str(repo)] = project_for_repo(repo_path=str(repo))
            request = spawn_request_validate(
                role=str(entry.get("role") or ""),
                task=str(entry.get("task") or ""),
                repo_path=None if (repo and not entry.get("parent")) else repo,
                project=projects.get(str(repo)) if repo and not entry.get("parent") else None,
                parent=entry.get("parent"),
                model=entry.get("model"),
                budget_usd=entry.get("budget_usd"),
                budget_tokens=entry.get("budget_tokens"),
            )
        except OrchestratorError as exc:
            raise OrchestratorError(f"Entry {number}: {exc}") from None
        requests.append(replace(request, permission_mode=mode, spawn_key=key))
        if number % 500 == 0:
            say(f"checked {number} entries")
    if not requests:
        raise OrchestratorError("The batch is empty.")
    say(f"checked all {len(requests)} entries")
    done = {
        (project_id, key)
        for project_id, key in Agent.objects.filter(
            spawn_key__in=[r.spawn_key for r in requests if r.spawn_key]
        ).values_list("project_id", "spawn_key")
    }
    fresh = [r for r in requests if not r.spawn_key or (r.project.pk, r.spawn_key) not in done]
    skipped = [r.spawn_key for r in requests if r not in fresh]
    if skipped:
        say(f"{len(skipped)} entries were spawned before (same key); skipping them")
    created = _create_agents(fresh, spawned_by=spawned_by, progress=say, lazy_worktrees=True) if fresh else []
    return BatchResult(created=created, skipped=skipped)


def _create_agents(
    requests: list[SpawnRequest],
    *,
    spawned_by: AbstractBaseUser | None,
    commit_parent_work: bool = False,
    progress: Callable[[str], None] | None = None,
    lazy_worktrees: bool = False,
) -> list[Agent]:
    created: list[Agent] = []
    worktrees: list[Path] = []
    try:
        with transaction.atomic():
            for number, request in enumerate(requests, start=1):
                if progress and number > 1 and (number - 1) % 100 == 0:
                    progress(f"created {number - 1} of {len(requests)}")
                agent = Agent.objects.create(
                    parent=request.parent,
                    project=request.project,
                    role=request.role,
                    task=request.task,
                    model=request.model,
                    spawned_by=spawned_by,
                    last_event_seq=1,
                    permission_mode=_permission_mode(request),
                    spawn_key=request.spawn_key,
                )
                reason = f"Spawned by agent {request.parent.pk}." if request.parent else "Spawned."
                event_record_first(agent, {"from": None, "to": S.PENDING, "reason": reason}, by=spawned_by)
                if request.parent is not None:
                    event_record(
                        request.parent.pk,
                        Kind.SPAWNED,
                        {"child": agent.pk, "role": request.role.name, "task": request.task},
                    )
                budget_create(
                    agent=agent,
                    usd=request.budget_usd,
                    tokens=request.budget_tokens,
                    cap_to_parent=commit_parent_work,
                )
                worktrees.append(
                    Path(
                        _workspace_create(
                            agent,
                            commit_parent_work=commit_parent_work,
                            start_point=request.start_point,
                            lazy=lazy_worktrees,
                        ).path
                    )
                )
                transaction.on_commit(lambda agent_id=agent.pk: enqueue_agent_run(agent_id=agent_id))
                created.append(agent)
    except workspaces.WorkspaceError as exc:
        for path in worktrees:
            workspaces.remove_worktree_quietly(path)
        raise OrchestratorError(str(exc)) from None
    return created


def _permission_mode(request: SpawnRequest) -> str:
    mode = request.permission_mode or request.role.permission_mode
    if request.parent is not None:
        mode = stricter(mode, request.parent.permission_mode)
    return mode


def _workspace_create(
    agent: Agent, *, commit_parent_work: bool, start_point: str | None = None, lazy: bool = False
) -> Workspace:
    """The agent's branch and worktree. `lazy` (batches): only the branch now; the worktree is
    checked out when the agent first runs (git's worktree add slows down with every worktree
    a repository has, and a queued agent needs none yet)."""
    project = agent.project
    repo = Path(project.repo_path)
    if agent.parent_id:
        parent_ws = agent.parent.workspace
        if commit_parent_work:
            head = workspaces.commit_all(
                worktree=Path(parent_ws.path),
                git_dir=Path(parent_ws.git_dir),
                message=f"Agent {agent.parent_id}: work in progress before spawning agent {agent.pk}",
            )
            if head:
                Workspace.objects.filter(pk=parent_ws.pk).update(head_commit=head)
        start_point = start_point or parent_ws.branch
    else:
        start_point = start_point or project.base_branch
    path = settings.ORCHESTRATOR_WORKTREES_DIR / f"project-{project.pk}" / f"agent-{agent.pk}"
    if lazy:
        branch = workspaces.branch_name(agent.pk, agent.task)
        base = workspaces.create_branch(repo=repo, branch=branch, start_point=start_point)
        return Workspace.objects.create(
            agent=agent, path=str(path), git_dir="", branch=branch, base_commit=base
        )
    tree = workspaces.create_worktree(
        repo=repo, path=path, branch=workspaces.branch_name(agent.pk, agent.task), start_point=start_point
    )
    return Workspace.objects.create(
        agent=agent,
        path=str(tree.path),
        git_dir=str(tree.git_dir),
        branch=tree.branch,
        base_commit=tree.base_commit,
    )


# --- Mail -----------------------------------------------------------------------------------


def message_send(
    *,
    recipient: Agent | int,
    body: str,
    sender: Agent | None = None,
    sent_by_user: AbstractBaseUser | None = None,
    kind: str = MessageKind.MESSAGE,
) -> Message:
    """Leave mail for an agent; it arrives with its next model request, waking it if it waits."""
    body = (body or "").strip()
    if not body:
        raise OrchestratorError("The message is empty.")
    recipient_id = recipient.pk if isinstance(recipient, Agent) else int(recipient)
    recipient_status = Agent.objects.filter(pk=recipient_id).values_list("status", flat=True).first()
    if recipient_status is None:
        raise OrchestratorError(f"Agent {recipient_id} does not exist.")
    if kind == MessageKind.MESSAGE and recipient_status in FINISHED_STATUSES:
        raise OrchestratorError(f"Agent {recipient_id} is {recipient_status}; it will not read messages.")
    with transaction.atomic():
        message = Message.objects.create(
            recipient_id=recipient_id, sender=sender, sent_by_user=sent_by_user, kind=kind, body=body
        )
        _message_event(message)
        agent_wake_if_ready(agent_id=recipient_id)
    return message


def _message_event(message: Message) -> None:
    if message.sender_id:
        sender = f"agent {message.sender_id} ({message.sender.role.name})"
    else:
        sender = str(message.sent_by_user) if message.sent_by_user_id else "the orchestrator"
    event_record(
        message.recipient_id,
        Kind.MESSAGE,
        {"sender": sender, "body": message.body, "kind": message.kind, "message": message.pk},
        by=message.sent_by_user,
    )


def agent_wake_if_ready(*, agent_id: int) -> bool:
    """Queue a waiting agent again if it has something to act on.

    It wakes for a direct message at once; children's results it gets together, once none of
    its children is still working. Call inside the transaction that made the change.
    """
    # Lock the row whatever its status: a parent deciding to wait holds this lock, and we must
    # see its decision (PostgreSQL would skip a row whose old version doesn't match a filter).
    agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
    if (
        agent is None
        or agent.status != S.WAITING
        or agent.waiting_for in (WaitingFor.BUDGET, WaitingFor.APPROVAL)
    ):
        return False  # it wakes when its budget is raised, or when a person decides
    unfinished = Agent.objects.filter(parent_id=agent_id).exclude(status__in=FINISHED_STATUSES).exists()
    direct = Message.objects.filter(
        recipient_id=agent_id, delivered_at__isnull=True, kind=MessageKind.MESSAGE
    )
    if unfinished and not direct.exists():
        return False
    agent_transition(agent_id=agent_id, to=S.PENDING, extra={"attempts": 0})
    transaction.on_commit(lambda: enqueue_agent_run(agent_id=agent_id))
    return True


def report_to_parent(*, agent: Agent, status: str, text: str) -> None:
    """A finished agent's outcome goes to its parent as mail, and its unspent budget goes back
    (inside the finishing transaction, so both happen exactly once)."""
    if agent.parent_id is None:
        return
    budget_return_leftover(agent=agent)
    body = f"Agent {agent.pk} ({agent.role.name}) finished: {status}.\n\n{text or '(no result text)'}"
    message = Message.objects.create(
        recipient_id=agent.parent_id, sender=agent, kind=MessageKind.CHILD_RESULT, body=body
    )
    _message_event(message)
    agent_wake_if_ready(agent_id=agent.parent_id)


# --- Control --------------------------------------------------------------------------------
# A running agent's worker notices a change of status within ORCHESTRATOR_CONTROL_POLL_SECONDS,
# even in the middle of a model stream or a Bash command, and stops there.


def agent_cancel(
    *,
    agent: Agent,
    subtree: bool = False,
    reason: str = "Cancelled by a person.",
    by: AbstractBaseUser | None = None,
) -> list[int]:
    """Cancel an agent (and with `subtree`, its unfinished descendants). Returns the ids cancelled."""
    targets = list(agent.descendants(include_self=True).select_related("role")) if subtree else [agent]
    cancelled = []
    with transaction.atomic():
        for target in targets:
            if target.pk != agent.pk and target.status in FINISHED_STATUSES:
                continue
            agent_transition(agent_id=target.pk, to=S.CANCELLED, reason=reason, by=by)
            cancelled.append(target.pk)
            report_to_parent(agent=target, status=S.CANCELLED, text=reason)
    return cancelled


def agent_pause(
    *, agent: Agent, reason: str = "Paused by a person.", by: AbstractBaseUser | None = None
) -> None:
    """Stop an agent where it is; `agent_resume` continues the same conversation."""
    agent_transition(agent_id=agent.pk, to=S.PAUSED, reason=reason, by=by)


def agent_resume(*, agent: Agent, by: AbstractBaseUser | None = None) -> None:
    """Continue a paused agent: back to waiting if its children still work, else queued."""
    with transaction.atomic():
        if agents_unfinished_children(agent_id=agent.pk):
            agent_transition(
                agent_id=agent.pk, to=S.WAITING, reason="Resumed; waiting for its children.", by=by
            )
            agent_wake_if_ready(agent_id=agent.pk)
        else:
            agent_transition(agent_id=agent.pk, to=S.PENDING, reason="Resumed.", extra={"attempts": 0}, by=by)
            transaction.on_commit(lambda: enqueue_agent_run(agent_id=agent.pk))


def agent_retry(*, agent: Agent, by: AbstractBaseUser | None = None) -> None:
    """Queue a failed or cancelled agent again; it resumes from its transcript."""
    with transaction.atomic():
        agent_transition(agent_id=agent.pk, to=S.PENDING, reason="Retried.", extra={"attempts": 0}, by=by)
        transaction.on_commit(lambda: enqueue_agent_run(agent_id=agent.pk))


# The control buttons of the dashboard and the API, by name (the CLI has a command for each).
AGENT_CONTROLS: dict[str, Callable[[Agent, AbstractBaseUser | None], Any]] = {
    "pause": lambda agent, user: agent_pause(agent=agent, by=user),
    "resume": lambda agent, user: agent_resume(agent=agent, by=user),
    "retry": lambda agent, user: agent_retry(agent=agent, by=user),
    "cancel": lambda agent, user: agent_cancel(agent=agent, by=user),
    "cancel-subtree": lambda agent, user: agent_cancel(agent=agent, subtree=True, by=user),
}


@dataclass
class ReapReport:
    requeued: list[int]
    failed: list[int]
    woken: list[int]
    resent: list[int] = field(default_factory=list)
    merges: list[int] = field(default_factory=list)  # projects whose merge queue was run


def agents_reap() -> ReapReport:
    """Re-queue agents whose worker vanished (lease expired), fail those out of attempts, queue
    parked agents whose time has come, and re-send the queue message of pending agents that
    waited long with nothing queued (the Redis broker loses a message whose worker dies before
    the claim). Idempotent, and a duplicate message is harmless: safe to run from many places."""
    now = timezone.now()
    report = ReapReport(requeued=[], failed=[], woken=[])
    limit = settings.ORCHESTRATOR_MAX_ATTEMPTS
    expired = Q(status=S.RUNNING, lease_expires_at__lt=now)
    for agent in Agent.objects.filter(expired).select_related("role"):
        with transaction.atomic():
            if agent.attempts >= limit:
                reason = (
                    f"Gave up after {agent.attempts} attempts: the worker running it stopped each time "
                    f"(last: {agent.worker or 'unknown'})."
                )
                if agent_transition(agent_id=agent.pk, to=S.FAILED, reason=reason, where=expired):
                    report_to_parent(agent=agent, status=S.FAILED, text=reason)
                    report.failed.append(agent.pk)
            elif agent_transition(
                agent_id=agent.pk,
                to=S.PENDING,
                reason=f"The worker running it ({agent.worker or 'unknown'}) stopped; queued again.",
                where=expired,
            ):
                transaction.on_commit(lambda pk=agent.pk: enqueue_agent_run(agent_id=pk))
                report.requeued.append(agent.pk)
    due = Q(status=S.WAITING, wake_at__lte=now)
    for agent_id in Agent.objects.filter(due).values_list("pk", flat=True):
        with transaction.atomic():
            if agent_transition(agent_id=agent_id, to=S.PENDING, reason="Trying the API again.", where=due):
                transaction.on_commit(lambda pk=agent_id: enqueue_agent_run(agent_id=pk))
                report.woken.append(agent_id)
    # Released by a worker that was shutting down: it doesn't queue them itself, because its own
    # stopping cluster would take the message (Redis) and then wait on it.
    released = Q(status=S.PENDING, wake_at__lte=now)
    for agent_id in Agent.objects.filter(released).values_list("pk", flat=True):
        if Agent.objects.filter(released, pk=agent_id).update(wake_at=None):
            enqueue_agent_run(agent_id=agent_id)
            report.woken.append(agent_id)
    # Merge requests wait for their agents to complete: look again at projects that have some.
    from agents.merges import enqueue_merges

    waiting_merges = Merge.objects.filter(
        status=MergeStatus.QUEUED,
        agent__status=S.COMPLETED,
        updated_at__lt=now - timedelta(seconds=2 * settings.ORCHESTRATOR_REAP_SECONDS),
    )
    for project_id in waiting_merges.values_list("project_id", flat=True).distinct():
        enqueue_merges(project_id=project_id)
        report.merges.append(project_id)
    from agents.approvals import approvals_escalate

    approvals_escalate()
    for sweep in hooks.REAPERS:
        sweep()
    stale = Q(
        status=S.PENDING, updated_at__lt=now - timedelta(seconds=2 * settings.ORCHESTRATOR_LEASE_SECONDS)
    )
    if Agent.objects.filter(stale).exists() and get_broker().queue_size() == 0:
        for agent_id in Agent.objects.filter(stale).values_list("pk", flat=True):
            if Agent.objects.filter(stale, pk=agent_id).update(updated_at=now):
                enqueue_agent_run(agent_id=agent_id)
                report.resent.append(agent_id)
    return report


def lease_expiry() -> Any:
    return timezone.now() + timedelta(seconds=settings.ORCHESTRATOR_LEASE_SECONDS)


def agents_unfinished_children(*, agent_id: int) -> list[int]:
    return list(
        Agent.objects.filter(parent_id=agent_id)
        .filter(~Q(status__in=FINISHED_STATUSES))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
