"""The whole path with real parts: real qcluster workers, the real SDK, the fake Messages API, git."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.models import Agent, AgentStatus, EntryKind, MessageKind
from agents.services import agent_spawn
from budgets.models import UsageRecord
from tests.conftest import ROOT, wait_for
from tests.fakes.anthropic_server import Fault, Turn, text, tool_use

pytestmark = pytest.mark.e2e


def finished(agent: Agent) -> bool:
    agent.refresh_from_db()
    return agent.is_finished


def show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def test_implementer_creates_file_in_worktree_and_commits_it(workers, fake_anthropic, repo):
    fake_anthropic.script(
        "Create hello.txt",
        [
            Turn(
                [
                    text("Writing it."),
                    tool_use("Write", {"file_path": "hello.txt", "content": "Hello, world!\n"}),
                ],
                usage={"input_tokens": 1200, "output_tokens": 80, "cache_read_input_tokens": 300},
            ),
            Turn([text("Created hello.txt.")], usage={"input_tokens": 1400, "output_tokens": 10}),
        ],
    )
    workers.start()
    agent = agent_spawn(role="implementer", task="Create hello.txt saying Hello, world!", repo_path=str(repo))

    wait_for(lambda: finished(agent), timeout=60, message=f"agent to finish; worker logs:\n{workers.logs()}")

    assert agent.status == AgentStatus.COMPLETED, agent.status_reason
    assert agent.result == "Created hello.txt."
    workspace = agent.workspace
    assert (Path(workspace.path) / "hello.txt").read_text() == "Hello, world!\n"
    assert show(repo, workspace.branch, "hello.txt") == "Hello, world!\n"
    assert workspace.head_commit

    kinds = list(agent.transcript.order_by("seq").values_list("kind", flat=True))
    assert kinds == [
        EntryKind.USER,
        EntryKind.ASSISTANT,
        EntryKind.TOOL_CALL,
        EntryKind.TOOL_RESULT,
        EntryKind.ASSISTANT,
    ]
    call = agent.transcript.get(kind=EntryKind.TOOL_CALL).payload
    assert call["name"] == "Write" and call["input"]["file_path"] == "hello.txt"
    result = agent.transcript.get(kind=EntryKind.TOOL_RESULT)
    assert result.payload["is_error"] is False and result.duration_ms is not None

    usage = list(UsageRecord.objects.filter(agent=agent).order_by("id"))
    assert [(u.input_tokens, u.output_tokens, u.cache_read_tokens) for u in usage] == [
        (1200, 80, 300),
        (1400, 10, 0),
    ]
    # claude-sonnet-5-5 (the default): $2 in, $10 out, $0.20 cache read per million tokens
    assert agent.model == "claude-sonnet-5-5"
    assert str(agent.cost_usd) == "0.006160"  # 2600*2 + 90*10 + 300*0.2 micro-dollars
    assert agent.input_tokens == 2600 and agent.output_tokens == 90 and agent.turns == 2

    requests = fake_anthropic.requests_for("Create hello.txt")
    assert [r.turn_index for r in requests] == [0, 1]
    assert requests[0].body["stream"] is True
    assert {t["name"] for t in requests[0].body["tools"]} == {
        "Read",
        "Write",
        "Edit",
        "Glob",
        "Grep",
        "Bash",
        "SendMessage",
        "RequestBudget",
    }
    assert workspace.path in requests[0].body["system"]


def test_parent_waits_without_a_worker_and_resumes_with_child_result(workers, fake_anthropic, repo):
    spec = "hello.txt must contain exactly: Hi from the spec\n"

    def implement_from_spec(body: dict) -> Turn:
        # The child read SPEC.md, which its parent wrote before spawning it.
        read_result = body["messages"][-1]["content"][0]
        assert read_result["type"] == "tool_result"
        wanted = read_result["content"].split("exactly: ", 1)[1].split("\n", 1)[0]
        return Turn([tool_use("Write", {"file_path": "hello.txt", "content": wanted + "\n"})])

    def summarise_child(body: dict) -> Turn:
        delivered = json.dumps(body["messages"][-1])
        assert "Implemented hello.txt from SPEC.md" in delivered
        return Turn([text("Spec written and implemented by my child.")])

    fake_anthropic.script(
        "Specify a greeting file",
        [
            Turn(
                [
                    tool_use("Write", {"file_path": "SPEC.md", "content": spec}),
                    tool_use(
                        "SpawnAgent", {"role": "implementer", "task": "Implement SPEC.md in this repository"}
                    ),
                ]
            ),
            Turn([text("My implementer is on it; waiting for its result.")]),
            summarise_child,
        ],
    )
    fake_anthropic.script(
        "Implement SPEC.md",
        [
            Turn([tool_use("Read", {"file_path": "SPEC.md"})]),
            implement_from_spec,
            Turn([text("Implemented hello.txt from SPEC.md.")]),
        ],
    )
    # One worker process: if the waiting parent held it, the child could never run.
    workers.start(count=1, workers_per_cluster=1)
    parent = agent_spawn(
        role="spec-writer", task="Specify a greeting file and have it built", repo_path=str(repo)
    )

    wait_for(lambda: finished(parent), timeout=90, message=f"parent to finish; logs:\n{workers.logs()}")

    child = Agent.objects.get(parent=parent)
    assert parent.status == AgentStatus.COMPLETED, parent.status_reason
    assert child.status == AgentStatus.COMPLETED, child.status_reason
    assert parent.result == "Spec written and implemented by my child."
    assert child.role.name == "implementer"

    # The child's branch starts from the parent's committed spec and adds its own work.
    assert show(repo, child.workspace.branch, "SPEC.md") == spec
    assert show(repo, child.workspace.branch, "hello.txt") == "Hi from the spec\n"
    assert show(repo, parent.workspace.branch, "SPEC.md") == spec

    # The parent ended its turn with a child running, went waiting, and was woken by the result.
    mail = parent.inbox.get()
    assert mail.kind == MessageKind.CHILD_RESULT and mail.delivered_at is not None
    delivery = parent.transcript.filter(kind=EntryKind.USER, seq__gt=0).get()
    assert delivery.payload["message_ids"] == [mail.pk]
    assert [r.turn_index for r in fake_anthropic.requests_for("Specify a greeting file")] == [0, 1, 2]
    assert [r.turn_index for r in fake_anthropic.requests_for("Implement SPEC.md")] == [0, 1, 2]
    assert parent.cost_usd > 0 and child.cost_usd > 0


def test_first_api_request_goes_out_well_under_a_second_after_spawn(workers, fake_anthropic, repo):
    fake_anthropic.script("Warm up", [Turn([text("Warm.")])])
    fake_anthropic.script("Quick task", [Turn([text("Done quickly.")])])
    workers.start()
    warm = agent_spawn(role="implementer", task="Warm up the workers", repo_path=str(repo))
    wait_for(lambda: finished(warm), timeout=60, message="warm-up agent")

    before_spawn = time.time()
    agent = agent_spawn(role="implementer", task="Quick task", repo_path=str(repo))
    committed = time.time()  # agent_spawn returns once its transaction committed and the task was queued
    wait_for(lambda: finished(agent), timeout=30, message="quick agent")

    first_request = fake_anthropic.requests_for("Quick task")[0].received_at
    assert first_request - committed < 0.5, f"{first_request - committed:.3f} s from commit to first request"
    assert first_request - before_spawn < 1.0


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_spawn_agent_wait_prints_result_tokens_and_cost(workers, fake_anthropic, repo):
    fake_anthropic.script(
        "Say hello from the CLI",
        [Turn([text("Hello from the CLI.")], usage={"input_tokens": 500, "output_tokens": 50})],
    )
    workers.start()
    proc = manage(
        "spawn_agent", "--role", "implementer", "--task", "Say hello from the CLI", "--repo", str(repo), "--wait",
        env=workers.env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    agent = Agent.objects.get()
    assert lines[0] == str(agent.pk)
    assert "status: completed" in lines
    assert "tokens: 500 in, 50 out, 0 cache write, 0 cache read" in lines
    assert "cost: $0.001500" in lines  # 500 * $2 + 50 * $10 per million
    assert lines[-1] == "Hello from the CLI."


def test_spawn_agent_wait_exits_nonzero_when_the_agent_fails(workers, fake_anthropic, repo):
    fake_anthropic.script("Doomed", [Turn([text("x")], faults=[Fault(400, message="prompt is too long")])])
    workers.start()
    proc = manage(
        "spawn_agent",
        "--role",
        "implementer",
        "--task",
        "Doomed task",
        "--repo",
        str(repo),
        "--wait",
        env=workers.env,
    )
    assert proc.returncode == 1
    assert "status: failed" in proc.stdout
    assert proc.stderr.strip().endswith("failed: The API refused the request (400): prompt is too long")
