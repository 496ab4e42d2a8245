"""Git workspaces: merging without a checkout, conflicts, host safety, repair, archive, forge."""

from __future__ import annotations

import os
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from agents import workspaces
from agents.lifecycle import agent_archive
from agents.merges import merge_request, merge_resolve, merges_process
from agents.models import Agent, AgentEvent, AgentStatus, MergeStatus, PullRequest, Workspace
from agents.services import agent_spawn
from agents.tools.base import ToolBox, ToolContext
from agents.tools.git import git_tools
from agents.tools.shell import BASH_TOOL
from tests.conftest import git

S = AgentStatus


@pytest.fixture
def spawn(seeded, repo, worktrees_dir, settings):
    settings.ANTHROPIC_API_KEY = "test-key"

    def make(task="Work", parent=None, role="implementer"):
        return agent_spawn(role=role, task=task, repo_path=None if parent else str(repo), parent=parent)

    return make


def write_and_commit(agent: Agent, name: str, content: str) -> str:
    ws = agent.workspace
    (Path(ws.path) / name).write_text(content)
    return workspaces.commit_all(worktree=Path(ws.path), git_dir=Path(ws.git_dir), message=f"write {name}")


def complete(agent: Agent) -> None:
    Agent.objects.filter(pk=agent.pk).update(status=S.COMPLETED)
    agent.refresh_from_db()


def show(repo: Path, rev: str, path: str) -> str:
    return git("show", f"{rev}:{path}", cwd=repo)


def test_a_child_merges_into_its_parent_without_a_checkout(spawn, repo):
    parent = spawn("Lead")
    child = spawn("Part", parent=parent)
    write_and_commit(parent, "lead.txt", "lead\n")  # both sides moved: a real merge commit
    write_and_commit(child, "part.txt", "part\n")
    complete(child)
    main_head = git("rev-parse", "main", cwd=repo)

    merge = merge_request(agent=child)
    merges_process(project_id=parent.project_id)
    merge.refresh_from_db()
    assert merge.status == MergeStatus.MERGED, merge.reason
    assert show(repo, parent.workspace.branch, "part.txt") == "part"
    assert (
        git("rev-list", "--parents", "-n1", parent.workspace.branch, cwd=repo).count(" ") == 2
    )  # two parents
    assert (Path(parent.workspace.path) / "part.txt").read_text() == "part\n"  # its worktree follows
    assert not workspaces.is_dirty(
        worktree=Path(parent.workspace.path), git_dir=Path(parent.workspace.git_dir)
    )
    assert git("rev-parse", "main", cwd=repo) == main_head  # nothing else moved
    assert AgentEvent.objects.filter(agent=child, kind="merged").exists()


def test_a_target_that_moves_fails_cleanly_and_the_queue_merges_on_retry(spawn, repo, tmp_path):
    root = spawn("Root work")
    write_and_commit(root, "feature.txt", "feature\n")
    complete(root)
    prepared = workspaces.prepare_merge(
        repo=repo, source=root.workspace.branch, target_branch="main", message="m"
    )
    (repo / "other.txt").write_text("someone else\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "moved meanwhile", cwd=repo)
    moved = git("rev-parse", "main", cwd=repo)
    with pytest.raises(workspaces.TargetMoved):
        workspaces.apply_merge(repo=repo, target_branch="main", prepared=prepared)
    assert git("rev-parse", "main", cwd=repo) == moved and not (repo / "feature.txt").exists()

    # Through the queue: the test command moves main once while the merge is being tested.
    marker = tmp_path / "moved-once"
    root.project.test_command = f"test -e {marker} || (touch {marker} && git -C {repo} commit -q --allow-empty -m 'moved during the test')"
    root.project.save()
    merge = merge_request(agent=root)
    merges_process(project_id=root.project_id)
    merge.refresh_from_db()
    assert merge.status == MergeStatus.MERGED and merge.attempts == 2, (merge.reason, merge.test_output)
    assert show(repo, "main", "feature.txt") == "feature"
    assert "moved during the test" in git("log", "--format=%s", "main", cwd=repo)
    assert (repo / "feature.txt").read_text() == "feature\n"  # the checked-out base followed, cleanly


def test_a_conflict_changes_nothing_and_a_resolver_finishes_the_merge(spawn, repo):
    parent = spawn("Lead")
    child = spawn("Part", parent=parent)
    write_and_commit(parent, "README.md", "# Parent's title\n")
    write_and_commit(child, "README.md", "# Child's title\n")
    complete(child)
    parent_head = git("rev-parse", parent.workspace.branch, cwd=repo)

    merge = merge_request(agent=child)
    merges_process(project_id=parent.project_id)
    merge.refresh_from_db()
    assert merge.status == MergeStatus.CONFLICT and merge.conflicts == ["README.md"]
    assert git("rev-parse", parent.workspace.branch, cwd=repo) == parent_head  # nothing half-merged
    assert (Path(parent.workspace.path) / "README.md").read_text() == "# Parent's title\n"
    for agent in (child, parent):
        event = AgentEvent.objects.get(agent=agent, kind="merge_conflict")
        assert event.data["files"] == ["README.md"] and "resolver" in event.data["choices"]

    resolver = merge_resolve(merge=merge)
    conflicted = (Path(resolver.workspace.path) / "README.md").read_text()
    assert "<<<<<<<" in conflicted and "Child's title" in conflicted and "Parent's title" in conflicted
    (Path(resolver.workspace.path) / "README.md").write_text("# Both titles\n")
    workspaces.commit_all(
        worktree=Path(resolver.workspace.path), git_dir=Path(resolver.workspace.git_dir), message="resolved"
    )
    complete(resolver)
    merges_process(project_id=parent.project_id)
    assert show(repo, parent.workspace.branch, "README.md") == "# Both titles"
    assert git("merge-base", "--is-ancestor", child.workspace.branch, parent.workspace.branch, cwd=repo) == ""


def test_a_dirty_base_is_refused_with_a_clear_reason(spawn, repo):
    root = spawn("Root")
    write_and_commit(root, "new.txt", "new\n")
    complete(root)
    (repo / "README.md").write_text("# Edited by a person, not committed\n")
    merge = merge_request(agent=root)
    merges_process(project_id=root.project_id)
    merge.refresh_from_db()
    assert merge.status == MergeStatus.FAILED and "uncommitted changes" in merge.reason
    assert (repo / "README.md").read_text() == "# Edited by a person, not committed\n"
    assert "new.txt" not in git("ls-tree", "--name-only", "main", cwd=repo)


def test_git_commands_never_run_code_the_agent_planted(spawn, repo, tmp_path):
    """The agent repoints `.git` at a directory with core.fsmonitor and hooks, and plants the same in
    the real repository config: committing, diffing, merging and archiving never run them."""
    agent = spawn("Sneaky")
    (repo / "other.txt").write_text("main moved on\n")  # so merging needs merge-tree, not a fast-forward
    git("add", "other.txt", cwd=repo)
    git("commit", "-q", "-m", "main moved", cwd=repo)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil-gitdir"
    bash = ToolBox.of([BASH_TOOL], ToolContext(worktree=Path(agent.workspace.path)))
    script = f"""
        set -e
        git init -q --bare {evil}
        git --git-dir={evil} config core.fsmonitor 'touch {marker}; false'
        mkdir -p {evil}/hooks hooks
        printf '#!/bin/sh\\ntouch {marker}\\n' > {evil}/hooks/pre-commit
        cp {evil}/hooks/pre-commit {evil}/hooks/post-commit
        chmod +x {evil}/hooks/*
        echo "gitdir: {evil}" > .git
        echo '* filter=evil merge=evil diff=evil' > .gitattributes
        echo data > x
    """
    result = bash.execute("Bash", {"command": script})
    assert not result.is_error, result.content
    common = workspaces.common_dir(repo)
    git("config", "core.fsmonitor", f"touch {marker}; false", cwd=repo)
    for key in (
        "filter.evil.clean",
        "filter.evil.smudge",
        "filter.evil.process",
        "merge.evil.driver",
        "diff.evil.textconv",
        "diff.evil.command",
    ):
        git("config", key, f"touch {marker}; cat", cwd=repo)
    (common / "hooks" / "pre-commit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (common / "hooks" / "pre-commit").chmod(0o755)

    head = write_and_commit(agent, "work.txt", "work\n")
    assert head and git("rev-parse", agent.workspace.branch, cwd=repo) == head
    assert "x" in git("ls-tree", "--name-only", head, cwd=repo)
    workspaces.diff(git_dir=common, base=agent.workspace.base_commit, head=head)
    complete(agent)
    merge = merge_request(agent=agent)
    merges_process(project_id=agent.project_id)
    merge.refresh_from_db()
    agent_archive(agent=agent)
    assert not marker.exists()
    assert merge.status == MergeStatus.MERGED, merge.reason
    assert git("rev-list", "--parents", "-n1", "main", cwd=repo).count(" ") == 2  # a real merge commit


def test_overlap_between_two_running_agents_is_an_event_on_both(workers, fake_anthropic, repo, admin_client):
    from tests.fakes.anthropic_server import Turn, text, tool_use

    for name in ("First", "Second"):
        fake_anthropic.script(
            f"{name} writer",
            [
                Turn([tool_use("Write", {"file_path": "shared.md", "content": f"{name}\n"})]),
                Turn([tool_use("Bash", {"command": "sleep 2"})]),
                Turn([text("Done.")]),
            ],
        )
    workers.start(1, workers_per_cluster=2)
    a = agent_spawn(role="implementer", task="First writer", repo_path=str(repo))
    b = agent_spawn(role="implementer", task="Second writer", repo_path=str(repo))
    from tests.conftest import wait_for

    wait_for(lambda: set(Agent.objects.values_list("status", flat=True)) == {S.COMPLETED}, timeout=60)
    from django.urls import reverse

    for agent in (a, b):
        event = AgentEvent.objects.get(agent=agent, kind="overlap")
        assert event.data["path"] == "shared.md" and event.data["agents"] == sorted([a.pk, b.pk])
        page = admin_client.get(reverse("dashboard:agent", args=[agent.pk])).content.decode()
        assert "Overlap: <code>shared.md</code> is written by agents" in page


def test_sixteen_agents_commit_concurrently_then_archive_cleanly(workers, fake_anthropic, repo):
    from tests.conftest import wait_for
    from tests.fakes.anthropic_server import Turn, text, tool_use

    count = 16
    for n in range(count):
        fake_anthropic.script(
            f"Task number {n}",
            [
                Turn([tool_use("Write", {"file_path": f"file-{n}.txt", "content": f"{n}\n"})]),
                Turn([text(f"Wrote file {n}.")]),
            ],
        )
    workers.start(2, workers_per_cluster=4)
    agents = [
        agent_spawn(role="implementer", task=f"Task number {n}", repo_path=str(repo)) for n in range(count)
    ]
    wait_for(
        lambda: Agent.objects.filter(status=S.COMPLETED).count() == count,
        timeout=120,
        message=lambda: str(list(Agent.objects.values_list("pk", "status", "status_reason"))),
    )
    for n, agent in enumerate(agents):
        assert show(repo, agent.workspace.branch, f"file-{n}.txt") == str(n)
        assert git("rev-list", "--count", f"main..{agent.workspace.branch}", cwd=repo) == "1"
    for agent in agents:
        agent_archive(agent=agent)
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1
    assert all(not Path(a.workspace.path).exists() for a in agents)
    assert Workspace.objects.filter(removed_at__isnull=True).count() == 0
    logs = workers.logs()
    assert "index.lock" not in logs and "could not lock" not in logs.lower()


def test_archive_refuses_a_worktree_in_use(spawn):
    parent = spawn("Lead")
    child = spawn("Part", parent=parent)
    complete(parent)
    from agents.errors import OrchestratorError

    with pytest.raises(OrchestratorError, match=f"agents {child.pk} have not finished"):
        agent_archive(agent=parent, subtree=True)
    assert Path(child.workspace.path).is_dir() and Path(parent.workspace.path).is_dir()


def test_start_up_repair_says_what_it_fixed(spawn, repo, worktrees_dir):
    running = spawn("Keeps working")
    finished = spawn("Done already")
    complete(finished)
    common = workspaces.common_dir(repo)
    lock = common / "index.lock"
    lock.write_text("")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    orphan = worktrees_dir / f"project-{running.project_id}" / "agent-999"
    git("worktree", "add", "-q", "-b", "orphan", str(orphan), "main", cwd=repo)
    os.utime(orphan, (old, old))
    subprocess.run(["rm", "-rf", running.workspace.path, finished.workspace.path], check=True)

    out = StringIO()
    call_command("repair_workspaces", stdout=out)
    report = out.getvalue()
    assert f"removed stale {lock}" in report
    assert f"removed worktree directory {orphan}: no agent owns it" in report
    assert f"agent {running.pk}: worktree {running.workspace.path} was gone; checked out" in report
    assert f"agent {finished.pk}: worktree {finished.workspace.path} was gone; recorded as removed" in report
    assert not lock.exists() and not orphan.exists()
    assert Path(running.workspace.path, "README.md").exists()
    assert Workspace.objects.get(agent=finished).removed_at is not None
    listed = git("worktree", "list", "--porcelain", cwd=repo)
    assert str(orphan) not in listed and finished.workspace.path not in listed
    out = StringIO()
    call_command("repair_workspaces", stdout=out)
    assert out.getvalue().strip() == "nothing to repair"


def test_branch_names_are_safe_whatever_the_task_says(spawn, repo):
    agent = spawn("feat: `rm -rf /` ~^:?*[\\ ..lock @{-1} $(whoami) ünïcode")
    branch = agent.workspace.branch
    assert subprocess.run(["git", "check-ref-format", "--branch", branch], cwd=repo).returncode == 0
    assert branch.startswith(f"agents/{agent.pk}-feat-rm-rf")


def test_the_git_agent_pushes_to_a_bare_remote_and_opens_a_pull_request(spawn, repo, tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    agent = spawn("Ship it", role="git-agent")
    agent.project.remote = str(remote)
    agent.project.save()
    tools = ToolBox.of(
        git_tools(agent_id=agent.pk), ToolContext(worktree=Path(agent.workspace.path), agent_id=agent.pk)
    )
    (Path(agent.workspace.path) / "CHANGELOG.md").write_text("- shipped\n")
    commit = tools.execute("Commit", {"message": "Add a changelog"})
    assert not commit.is_error and "Committed" in commit.content, commit.content
    pushed = tools.execute("Push", {})
    assert not pushed.is_error, pushed.content
    assert git(
        "--git-dir", str(remote), "log", "--format=%s", agent.workspace.branch, cwd=tmp_path
    ).startswith("Add a changelog")
    opened = tools.execute("OpenPullRequest", {"title": "Ship it", "body": "All done."})
    assert not opened.is_error, opened.content
    pr = PullRequest.objects.get()
    assert (pr.head_branch, pr.base_branch, pr.forge, pr.number) == (
        agent.workspace.branch,
        "main",
        "local",
        1,
    )
    assert pr.url == f"local://{agent.project.name}/pulls/1"
    # Without a remote, a clear error.
    agent.project.remote = ""
    agent.project.save()
    assert "no remote configured" in tools.execute("Push", {}).content


def test_the_agent_page_and_admin_show_the_branch_diff_and_commits(spawn, admin_client):
    from django.urls import reverse

    agent = spawn("Document things")
    write_and_commit(agent, "docs.md", "# Docs\nline\n")
    page = admin_client.get(reverse("dashboard:agent", args=[agent.pk])).content.decode()
    assert "docs.md" in page and "+# Docs" in page and "write docs.md" in page
    admin = admin_client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()
    assert "docs.md" in admin and "write docs.md" in admin


def test_a_worktree_deleted_under_a_running_agent_fails_it_clearly_and_a_retry_restores_it(
    workers, fake_anthropic, repo
):
    from agents.services import agent_retry
    from tests.conftest import wait_for
    from tests.fakes.anthropic_server import Turn, text, tool_use

    fake_anthropic.script(
        "Vanishing floor",
        [
            Turn([tool_use("Write", {"file_path": "before.txt", "content": "kept\n"})]),
            Turn([tool_use("Bash", {"command": "git status --short >/dev/null; sleep 2"})]),
            Turn([tool_use("Write", {"file_path": "after.txt", "content": "lost\n"})]),
            Turn([text("Done.")]),
            Turn([text("Done, again.")]),
        ],
    )
    workers.start(1)
    agent = agent_spawn(role="implementer", task="Vanishing floor", repo_path=str(repo))
    wait_for(lambda: AgentEvent.objects.filter(agent=agent, kind="tool_started", data__name="Bash").exists())
    subprocess.run(["rm", "-rf", agent.workspace.path], check=True)
    wait_for(lambda: Agent.objects.get(pk=agent.pk).is_finished, timeout=30)
    agent.refresh_from_db()
    assert agent.status == S.FAILED and f"The worktree {agent.workspace.path} is gone" in agent.status_reason
    assert subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, capture_output=True).returncode == 0

    agent_retry(agent=agent)
    wait_for(lambda: Agent.objects.get(pk=agent.pk).status == S.COMPLETED, timeout=30)
    assert Path(agent.workspace.path).is_dir()
    assert AgentEvent.objects.filter(agent=agent, kind="worktree_restored").exists()
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 2


def test_the_parent_merges_its_children_with_its_tools_and_settles_a_conflict(spawn, repo):
    from agents.models import Merge

    parent = spawn("Lead", role="git-agent")
    good, clashing = spawn("Good part", parent=parent), spawn("Clashing part", parent=parent)
    write_and_commit(good, "good.txt", "good\n")
    write_and_commit(clashing, "README.md", "# The child's README\n")
    for child in (good, clashing):
        complete(child)
    (Path(parent.workspace.path) / "README.md").write_text("# The parent's README, not committed yet\n")
    tools = ToolBox.of(
        git_tools(agent_id=parent.pk), ToolContext(worktree=Path(parent.workspace.path), agent_id=parent.pk)
    )

    merged = tools.execute("MergeChild", {"agent": good.pk})
    assert not merged.is_error and "Merged agent" in merged.content, merged.content
    assert (Path(parent.workspace.path) / "good.txt").read_text() == "good\n"
    head = git("rev-parse", parent.workspace.branch, cwd=repo)

    conflict = tools.execute("MergeChild", {"agent": clashing.pk})
    assert (
        conflict.is_error
        and "conflicts in: README.md" in conflict.content
        and "ResolveConflict" in conflict.content
    )
    assert git("rev-parse", parent.workspace.branch, cwd=repo) == head
    merge = Merge.objects.get(agent=clashing)
    assert tools.execute("AbandonMerge", {"merge": merge.pk}).content.endswith("nothing was changed.")
    merge.refresh_from_db()
    assert merge.status == MergeStatus.ABANDONED
    assert tools.execute("MergeChild", {"agent": 999}).content == "Agent 999 is not one of your children."
