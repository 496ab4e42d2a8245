"""Bad input gets one clear error and loses nothing: from the model's tool calls and from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent, AgentStatus, EntryKind, Project
from agents.services import agent_spawn
from tests.conftest import ROOT, database_url, git, run_here
from tests.fakes.anthropic_server import Turn, text, tool_use


def test_writes_outside_the_worktree_are_refused_and_the_agent_carries_on(agents_env, repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "escape").symlink_to(outside)  # a symlink in the repository that points out of it
    git("add", "escape", cwd=repo)
    git("commit", "-qm", "Add a symlink", cwd=repo)
    agents_env.script(
        "Try to escape",
        [
            Turn(
                [
                    tool_use("Write", {"file_path": "../outside.txt", "content": "x"}),
                    tool_use("Write", {"file_path": str(tmp_path / "absolute.txt"), "content": "x"}),
                    tool_use("Write", {"file_path": "escape/through-link.txt", "content": "x"}),
                    tool_use("Read", {"file_path": "/etc/hostname"}),
                ]
            ),
            Turn([tool_use("Write", {"file_path": "inside.txt", "content": "fine\n"})]),
            Turn([text("Wrote inside.txt; the rest was refused.")]),
        ],
    )
    agent = run_here(agent_spawn(role="implementer", task="Try to escape the worktree", repo_path=str(repo)))

    assert agent.status == AgentStatus.COMPLETED, agent.status_reason
    results = list(
        agent.transcript.filter(kind=EntryKind.TOOL_RESULT).order_by("seq").values_list("payload", flat=True)
    )
    assert [r["is_error"] for r in results] == [True, True, True, True, False]
    assert all("outside" in r["content"] or "You work in" in r["content"] for r in results[:4])
    worktree = Path(agent.workspace.path)
    assert not (worktree.parent / "outside.txt").exists()
    assert not (tmp_path / "absolute.txt").exists()
    assert list(outside.iterdir()) == []
    assert (worktree / "inside.txt").read_text() == "fine\n"


def test_tool_input_that_breaks_the_schema_is_an_error_result(agents_env, repo):
    agents_env.script(
        "Send garbage",
        [
            Turn([tool_use("Write", {"path": "x.txt"}), tool_use("NoSuchTool", {})]),
            Turn([text("Gave up.")]),
        ],
    )
    agent = run_here(agent_spawn(role="implementer", task="Send garbage input", repo_path=str(repo)))

    assert agent.status == AgentStatus.COMPLETED
    results = [e.payload for e in agent.transcript.filter(kind=EntryKind.TOOL_RESULT).order_by("seq")]
    assert results[0]["is_error"] and "Invalid input for Write" in results[0]["content"]
    assert results[1]["is_error"] and "Unknown tool 'NoSuchTool'" in results[1]["content"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"role": "astronaut", "task": "t"},
            "Unknown role 'astronaut'. Roles: git-agent, implementer, planner",
        ),
        (
            {"role": "implementer", "task": "t", "repo": "/nonexistent/repo"},
            "Repository not found: /nonexistent/repo",
        ),
        ({"role": "implementer", "task": "t", "repo": "{plain_dir}"}, "Not a git repository: "),
        ({"role": "implementer", "task": "   ", "repo": "{repo}"}, "The task is empty"),
        ({"role": "implementer", "task": "t", "parent": 999}, "Parent agent 999 does not exist."),
        ({"role": "implementer", "task": "t"}, "Say which repository the agent works on"),
    ],
)
def test_spawn_agent_refuses_bad_input_and_creates_nothing(seeded, repo, tmp_path, options, message):
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    options = {k: str(v).format(plain_dir=plain_dir, repo=repo) for k, v in options.items()}
    with pytest.raises(CommandError) as error:
        call_command("spawn_agent", **options)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert Agent.objects.count() == 0


def test_repository_without_commits_is_refused(seeded, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git("init", "-q", cwd=empty)
    with pytest.raises(CommandError, match="has no commits yet"):
        call_command("spawn_agent", role="implementer", task="t", repo=str(empty))
    assert not Project.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- role: implementer\n  task: [unclosed", "is not valid YAML at line 2"),
        ("role: implementer\ntask: t\n", "must hold a YAML list of agents"),
        (
            "- role: implementer\n  task: ok\n  repo: {repo}\n- role: astronaut\n  task: t\n  repo: {repo}\n",
            "Entry 2: Unknown role 'astronaut'",
        ),
        (
            "- role: implementer\n  task: ok\n  repo: {repo}\n  colour: blue\n",
            "Entry 1: unknown field(s) colour",
        ),
        ("- just a string\n", "Entry 1: expected a mapping of fields, got str"),
        ("[]\n", "The batch is empty"),
    ],
)
def test_malformed_batch_file_gives_one_clear_error_and_creates_nothing(
    seeded, repo, tmp_path, content, message
):
    batch = tmp_path / "batch.yaml"
    batch.write_text(content.format(repo=repo))
    with pytest.raises(CommandError) as error:
        call_command("spawn_agents", str(batch))
    assert message in str(error.value)
    assert Agent.objects.count() == 0 and not (tmp_path / "worktrees").exists()


def test_batch_file_that_does_not_exist(seeded, tmp_path):
    with pytest.raises(CommandError, match=r"Can't read .*missing\.yaml: No such file or directory"):
        call_command("spawn_agents", str(tmp_path / "missing.yaml"))


def test_spawn_without_model_access_says_how_to_configure_it(seeded, repo, settings):
    settings.ANTHROPIC_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = ""
    with pytest.raises(CommandError, match=r"set ANTHROPIC_API_KEY .* \(or ANTHROPIC_BASE_URL"):
        call_command("spawn_agent", role="implementer", task="t", repo=str(repo))
    assert Agent.objects.count() == 0


def test_cli_error_is_one_line_on_stderr_with_nonzero_exit(transactional_db, seeded, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url()}
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spawn_agent",
            "--role",
            "astronaut",
            "--task",
            "t",
            "--repo",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "CommandError: Unknown role 'astronaut'. Roles: git-agent, implementer, planner, reviewer, spec-writer, tester."
    ]
