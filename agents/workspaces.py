"""Git for agents, through GitPython's command runner: worktrees, commits, diffs, merges, pushes.

The agent controls every file in its worktree, including the `.git` file that points at its git
dir and any `.gitattributes`. So every git command we run names the git dir (recorded when the
worktree was created, or the repository's common dir) and the work tree explicitly, and the
`SAFE_OPTIONS` switch off what could run code the agent chose: hooks, fsmonitor, external diff
and textconv drivers, `ext::` remotes.

Repository-level operations (worktree add/remove/prune, ref updates) take `repo_lock`, a file
lock in the repository's git dir, so parallel workers never collide on git's own lock files.
Merges never check anything out: `merge-tree --write-tree`, `commit-tree`, then a
compare-and-swap `update-ref`, so a target that moved meanwhile fails cleanly.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git

SAFE_OPTIONS = [
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.sshCommand=ssh",
    "-c", "diff.external=",
    "-c", "protocol.ext.allow=never",
    "-c", "credential.helper=",
    "-c", "core.alternateRefsCommand=",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "user.name=Orchestrator",
    "-c", "user.email=agents@orchestrator.invalid",
]  # fmt: skip
# Git's environment: nothing from the user's or system config that could name a program.
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0"}
STALE_LOCK_SECONDS = 60


class WorkspaceError(Exception):
    """A git operation failed; the message says which and why."""


class TargetMoved(WorkspaceError):
    """The branch to merge into moved while we merged; nothing was changed."""


class TargetDirty(WorkspaceError):
    """The branch to merge into is checked out with uncommitted changes; nothing was changed."""


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


@dataclass(frozen=True)
class FileDiff:
    path: str
    status: str  # A(dded), M(odified), D(eleted), R(enamed)
    added: int | None  # None for binary files
    deleted: int | None
    patch: str


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str
    date: str


def _git(*args: str, cwd: Path | None = None) -> str:
    status, out, err = _git_status(*args, cwd=cwd)
    if status != 0:
        detail = (err or out).strip()
        raise WorkspaceError(f"git {_verb(args)} failed: {detail}")
    return out


def _git_status(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run git; return (exit status, stdout, stderr) without raising on a non-zero status."""
    return _run(*_neutralized(args), *args, cwd=cwd)


# Config keys that name programs git runs for files with a matching attribute: the agent writes
# `.gitattributes`, so any such program configured in the repository must not run for us.
DRIVER_KEYS = r"^(filter|merge|diff)\..*\.(clean|smudge|process|driver|command|textconv)$"


def _neutralized(args: tuple[str, ...]) -> list[str]:
    """`-c key=` for every filter, merge and diff driver the repository's config defines."""
    if len(args) < 2 or args[0] != "--git-dir":
        return []
    return _driver_overrides(args[1], _config_stamp(args[1]))


def _config_stamp(git_dir: str) -> tuple:
    """Changes whenever a config file the command would read changes (so the cache below is exact)."""
    stamp = []
    for candidate in (
        Path(git_dir) / "config",
        Path(git_dir) / "config.worktree",
        Path(git_dir) / "commondir",
    ):
        try:
            info = candidate.stat()
            stamp.append((str(candidate), info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            stamp.append((str(candidate), None))
    common = Path(git_dir) / "commondir"
    if common.exists():
        with contextlib.suppress(OSError):
            stamp.append(_config_stamp(str((Path(git_dir) / common.read_text().strip()).resolve())))
    return tuple(stamp)


@functools.lru_cache(maxsize=256)
def _driver_overrides(git_dir: str, _stamp: tuple) -> list[str]:
    _, out, _ = _run("--git-dir", git_dir, "config", "--get-regexp", DRIVER_KEYS)
    options = []
    for line in out.splitlines():
        key = line.split(" ", 1)[0]
        options += ["-c", f"{key}=false" if key.endswith(".driver") else f"{key}="]
    return options


def _run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    try:
        status, out, err = git.Git(str(cwd) if cwd else None).execute(
            ["git", *SAFE_OPTIONS, *args],
            with_extended_output=True,
            with_exceptions=False,
            strip_newline_in_stdout=True,
            env=GIT_ENV,
        )
    except git.GitCommandNotFound as exc:
        raise WorkspaceError(f"git is not installed: {exc}") from None
    except OSError as exc:  # e.g. cwd vanished
        raise WorkspaceError(f"git {_verb(args)} failed: {exc}") from None
    return status, out, err


def _verb(args: tuple[str, ...]) -> str:
    """The git subcommand, skipping --git-dir/--work-tree options."""
    rest = list(args)
    while rest and rest[0] in ("--git-dir", "--work-tree"):
        rest = rest[2:]
    return rest[0] if rest else ""


# --- repositories ---------------------------------------------------------------------------


def inspect_repo(path: str | Path) -> RepoInfo:
    """The repository's top level and current branch; clear errors for anything else."""
    candidate = Path(path).expanduser()
    try:
        exists, is_dir = candidate.exists(), candidate.is_dir()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte...
        raise WorkspaceError(f"Not a usable path: {str(path)[:200]} ({exc.__class__.__name__})") from None
    if not exists:
        raise WorkspaceError(f"Repository not found: {path}")
    if not is_dir:
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


def common_dir(repo: Path) -> Path:
    """The repository's own git dir (shared by its worktrees)."""
    return _common_dir(str(repo))


@functools.lru_cache(maxsize=256)
def _common_dir(repo: str) -> Path:
    # Asked for by every repository-level command; a repository's git dir doesn't move.
    return Path(_git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=Path(repo)))


@contextlib.contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """One repository-level git operation at a time, across every process on this machine."""
    lock_path = common_dir(repo) / "orchestrator.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def branch_name(agent_id: int, task: str) -> str:
    """`agents/<id>-<slug>`: the slug keeps only characters that are safe in any ref."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40].strip("-") or "task"
    return f"agents/{agent_id}-{slug}"


def create_worktree(*, repo: Path, path: Path, branch: str, start_point: str) -> Worktree:
    path.parent.mkdir(parents=True, exist_ok=True)
    common = str(common_dir(repo))
    with repo_lock(repo):
        _git(
            "--git-dir", common, "worktree", "add", "--quiet", "-b", branch, str(path), start_point, cwd=repo
        )
    # Read from the worktree just made (its .git file is still ours): its git dir and HEAD.
    git_dir, base = _git("rev-parse", "--absolute-git-dir", "HEAD", cwd=path).splitlines()
    return Worktree(path=path, git_dir=Path(git_dir), branch=branch, base_commit=base)


def restore_worktree(*, repo: Path, path: Path, branch: str) -> Path:
    """Check an existing branch out again at `path` (its directory was lost). Returns the git dir."""
    common = common_dir(repo)
    with repo_lock(repo):
        _git("--git-dir", str(common), "worktree", "prune", cwd=repo)
        _git("--git-dir", str(common), "worktree", "add", "--quiet", str(path), branch, cwd=repo)
    return Path(_git("rev-parse", "--absolute-git-dir", cwd=path))


def remove_worktree(*, repo: Path, path: Path) -> None:
    """Remove a worktree (its branch stays) and prune git's record of it, even if the directory
    is already gone."""
    common = common_dir(repo)
    with repo_lock(repo):
        if path.exists():
            status, _, _ = _git_status(
                "--git-dir", str(common), "worktree", "remove", "--force", "--force", str(path)
            )
            if status != 0 and path.exists():
                shutil.rmtree(path, ignore_errors=True)  # not a registered worktree: plain files
        _git("--git-dir", str(common), "worktree", "prune", cwd=repo)


def remove_worktree_quietly(path: Path) -> None:
    """Best-effort cleanup after a spawn that failed half-way; never raises."""
    try:
        common = _git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=path)
        _git("--git-dir", common, "worktree", "remove", "--force", str(path))
    except (WorkspaceError, OSError):
        pass


def prune(repo: Path) -> None:
    """Forget worktrees whose directories are gone (call holding `repo_lock`)."""
    _git("--git-dir", str(common_dir(repo)), "worktree", "prune", cwd=repo)


def worktrees_on_branch(repo: Path, branch: str) -> list[Path]:
    """Worktrees that have `branch` checked out (at most one, git makes sure)."""
    out = _git("--git-dir", str(common_dir(repo)), "worktree", "list", "--porcelain", cwd=repo)
    found, current = [], None
    for line in out.splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}" and current is not None:
            found.append(current)
    return found


def stale_locks(repo: Path, *, older_than: float = STALE_LOCK_SECONDS) -> list[Path]:
    """`index.lock` files (main and per-worktree) left by a git process that died."""
    common = common_dir(repo)
    candidates = [common / "index.lock", *common.glob("worktrees/*/index.lock")]
    now = time.time()
    return [p for p in candidates if p.exists() and now - p.stat().st_mtime > older_than]


# --- work -----------------------------------------------------------------------------------


def _in(worktree: Path, git_dir: Path) -> list[str]:
    return ["--git-dir", str(git_dir), "--work-tree", str(worktree)]


def commit_all(*, worktree: Path, git_dir: Path, message: str) -> str | None:
    """Commit everything in the worktree on its branch. Returns the new commit, or None if clean."""
    if not worktree.is_dir():
        raise WorkspaceError(f"The worktree {worktree} is gone; nothing could be committed.")
    if not (worktree / ".git").exists():
        # Recreated from scratch, or gutted: committing would record every file as deleted.
        raise WorkspaceError(
            f"The worktree {worktree} is damaged (its .git file is gone); nothing was committed."
        )
    where = _in(worktree, git_dir)
    _git(*where, "add", "--all", cwd=worktree)
    if not _git(*where, "status", "--porcelain", cwd=worktree):
        return None
    _git(*where, "commit", "--quiet", "--no-verify", "-m", message, cwd=worktree)
    return _git(*where, "rev-parse", "HEAD", cwd=worktree)


def is_dirty(*, worktree: Path, git_dir: Path) -> bool:
    return bool(_git(*_in(worktree, git_dir), "status", "--porcelain", "--untracked-files=no", cwd=worktree))


def diff(*, git_dir: Path, base: str, head: str) -> list[FileDiff]:
    """What `head` changed since `base`, per file (no external diff or textconv drivers run)."""
    where = ["--git-dir", str(git_dir)]
    stats: dict[str, tuple[int | None, int | None]] = {}
    for line in _git(*where, "diff", "--numstat", "--no-renames", base, head).splitlines():
        added, deleted, path = line.split("\t", 2)
        stats[path] = (None, None) if added == "-" else (int(added), int(deleted))
    statuses = {}
    for line in _git(*where, "diff", "--name-status", "--no-renames", base, head).splitlines():
        status, path = line.split("\t", 1)
        statuses[path] = status[:1]
    patch = _git(*where, "diff", "--no-ext-diff", "--no-textconv", "--no-renames", base, head)
    patches = _split_patch(patch)
    return [
        FileDiff(path=path, status=statuses.get(path, "M"), added=a, deleted=d, patch=patches.get(path, ""))
        for path, (a, d) in stats.items()
    ]


def _split_patch(patch: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=diff --git )", patch):
        match = re.match(r"diff --git a/(.+?) b/", chunk)
        if match:
            parts[match.group(1)] = chunk
    return parts


def commits(*, git_dir: Path, base: str, head: str) -> list[Commit]:
    out = _git("--git-dir", str(git_dir), "log", "--format=%H%x1f%s%x1f%an%x1f%aI", f"{base}..{head}")
    return [Commit(*line.split("\x1f")) for line in out.splitlines() if line]


@dataclass(frozen=True)
class PreparedMerge:
    """A merge built without a checkout; nothing has changed yet (see `apply_merge`)."""

    old: str  # the target's head it was built on
    new: str | None  # the commit the target would move to; None on conflict
    conflicts: list[str] = field(default_factory=list)
    fast_forward: bool = False
    already_merged: bool = False


def prepare_merge(*, repo: Path, source: str, target_branch: str, message: str) -> PreparedMerge:
    """Build the merge of `source` into `target_branch` as a commit, changing no ref and no file.
    A conflict lists the conflicting files."""
    common = str(common_dir(repo))
    old = _git("--git-dir", common, "rev-parse", "--verify", "--quiet", f"refs/heads/{target_branch}")
    source_sha = _git("--git-dir", common, "rev-parse", "--verify", "--quiet", f"{source}^{{commit}}")
    if _is_ancestor(common, source_sha, old):
        return PreparedMerge(old=old, new=old, already_merged=True)
    if _is_ancestor(common, old, source_sha):
        return PreparedMerge(old=old, new=source_sha, fast_forward=True)
    status, out, err = _git_status(
        "--git-dir", common, "merge-tree", "--write-tree", "--name-only", "--no-messages", old, source_sha
    )
    if status == 1:
        return PreparedMerge(old=old, new=None, conflicts=sorted(set(out.splitlines()[1:])))
    if status != 0:
        raise WorkspaceError(f"git merge-tree failed: {(err or out).strip()}")
    tree = out.splitlines()[0]
    new = _git("--git-dir", common, "commit-tree", tree, "-p", old, "-p", source_sha, "-m", message)
    return PreparedMerge(old=old, new=new)


def apply_merge(*, repo: Path, target_branch: str, prepared: PreparedMerge) -> None:
    """Move the target to the prepared commit if it is still where the merge was built
    (TargetMoved otherwise). A worktree with the target checked out must be clean (TargetDirty
    otherwise) and is brought up to the new head."""
    if prepared.new is None or prepared.new == prepared.old:
        return
    common = str(common_dir(repo))
    with repo_lock(repo):
        checked_out = [
            (path, _worktree_git_dir(repo, path)) for path in worktrees_on_branch(repo, target_branch)
        ]
        for path, git_dir in checked_out:
            if is_dirty(worktree=path, git_dir=git_dir):
                raise TargetDirty(
                    f"{target_branch} is checked out at {path} with uncommitted changes; commit or stash them first."
                )
        status, _, _ = _git_status(
            "--git-dir", common, "update-ref", "-m", "orchestrator merge", f"refs/heads/{target_branch}",
            prepared.new, prepared.old,
        )  # fmt: skip
        if status != 0:
            raise TargetMoved(f"{target_branch} moved while merging; nothing was changed. Merge again.")
        for path, git_dir in checked_out:
            _git(*_in(path, git_dir), "read-tree", "-m", "-u", prepared.old, prepared.new, cwd=path)


def start_merge(*, worktree: Path, git_dir: Path, source: str) -> list[str]:
    """Begin merging `source` into a worktree's branch, leaving conflict markers for an agent to
    resolve (`commit_all` then records the merge commit). Returns the conflicting files."""
    _git_status(
        *_in(worktree, git_dir), "merge", "--no-commit", "--no-ff", "--no-verify", source, cwd=worktree
    )
    out = _git(*_in(worktree, git_dir), "diff", "--name-only", "--diff-filter=U", cwd=worktree)
    return out.splitlines()


def _worktree_git_dir(repo: Path, path: Path) -> Path:
    """The git dir of a worktree, found from the repository's side (never from its `.git` file)."""
    common = common_dir(repo)
    if (
        path.resolve() == Path(_git("rev-parse", "--show-toplevel", cwd=repo)).resolve()
        and (path / ".git").is_dir()
    ):
        return common
    for candidate in common.glob("worktrees/*"):
        gitdir_file = candidate / "gitdir"
        if gitdir_file.exists() and Path(gitdir_file.read_text().strip()).parent.resolve() == path.resolve():
            return candidate
    return common


def _is_ancestor(common: str, ancestor: str, descendant: str) -> bool:
    status, _, _ = _git_status("--git-dir", common, "merge-base", "--is-ancestor", ancestor, descendant)
    return status == 0


def create_branch(*, repo: Path, branch: str, start_point: str) -> str:
    """Create a branch at `start_point` (refusing to overwrite one). Returns its commit."""
    common = str(common_dir(repo))
    sha = _git("--git-dir", common, "rev-parse", "--verify", "--quiet", f"{start_point}^{{commit}}")
    with repo_lock(repo):
        _git("--git-dir", common, "update-ref", f"refs/heads/{branch}", sha, "0" * 40)
    return sha


def push(*, repo: Path, remote: str, branch: str) -> str:
    """Push a branch to a remote (a configured name, a URL or a path). Returns git's summary."""
    status, out, err = _git_status(
        "--git-dir",
        str(common_dir(repo)),
        "push",
        "--porcelain",
        "--receive-pack=git-receive-pack",  # not a program named in the remote's config
        remote,
        f"refs/heads/{branch}:refs/heads/{branch}",
    )
    if status != 0:
        raise WorkspaceError(f"git push to {remote} failed: {(err or out).strip()}")
    return out


# --- testing a commit -----------------------------------------------------------------------


@dataclass(frozen=True)
class TestRun:
    passed: bool
    output: str
    seconds: float


def run_tests_at(*, repo: Path, commit: str, command: str, scratch: Path, timeout: float) -> TestRun:
    """Run `command` in a fresh, detached worktree of `commit`, then remove it."""
    path = scratch / f"test-{commit[:12]}-{os.getpid()}-{time.monotonic_ns()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    common = str(common_dir(repo))
    with repo_lock(repo):
        _git("--git-dir", common, "worktree", "add", "--quiet", "--detach", str(path), commit, cwd=repo)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(path), "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        passed, output = proc.returncode == 0, (proc.stdout + proc.stderr)[-20_000:]
    except subprocess.TimeoutExpired as exc:
        passed, output = False, f"Timed out after {timeout:.0f} s.\n{(exc.stdout or '')!s}"[-20_000:]
    finally:
        remove_worktree(repo=repo, path=path)
    return TestRun(passed=passed, output=output, seconds=time.monotonic() - started)
