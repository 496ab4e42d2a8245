"""Bringing agents' work together: merge requests, the merge queue, conflicts, overlap warnings.

A merge request names an agent's branch and the branch it goes into: its parent's branch, or the
project's base branch for a root agent. The queue takes a project's requests in order, one at a
time (a file lock per repository, across processes): it builds the merge without a checkout,
runs the project's test command in a fresh worktree of the result, and only then moves the
target with a compare-and-swap. A conflict changes nothing; it becomes an event with the files
and waits for a person or the parent agent to spawn a resolver or abandon the request.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import workspaces
from agents.errors import OrchestratorError
from agents.events import event_record
from agents.models import FINISHED_STATUSES, Agent, AgentStatus, FileTouch, Merge, MergeStatus, Workspace

log = logging.getLogger(__name__)
M = MergeStatus
MAX_MOVED_RETRIES = 3  # the target moved under us this many times in a row: give up for now


class Event:
    MERGE_QUEUED = "merge_queued"
    MERGED = "merged"
    MERGE_CONFLICT = "merge_conflict"
    MERGE_FAILED = "merge_failed"
    OVERLAP = "overlap"


def merge_target(agent: Agent) -> str:
    """Where an agent's work goes: its parent's branch, or the project's base branch."""
    if agent.parent_id:
        return Workspace.objects.get(agent_id=agent.parent_id).branch
    return agent.project.base_branch


def merge_request(
    *, agent: Agent, target_branch: str | None = None, by: AbstractBaseUser | None = None
) -> Merge:
    """Queue merging the agent's branch. It is merged once the agent has completed."""
    workspace = Workspace.objects.filter(agent=agent).first()
    if workspace is None:
        raise OrchestratorError(f"Agent {agent.pk} has no branch to merge.")
    if agent.status in (AgentStatus.FAILED, AgentStatus.CANCELLED):
        raise OrchestratorError(f"Agent {agent.pk} is {agent.status}; retry it or abandon its work.")
    target = target_branch or merge_target(agent)
    with transaction.atomic():
        existing = Merge.objects.filter(
            agent=agent, target_branch=target, status__in=[M.QUEUED, M.TESTING]
        ).first()
        if existing:
            return existing
        merge = Merge.objects.create(
            project=agent.project,
            agent=agent,
            source_branch=workspace.branch,
            target_branch=target,
            requested_by=by,
        )
        event_record(agent.pk, Event.MERGE_QUEUED, {"merge": merge.pk, "into": target}, by=by)
        transaction.on_commit(lambda: enqueue_merges(project_id=agent.project_id))
    return merge


def merges_after_completion(*, agent_id: int) -> None:
    """An agent completed: run its project's queue now if a request waits for it (else the reaper
    would, within a few seconds)."""
    merge = (
        Merge.objects.filter(agent_id=agent_id, status=M.QUEUED).values_list("project_id", flat=True).first()
    )
    if merge is not None:
        transaction.on_commit(lambda: enqueue_merges(project_id=merge))


def enqueue_merges(*, project_id: int) -> None:
    from django_q.tasks import async_task

    async_task("agents.tasks.process_merges", project_id, task_name=f"merges-{project_id}")


@contextlib.contextmanager
def _queue_lock(repo: Path) -> Iterator[None]:
    """One merge-queue runner per repository at a time (other runners wait, then find less to do)."""
    with open(workspaces.common_dir(repo) / "orchestrator-merge-queue.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def merges_process(*, project_id: int) -> list[Merge]:
    """Merge the project's queued requests whose source has completed, in order. Returns them."""
    from agents.models import Project

    project = Project.objects.get(pk=project_id)
    repo = Path(project.repo_path)
    done = []
    with _queue_lock(repo):
        # A runner that died mid-test left its request in `testing`: it is ours now.
        Merge.objects.filter(project=project, status=M.TESTING).update(status=M.QUEUED)
        for merge in (
            Merge.objects.filter(project=project, status=M.QUEUED).select_related("agent").order_by("pk")
        ):
            if merge.agent is not None and merge.agent.status != AgentStatus.COMPLETED:
                if merge.agent.status in FINISHED_STATUSES:
                    _finish(
                        merge, M.FAILED, f"Agent {merge.agent_id} {merge.agent.status}; nothing to merge."
                    )
                continue  # not finished yet: stays queued
            if _target_in_use(merge):
                continue
            _process_one(merge, repo=repo, project=project)
            done.append(merge)
    return done


def _target_in_use(merge: Merge) -> bool:
    """A target branch checked out by a running agent is written by that agent's worker only."""
    running = Workspace.objects.filter(
        branch=merge.target_branch, agent__project_id=merge.project_id, agent__status=AgentStatus.RUNNING
    )
    if running.exists():
        Merge.objects.filter(pk=merge.pk).update(
            reason="Waiting: the agent on the target branch is running.", updated_at=timezone.now()
        )
        return True
    return False


def _process_one(merge: Merge, *, repo: Path, project) -> None:
    for _ in range(MAX_MOVED_RETRIES):
        Merge.objects.filter(pk=merge.pk).update(status=M.TESTING, attempts=merge.attempts + 1)
        merge.attempts += 1
        message = f"Merge {merge.source_branch} into {merge.target_branch}"
        try:
            prepared = workspaces.prepare_merge(
                repo=repo, source=merge.source_branch, target_branch=merge.target_branch, message=message
            )
            if prepared.conflicts:
                _conflict(merge, prepared.conflicts)
                return
            if prepared.already_merged:
                _finish(merge, M.MERGED, "Already merged.", commit=prepared.old)
                return
            if project.test_command:
                run = workspaces.run_tests_at(
                    repo=repo,
                    commit=prepared.new,
                    command=project.test_command,
                    scratch=Path(settings.ORCHESTRATOR_WORKTREES_DIR)
                    / f"project-{project.pk}"
                    / ".merge-tests",
                    timeout=project.test_timeout_seconds,
                )
                Merge.objects.filter(pk=merge.pk).update(test_output=run.output)
                if not run.passed:
                    _finish(merge, M.FAILED, f"Tests failed on the merge result ({project.test_command}).")
                    return
            workspaces.apply_merge(repo=repo, target_branch=merge.target_branch, prepared=prepared)
        except workspaces.TargetMoved:
            continue  # someone moved the target meanwhile: build and test the merge again
        except workspaces.WorkspaceError as exc:
            _finish(merge, M.FAILED, str(exc))
            return
        _finish(merge, M.MERGED, "Fast-forward." if prepared.fast_forward else "Merged.", commit=prepared.new)
        return
    _finish(merge, M.QUEUED, f"{merge.target_branch} kept moving; will try again.")


def merge_now(*, merge: Merge) -> Merge:
    """Process one request at once (the MergeChild tool: the parent's own worker merges into the
    branch it has checked out, so no one else writes that worktree meanwhile)."""
    repo = Path(merge.project.repo_path)
    with _queue_lock(repo):
        merge.refresh_from_db()
        if merge.status in (M.QUEUED, M.TESTING):
            _process_one(merge, repo=repo, project=merge.project)
    merge.refresh_from_db()
    return merge


def _finish(merge: Merge, status: str, reason: str, *, commit: str = "") -> None:
    fields = {"status": status, "reason": reason, "updated_at": timezone.now()}
    if commit:
        fields["result_commit"] = commit
    with transaction.atomic():
        Merge.objects.filter(pk=merge.pk).update(**fields)
        merge.status, merge.reason = status, reason
        if merge.agent_id and status in (M.MERGED, M.FAILED):
            kind = Event.MERGED if status == M.MERGED else Event.MERGE_FAILED
            event_record(
                merge.agent_id,
                kind,
                {"merge": merge.pk, "into": merge.target_branch, "commit": commit, "reason": reason},
            )


def _conflict(merge: Merge, files: list[str]) -> None:
    with transaction.atomic():
        Merge.objects.filter(pk=merge.pk).update(
            status=M.CONFLICT, conflicts=files, reason=f"Conflicts in {len(files)} file(s)."
        )
        data = {
            "merge": merge.pk,
            "into": merge.target_branch,
            "from": merge.source_branch,
            "files": files,
            "choices": "spawn a resolver (merge_resolve) or abandon (merge_abandon)",
        }
        for agent_id in _interested(merge):
            event_record(agent_id, Event.MERGE_CONFLICT, data)


def _interested(merge: Merge) -> list[int]:
    """The source agent and the agent whose branch is the target (its parent, usually)."""
    ids = [merge.agent_id] if merge.agent_id else []
    ids += list(
        Workspace.objects.filter(branch=merge.target_branch, agent__project_id=merge.project_id)
        .exclude(agent_id__in=ids)
        .values_list("agent_id", flat=True)
    )
    return ids


def merge_abandon(*, merge: Merge, by: AbstractBaseUser | None = None) -> None:
    if merge.status in (M.MERGED, M.ABANDONED):
        raise OrchestratorError(f"Merge {merge.pk} is {merge.status}.")
    _finish(merge, M.ABANDONED, f"Abandoned by {by or 'the parent agent'}.")


def merge_resolve(*, merge: Merge, by: AbstractBaseUser | None = None, role: str = "implementer") -> Agent:
    """Spawn an agent on a new branch from the target with the conflicted merge in progress; when
    it completes, its branch (a merge commit with both parents) is queued into the target."""
    from agents.services import agent_spawn

    if merge.status != M.CONFLICT:
        raise OrchestratorError(f"Merge {merge.pk} is {merge.status}, not in conflict.")
    files = "\n".join(f"- {path}" for path in merge.conflicts)
    resolver = agent_spawn(
        role=role,
        task=(
            f"Resolve the merge conflicts of merging {merge.source_branch} into {merge.target_branch}. "
            f"The merge is in progress in your worktree; these files have conflict markers:\n{files}\n"
            "Edit them so both sides' intent is kept, remove every marker, make sure the code still works, "
            "and end your turn. Your work is committed as the merge commit."
        ),
        repo_path=merge.project.repo_path,
        start_point=merge.target_branch,
        spawned_by=by,
    )
    workspace = resolver.workspace
    workspaces.start_merge(
        worktree=Path(workspace.path), git_dir=Path(workspace.git_dir), source=merge.source_branch
    )
    with transaction.atomic():
        Merge.objects.filter(pk=merge.pk).update(
            resolver=resolver, reason=f"Agent {resolver.pk} resolves it."
        )
        merge_request(agent=resolver, target_branch=merge.target_branch, by=by)
    return resolver


# --- overlap --------------------------------------------------------------------------------


def file_touched(*, agent: Agent, path: str) -> list[int]:
    """Note that the agent wrote `path`; if other unfinished agents of its project wrote it too,
    record an overlap event on each of them and on this one. Returns the other agents' ids."""
    _, created = FileTouch.objects.get_or_create(
        agent=agent, path=path, defaults={"project_id": agent.project_id}
    )
    if not created:
        return []
    others = list(
        FileTouch.objects.filter(project_id=agent.project_id, path=path)
        .exclude(agent=agent)
        .exclude(agent__status__in=FINISHED_STATUSES)
        .values_list("agent_id", flat=True)
    )
    if others:
        # Each in its own transaction, after the caller's, in id order: no lock-order deadlocks.
        for agent_id in sorted([agent.pk, *others]):
            event_record(
                agent_id,
                Event.OVERLAP,
                {"path": path, "agents": sorted([agent.pk, *others]), "by": agent.pk},
            )
    return others


def merges_for(*, agent: Agent) -> list[Merge]:
    return list(Merge.objects.filter(Q(agent=agent) | Q(resolver=agent)).order_by("pk"))
