"""The workflow engine with real workers against the fake Messages API, scripted per role."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum

from agents.models import FINISHED_STATUSES, Agent, AgentEvent, AgentStatus, PullRequest
from budgets.models import UsageRecord
from tests.conftest import git, wait_for
from tests.fakes.anthropic_server import Fault, Turn, text, tool_use
from workflows.models import StepRun, Workflow, WorkflowStatus, WorkflowTemplate
from workflows.services import (
    builtin_templates_sync,
    workflow_cancel,
    workflow_cost,
    workflow_start,
    workflow_step_retry,
)

TASKS = [
    {"title": "Parser", "details": "Parse the input."},
    {"title": "Renderer", "details": "Render the output."},
    {"title": "CLI", "details": "A command line."},
]


@pytest.fixture
def templates(seeded):
    builtin_templates_sync()


def wait_workflow(workflow: Workflow, timeout: float = 120) -> Workflow:
    def done():
        workflow.refresh_from_db()
        return workflow.status != WorkflowStatus.RUNNING

    wait_for(
        done,
        timeout=timeout,
        message=lambda: (
            f"workflow {workflow.pk}: "
            + str(
                list(
                    workflow.step_runs.values_list(
                        "step", "item_index", "round", "status", "agent__status_reason"
                    )
                )
            )
        ),
    )
    return workflow


def script_feature(fake) -> None:
    fake.script(
        "Write the specification for this request",
        [
            Turn([tool_use("Write", {"file_path": "SPEC.md", "content": "# Spec\nA tiny tool.\n"})]),
            Turn([text("Spec written.")]),
        ],
    )
    fake.script(
        "Break the specification",
        [Turn([tool_use("SubmitResult", {"tasks": TASKS})]), Turn([text("Planned three tasks.")])],
    )
    for n, task in enumerate(TASKS, start=1):
        name = task["title"].lower()
        fake.script(
            f"Implement task {n} of the plan: {task['title']}",
            [
                Turn([tool_use("Write", {"file_path": f"{name}.py", "content": f"# {name}\n"})]),
                Turn([tool_use("Bash", {"command": "sleep 1.5"})]),
                Turn([text(f"{task['title']} done.")]),
            ],
        )
    fake.script(
        "Address the review of task 2 (round 2): Handle empty input",
        [
            Turn(
                [
                    tool_use(
                        "Edit",
                        {
                            "file_path": "renderer.py",
                            "old_string": "# renderer\n",
                            "new_string": "# renderer\n# handles empty input\n",
                        },
                    )
                ]
            ),
            Turn([text("Renderer fixed.")]),
        ],
    )
    fake.script("Test task", [Turn([text("All tests pass.")])])
    fake.script(
        "Review round 1 of the implementation",
        [
            Turn(
                [
                    tool_use(
                        "SubmitResult",
                        {
                            "verdict": "changes_requested",
                            "changes": [{"task": 1, "feedback": "Handle empty input"}],
                        },
                    )
                ]
            ),
            Turn([text("Changes requested.")]),
        ],
    )
    fake.script(
        "Review round 2 of the implementation",
        [Turn([tool_use("SubmitResult", {"verdict": "approve"})]), Turn([text("Approved.")])],
    )
    fake.script(
        "The review approved the change",
        [
            Turn([tool_use("MergeBranches", {"step": "implement"})]),
            Turn(
                [tool_use("OpenPullRequest", {"title": "A tiny tool", "body": "Parser, renderer and CLI."})]
            ),
            Turn([text("Shipped.")]),
        ],
    )


def runs(workflow: Workflow, step: str) -> list[StepRun]:
    return list(workflow.step_runs.filter(step=step).order_by("item_index", "round"))


def test_the_feature_workflow_runs_end_to_end(workers, fake_anthropic, templates, repo):
    script_feature(fake_anthropic)
    workers.start(1, workers_per_cluster=4)
    workflow = workflow_start(
        template="feature", input="Build a tiny tool", repo_path=str(repo), budget_usd="20"
    )
    workflow = wait_workflow(workflow)
    assert workflow.status == WorkflowStatus.COMPLETED, workflow.status_reason

    assert runs(workflow, "plan")[0].output == {"tasks": TASKS}
    implement = runs(workflow, "implement")
    assert [(r.item_index, r.round) for r in implement] == [(0, 1), (1, 1), (1, 2), (2, 1)]
    assert [(r.item_index, r.round) for r in runs(workflow, "test")] == [(0, 1), (1, 1), (1, 2), (2, 1)]
    assert [r.round for r in runs(workflow, "review")] == [1, 2]
    assert [r.status for r in runs(workflow, "ship")] == ["skipped", "completed"]

    # The three first-round implementers ran at the same time (from the event log).
    spans = []
    for run in implement:
        if run.round == 1:
            times = AgentEvent.objects.filter(agent=run.agent, kind="status").order_by("seq")
            started = times.filter(data__to="running").first().created_at
            ended = times.filter(data__to="completed").last().created_at
            spans.append((started, ended))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans

    # The second round carried on from the first round's work, and everything reached the PR branch.
    second = implement[2]
    assert "handles empty input" in git("show", f"{second.agent.workspace.branch}:renderer.py", cwd=repo)
    ship = runs(workflow, "ship")[1].agent
    files = git("ls-tree", "--name-only", ship.workspace.branch, cwd=repo).split()
    assert {"SPEC.md", "parser.py", "renderer.py", "cli.py"} <= set(files)
    assert "handles empty input" in git("show", f"{ship.workspace.branch}:renderer.py", cwd=repo)
    pr = PullRequest.objects.get()
    assert (pr.forge, pr.head_branch, pr.base_branch, pr.title) == (
        "local",
        ship.workspace.branch,
        "main",
        "A tiny tool",
    )

    agents = Agent.objects.filter(step_run__workflow=workflow)
    assert agents.count() == workflow.step_runs.exclude(status="skipped").count() == 13
    billed = UsageRecord.objects.filter(agent__in=agents).aggregate(total=Sum("cost_usd"))["total"]
    assert workflow_cost(workflow=workflow) == sum(a.cost_usd for a in agents) == billed > 0
    assert all(a.budget.limit_usd <= Decimal("20") for a in agents)

    out = StringIO()
    call_command("agents", "--json", stdout=out)  # every step agent is an ordinary agent too
    assert out.getvalue().count('"status": "completed"') == 13


SMALL = """
name: small
steps:
  - id: first
    role: planner
    prompt: "List parts for: {{ input }}"
    output_schema:
      type: object
      properties: {parts: {type: array, items: {type: string}}}
      required: [parts]
  - id: build
    role: implementer
    needs: [first]
    for_each: steps.first.output.parts
    prompt: "Build part {{ item }} of {{ input }}"
  - id: finish
    role: reviewer
    needs: [build]
    prompt: "Check every part of {{ input }}"
"""


@pytest.fixture
def small(seeded):
    WorkflowTemplate.objects.create(name="small", yaml=SMALL)


def script_small(fake, *, slow: str = "sleep 0.2", parts=("alpha", "beta")) -> None:
    fake.script(
        "List parts for", [Turn([tool_use("SubmitResult", {"parts": list(parts)})]), Turn([text("Listed.")])]
    )
    for part in parts:
        fake.script(
            f"Build part {part}",
            [Turn([tool_use("Bash", {"command": slow})]), Turn([text(f"Built {part}.")])],
        )
    fake.script("Check every part", [Turn([text("All good.")])])


def test_a_worker_killed_mid_workflow_loses_nothing_and_runs_no_step_twice(
    workers, fake_anthropic, small, repo
):
    script_small(fake_anthropic, slow="sleep 4")
    (cluster,) = workers.start(1, workers_per_cluster=2, env={"ORCHESTRATOR_LEASE_SECONDS": "3"})
    workflow = workflow_start(template="small", input="the kit", repo_path=str(repo))
    wait_for(
        lambda: AgentEvent.objects.filter(kind="tool_started", data__name="Bash").count() == 2, timeout=60
    )
    os.killpg(cluster.pid, signal.SIGKILL)  # the whole cluster, mid-Bash, mid-workflow
    cluster.wait()
    workers.start(1, workers_per_cluster=2, env={"ORCHESTRATOR_LEASE_SECONDS": "3"})
    workflow = wait_workflow(workflow)
    assert workflow.status == WorkflowStatus.COMPLETED, workflow.status_reason
    assert [(r.step, r.item_index, r.round) for r in workflow.step_runs.order_by("step", "item_index")] == [
        ("build", 0, 1), ("build", 1, 1), ("finish", -1, 1), ("first", -1, 1),
    ]  # fmt: skip
    # No turn of any step agent was asked of the model twice.
    seen = [
        (r.body["messages"][0]["content"][0]["text"][:40], r.turn_index)
        for r in fake_anthropic.requests
        if r.status == 200
    ]
    assert len(seen) == len(set(seen)), seen
    killed = [r.agent for r in runs(workflow, "build")]
    assert all(a.attempts >= 1 for a in killed)


def test_a_failed_step_retried_resumes_the_workflow(workers, fake_anthropic, small, repo):
    script_small(fake_anthropic)
    fake_anthropic.script("Build part beta", [Turn([], faults=[Fault(400, message="bad request for beta")])])
    workers.start(1, workers_per_cluster=2)
    workflow = workflow_start(template="small", input="the kit", repo_path=str(repo))
    workflow = wait_workflow(workflow)
    assert workflow.status == WorkflowStatus.FAILED and "build[1]" in workflow.status_reason
    failed = workflow.step_runs.get(step="build", item_index=1)
    done_before = set(workflow.step_runs.filter(status="completed").values_list("pk", flat=True))
    assert runs(workflow, "finish") == []  # nothing after the failed step ran

    script_small(fake_anthropic)  # the API behaves again
    workflow_step_retry(run=failed)
    workflow = wait_workflow(workflow)
    assert workflow.status == WorkflowStatus.COMPLETED, workflow.status_reason
    failed.refresh_from_db()
    assert failed.status == "completed" and failed.round == 1  # the same run, resumed
    assert done_before <= set(workflow.step_runs.filter(status="completed").values_list("pk", flat=True))
    assert workflow.step_runs.count() == 4


def test_a_cancelled_workflow_leaves_no_running_agents(workers, fake_anthropic, small, repo):
    script_small(fake_anthropic, slow="sleep 60")
    workers.start(1, workers_per_cluster=2)
    workflow = workflow_start(template="small", input="the kit", repo_path=str(repo))
    wait_for(
        lambda: AgentEvent.objects.filter(kind="tool_started", data__name="Bash").count() == 2, timeout=60
    )
    cancelled = workflow_cancel(workflow=workflow)
    assert len(cancelled) == 2
    wait_for(
        lambda: (
            not Agent.objects.exclude(status__in=FINISHED_STATUSES).exists()
            and not Agent.objects.filter(worker__gt="", status=AgentStatus.RUNNING).exists()
        ),
        timeout=10,
    )
    workflow.refresh_from_db()
    assert workflow.status == WorkflowStatus.CANCELLED
    assert not workflow.step_runs.filter(status="running").exists()


def test_run_workflow_command_waits_and_reports(workers, fake_anthropic, small, repo):
    script_small(fake_anthropic)
    workers.start(1, workers_per_cluster=2)
    out = StringIO()
    call_command(
        "run_workflow",
        "small",
        "--input",
        "the kit",
        "--repo",
        str(repo),
        "--wait",
        "--timeout",
        "60",
        stdout=out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0].isdigit()
    assert "status: completed" in lines and any(line.startswith("cost: $") for line in lines)
    assert any(line.startswith("build[1] round 1: completed (agent ") for line in lines)


def test_structured_output_is_validated_and_a_bad_one_returned_to_the_model(agents_env, small, repo):
    from tests.conftest import run_here

    fake = agents_env
    fake.script(
        "List parts for",
        [
            Turn([tool_use("SubmitResult", {"parts": "not a list"})]),
            Turn([text("Done, I think.")]),  # ends without a valid result: nudged
            Turn([tool_use("SubmitResult", {"parts": ["alpha"]})]),
            Turn([text("Listed.")]),
        ],
    )
    workflow = workflow_start(template="small", input="the kit", repo_path=str(repo))
    first = workflow.step_runs.get(step="first")
    run_here(first.agent)
    first.refresh_from_db()
    assert first.output == {"parts": ["alpha"]} and first.agent.status == AgentStatus.COMPLETED
    requests = fake.requests_for("List parts for")
    results = [b for b in requests[1].body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    assert results[0]["is_error"] and "does not match the schema" in str(results[0]["content"])
    assert "without calling SubmitResult" in str(requests[2].body["messages"][-1]["content"])


def test_bad_starts_are_clear_errors(seeded, small, repo, settings):
    from agents.errors import OrchestratorError

    settings.ANTHROPIC_API_KEY = "test-key"
    with pytest.raises(OrchestratorError, match="Unknown workflow template 'nope'"):
        workflow_start(template="nope", input="x", repo_path=str(repo))
    with pytest.raises(OrchestratorError, match="input is empty"):
        workflow_start(template="small", input="  ", repo_path=str(repo))
    with pytest.raises(OrchestratorError, match=r"Not a git repository|Repository not found"):
        workflow_start(template="small", input="x", repo_path="/nonexistent")
    assert not Workflow.objects.exists() and not Agent.objects.exists()
