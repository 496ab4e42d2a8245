"""Worktrees over an agent's life: archived when done, repaired after a crash.

A worktree is removed only when its agent and all its descendants have finished and a person (or
a workflow) archives it; its branch stays. Start-up repair fixes what a crash can leave: stale
`index.lock` files, worktree directories without a record, records without a directory. It never
touches a worktree whose agent is unfinished, except to recreate a lost one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agents import workspaces
from agents.errors import OrchestratorError
from agents.events import event_record
from agents.models import FINISHED_STATUSES, Agent, AgentStatus, Project, Workspace

log = logging.getLogger(__name__)
YOUNG_DIRECTORY_SECONDS = 60  # a worktree this new may belong to a spawn not yet committed


def agent_archive(*, agent: Agent, subtree: bool = False, by: AbstractBaseUser | None = None) -> list[int]:
    """Remove the worktrees of a finished agent (and with `subtree`, its descendants). Branches stay.
    Returns the ids archived."""
    targets = list(agent.descendants(include_self=True)) if subtree else [agent]
    unfinished = [a.pk for a in agent.descendants(include_self=True) if a.status not in FINISHED_STATUSES]
    if unfinished:
        raise OrchestratorError(
            f"Agent {agent.pk} can't be archived: agents {', '.join(map(str, unfinished))} have not finished "
            "(their worktrees are in use)."
        )
    archived = []
    for target in targets:
        if target.archived_at is not None:
            continue
        workspace = Workspace.objects.filter(agent=target).first()
        if workspace is not None and workspace.removed_at is None:
            _remove(workspace, project=target.project)
        with transaction.atomic():
            Agent.objects.filter(pk=target.pk).update(archived_at=timezone.now())
            event_record(target.pk, "archived", {"worktree": workspace.path if workspace else None}, by=by)
        archived.append(target.pk)
    return archived


def restore_lost_worktree(agent: Agent) -> bool:
    """Before a run: if the agent's worktree directory was deleted, check its branch out again
    (its committed work is on the branch; only uncommitted changes were lost with the directory)."""
    workspace = agent.workspace
    path = Path(workspace.path)
    if workspace.removed_at is not None or (path / ".git").exists():
        return False
    if path.is_dir():  # damaged (no .git): keep its files for a person to look at, start clean
        path.rename(path.with_name(f"{path.name}.damaged-{int(time.time())}"))
    _restore(workspace)
    workspace.refresh_from_db()
    return True


def _restore(workspace: Workspace) -> None:
    repo = Path(workspace.agent.project.repo_path)
    first = not workspace.git_dir  # a lazily created workspace's first checkout
    git_dir = workspaces.restore_worktree(repo=repo, path=Path(workspace.path), branch=workspace.branch)
    Workspace.objects.filter(pk=workspace.pk).update(git_dir=str(git_dir))
    workspace.git_dir = str(git_dir)
    if first:
        return
    event_record(
        workspace.agent_id,
        "worktree_restored",
        {"path": workspace.path, "branch": workspace.branch, "reason": "its directory had been deleted"},
    )


def _remove(workspace: Workspace, *, project: Project) -> None:
    path = Path(workspace.path)
    if path.is_dir():
        # Nothing is lost: anything left uncommitted goes onto the agent's branch first.
        try:
            workspaces.commit_all(
                worktree=path,
                git_dir=Path(workspace.git_dir),
                message=f"Agent {workspace.agent_id}: left over at archive",
            )
        except workspaces.WorkspaceError as exc:
            log.warning("agent %s: could not commit leftovers before archiving: %s", workspace.agent_id, exc)
    workspaces.remove_worktree(repo=Path(project.repo_path), path=path)
    Workspace.objects.filter(pk=workspace.pk).update(removed_at=timezone.now())


@dataclass
class RepairReport:
    repaired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def workspaces_repair() -> RepairReport:
    """Fix what crashed processes left behind, in every project; say what was done."""
    report = RepairReport()
    for project in Project.objects.order_by("pk"):
        repo = Path(project.repo_path)
        if not repo.is_dir():
            report.problems.append(f"project {project.name}: repository {repo} is missing; skipped")
            continue
        try:
            _repair_project(project, repo, report)
        except workspaces.WorkspaceError as exc:
            report.problems.append(f"project {project.name}: {exc}")
    for line in report.repaired:
        log.warning("repair: %s", line)
    for line in report.problems:
        log.error("repair: %s", line)
    return report


def _repair_project(project: Project, repo: Path, report: RepairReport) -> None:
    for lock in workspaces.stale_locks(repo):
        lock.unlink(missing_ok=True)
        report.repaired.append(f"removed stale {lock}")

    records = {
        Path(w.path): w
        for w in Workspace.objects.filter(agent__project=project, removed_at__isnull=True).select_related(
            "agent"
        )
    }
    # Records without a directory: an agent that may still work (or be retried) gets its branch
    # checked out again; a completed one is recorded as archived.
    for path, workspace in records.items():
        if path.is_dir() or not workspace.git_dir:
            continue  # present, or not checked out yet (a batch entry's worktree comes with its first run)
        agent = workspace.agent
        if agent.status == AgentStatus.COMPLETED:
            workspaces.remove_worktree(repo=repo, path=path)
            Workspace.objects.filter(pk=workspace.pk).update(removed_at=timezone.now())
            Agent.objects.filter(pk=agent.pk).update(archived_at=timezone.now())
            report.repaired.append(
                f"agent {agent.pk}: worktree {path} was gone; recorded as removed (branch kept)"
            )
        else:
            _restore(workspace)
            report.repaired.append(
                f"agent {agent.pk}: worktree {path} was gone; checked out {workspace.branch} again"
            )

    # Directories without a record (a crash between creating a worktree and committing its row).
    root = Path(settings.ORCHESTRATOR_WORKTREES_DIR) / f"project-{project.pk}"
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path in records or not path.is_dir():
                continue
            if time.time() - path.stat().st_mtime < YOUNG_DIRECTORY_SECONDS:
                continue
            workspaces.remove_worktree(repo=repo, path=path)
            report.repaired.append(f"removed worktree directory {path}: no agent owns it")

    with workspaces.repo_lock(repo):
        workspaces.prune(repo)
