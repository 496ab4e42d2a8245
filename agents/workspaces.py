"""Git worktrees for agents, through GitPython's command runner.

The agent controls every file in its worktree, including the `.git` file that points at its git
dir. So every git command we run inside a worktree names the git dir recorded at creation and the
work tree explicitly, and disables what could run code the agent chose (hooks, fsmonitor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import git

SAFE_OPTIONS = [
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "commit.gpgsign=false",
    "-c", "user.name=Orchestrator",
    "-c", "user.email=agents@orchestrator.invalid",
]  # fmt: skip


class WorkspaceError(Exception):
    """A git operation failed; the message says which and why."""


@dataclass(frozen=True)
class RepoInfo:
    path: Path
    branch: str


@dataclass(frozen=True)
class Worktree:
    path: Path
    git_dir: Path
    branch: str
    base_commit: str


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        return git.Git(str(cwd) if cwd else None).execute(
            ["git", *SAFE_OPTIONS, *args], strip_newline_in_stdout=True
        )
    except git.GitCommandError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().removeprefix("stderr: ").strip("'\n ")
        raise WorkspaceError(f"git {args[0] if args else ''} failed: {detail}") from exc


def inspect_repo(path: str | Path) -> RepoInfo:
    """The repository's top level and current branch; clear errors for anything else."""
    candidate = Path(path).expanduser()
    if not candidate.exists():
        raise WorkspaceError(f"Repository not found: {path}")
    if not candidate.is_dir():
        raise WorkspaceError(f"Not a directory: {path}")
    try:
        top = _git("rev-parse", "--show-toplevel", cwd=candidate)
    except WorkspaceError:
        raise WorkspaceError(f"Not a git repository: {path}") from None
    try:
        _git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=candidate)
    except WorkspaceError:
        raise WorkspaceError(
            f"The repository at {path} has no commits yet: commit something first."
        ) from None
    branch = _git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=candidate)
    return RepoInfo(path=Path(top).resolve(), branch=branch)


def branch_name(agent_id: int, task: str) -> str:
    """`agents/<id>-<slug>`: the slug keeps only characters that are safe in any ref."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40].strip("-") or "task"
    return f"agents/{agent_id}-{slug}"


def create_worktree(*, repo: Path, path: Path, branch: str, start_point: str) -> Worktree:
    path.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "add", "--quiet", "-b", branch, str(path), start_point, cwd=repo)
    git_dir = Path(_git("rev-parse", "--absolute-git-dir", cwd=path))
    base = _git("rev-parse", "HEAD", cwd=path)
    return Worktree(path=path, git_dir=git_dir, branch=branch, base_commit=base)


def commit_all(*, worktree: Path, git_dir: Path, message: str) -> str | None:
    """Commit everything in the worktree on its branch. Returns the new commit, or None if clean."""
    where = ["--git-dir", str(git_dir), "--work-tree", str(worktree)]
    _git(*where, "add", "--all", cwd=worktree)
    if not _git(*where, "status", "--porcelain", cwd=worktree):
        return None
    _git(*where, "commit", "--quiet", "--no-verify", "-m", message, cwd=worktree)
    return _git(*where, "rev-parse", "HEAD", cwd=worktree)


def remove_worktree_quietly(path: Path) -> None:
    """Best-effort cleanup after a spawn that failed half-way; never raises."""
    try:
        common = _git("rev-parse", "--git-common-dir", cwd=path)
        _git("--git-dir", str((path / common).resolve()), "worktree", "remove", "--force", str(path))
    except (WorkspaceError, OSError):
        pass
