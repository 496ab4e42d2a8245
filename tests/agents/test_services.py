"""The service layer: the status table, control, mail, batches and the listing CLI."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.errors import InvalidTransition, OrchestratorError
from agents.models import Agent, AgentStatus, Message
from agents.services import (
    TRANSITIONS,
    agent_cancel,
    agent_retry,
    agent_spawn,
    agent_transition,
    agents_spawn_batch,
    message_send,
)

S = AgentStatus


@pytest.fixture
def spawn(seeded, repo, worktrees_dir):
    def make(**fields) -> Agent:
        fields.setdefault("role", "implementer")
        fields.setdefault("task", "Do a thing")
        if "parent" not in fields:
            fields.setdefault("repo_path", str(repo))
        return agent_spawn(**fields)

    return make


def test_every_status_has_a_row_in_the_transition_table():
    assert set(TRANSITIONS) == set(S.values)
    assert TRANSITIONS[S.COMPLETED] == set()


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        (S.PENDING, S.RUNNING, True),
        (S.RUNNING, S.WAITING, True),
        (S.WAITING, S.PENDING, True),
        (S.FAILED, S.PENDING, True),
        (S.COMPLETED, S.PENDING, False),
        (S.COMPLETED, S.CANCELLED, False),
        (S.PENDING, S.WAITING, False),
        (S.WAITING, S.COMPLETED, False),
        (S.CANCELLED, S.RUNNING, False),
    ],
)
def test_transitions_follow_the_table(spawn, start, target, allowed):
    agent = spawn()
    Agent.objects.filter(pk=agent.pk).update(status=start, lease_token="00000000-0000-0000-0000-000000000001")
    if allowed:
        agent_transition(agent_id=agent.pk, to=target)
        agent.refresh_from_db()
        assert agent.status == target
    else:
        with pytest.raises(
            InvalidTransition, match=f"Agent {agent.pk} is {start}; it cannot become {target}"
        ):
            agent_transition(agent_id=agent.pk, to=target)
        agent.refresh_from_db()
        assert agent.status == start


def test_a_fenced_transition_needs_the_current_lease(spawn):
    agent = spawn()
    Agent.objects.filter(pk=agent.pk).update(
        status=S.RUNNING, lease_token="00000000-0000-0000-0000-000000000001"
    )
    with pytest.raises(InvalidTransition, match="held by another worker"):
        agent_transition(
            agent_id=agent.pk, to=S.COMPLETED, lease_token="00000000-0000-0000-0000-000000000002"
        )
    agent_transition(agent_id=agent.pk, to=S.COMPLETED, lease_token="00000000-0000-0000-0000-000000000001")
    agent.refresh_from_db()
    assert agent.status == S.COMPLETED and agent.lease_token is None and agent.finished_at


def test_cancel_subtree_cancels_unfinished_descendants_and_reports_to_parents(spawn):
    root = spawn(task="Root")
    child = spawn(parent=root, role="tester", task="Child")
    grandchild = spawn(parent=child, task="Grandchild")
    done = spawn(parent=root, task="Already done")
    Agent.objects.filter(pk=done.pk).update(status=S.COMPLETED)

    cancelled = agent_cancel(agent=root, subtree=True)

    assert sorted(cancelled) == sorted([root.pk, child.pk, grandchild.pk])
    statuses = dict(Agent.objects.values_list("pk", "status"))
    assert statuses == {
        root.pk: S.CANCELLED,
        child.pk: S.CANCELLED,
        grandchild.pk: S.CANCELLED,
        done.pk: S.COMPLETED,
    }
    assert Message.objects.filter(recipient=child, sender=grandchild).exists()


def test_retry_queues_a_failed_agent_and_refuses_a_completed_one(spawn):
    agent = spawn()
    Agent.objects.filter(pk=agent.pk).update(status=S.FAILED, attempts=3)
    agent_retry(agent=agent)
    agent.refresh_from_db()
    assert agent.status == S.PENDING and agent.attempts == 0
    Agent.objects.filter(pk=agent.pk).update(status=S.COMPLETED)
    with pytest.raises(InvalidTransition):
        agent_retry(agent=agent)


def test_a_message_wakes_a_waiting_agent_but_a_child_result_waits_for_all_children(spawn):
    parent = spawn(role="planner")
    first = spawn(parent=parent)
    spawn(parent=parent)
    Agent.objects.filter(pk=parent.pk).update(status=S.WAITING)

    message_send(recipient=parent, body="Result of one child", sender=first, kind="child_result")
    parent.refresh_from_db()
    assert parent.status == S.WAITING  # another child is still working

    message_send(recipient=parent, body="Please hurry")
    parent.refresh_from_db()
    assert parent.status == S.PENDING


def test_messages_to_finished_agents_and_empty_messages_are_refused(spawn):
    agent = spawn()
    with pytest.raises(OrchestratorError, match="The message is empty"):
        message_send(recipient=agent, body="  ")
    Agent.objects.filter(pk=agent.pk).update(status=S.COMPLETED)
    with pytest.raises(OrchestratorError, match="is completed; it will not read messages"):
        message_send(recipient=agent, body="hello?")


def test_child_starts_on_its_own_branch_from_the_parent_branch(spawn):
    parent = spawn(task="Parent work")
    child = spawn(parent=parent, task="Child work")
    assert child.project == parent.project
    assert child.workspace.branch == f"agents/{child.pk}-child-work"
    assert child.workspace.base_commit == parent.workspace.base_commit
    assert child.workspace.path != parent.workspace.path


def test_branch_names_are_safe_whatever_the_task_says(spawn):
    agent = spawn(task="Fix `rm -rf /`; $(reboot) && ../../etc ~^:?*[ HEAD@{0}")
    assert agent.workspace.branch == f"agents/{agent.pk}-fix-rm-rf-reboot-etc-head-0"


def test_batch_spawn_creates_every_entry(seeded, repo, worktrees_dir):
    agents = agents_spawn_batch(
        entries=[
            {"role": "implementer", "task": "One", "repo": str(repo)},
            {"role": "tester", "task": "Two", "repo": str(repo), "model": "claude-haiku-4-5"},
        ]
    ).created
    assert [(a.role.name, a.model) for a in agents] == [
        ("implementer", "claude-sonnet-5-5"),
        ("tester", "claude-haiku-4-5"),
    ]


def test_spawn_agents_command_prints_the_new_ids(seeded, repo, worktrees_dir, tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        f"- role: implementer\n  task: One\n  repo: {repo}\n- role: reviewer\n  task: Two\n  repo: {repo}\n"
    )
    out = StringIO()
    call_command("spawn_agents", str(batch), stdout=out)
    assert out.getvalue().split() == [
        str(pk) for pk in Agent.objects.order_by("pk").values_list("pk", flat=True)
    ]


def test_agents_json_lists_the_fields_scripts_rely_on(spawn):
    root = spawn(task="Root")
    child = spawn(parent=root, role="tester", task="Child")
    out = StringIO()
    call_command("agents", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert [row["id"] for row in rows] == [root.pk, child.pk]
    required = {"id", "parent", "role", "status", "input_tokens", "output_tokens", "cost_usd", "branch"}
    assert required <= set(rows[1])
    assert rows[1]["parent"] == root.pk and rows[1]["role"] == "tester" and rows[1]["status"] == "pending"
    assert rows[1]["cost_usd"] == "0.000000" and rows[1]["branch"] == child.workspace.branch


def test_agents_tree_indents_children(spawn):
    root = spawn(task="Root")
    spawn(parent=root, role="tester", task="Child")
    out = StringIO()
    call_command("agents", "--tree", stdout=out)
    lines = out.getvalue().splitlines()
    assert "implementer" in lines[1] and "  tester" in lines[2]


def test_control_commands_pause_resume_cancel_and_retry(spawn):
    root = spawn(task="Root")
    child = spawn(parent=root, task="Child")
    out = StringIO()
    call_command("pause_agent", str(root.pk), stdout=out)
    assert Agent.objects.get(pk=root.pk).status == S.PAUSED
    call_command("resume_agent", str(root.pk), stdout=out)
    root.refresh_from_db()
    assert root.status == S.WAITING  # its child is still working
    call_command("cancel_agent", str(root.pk), "--subtree", stdout=out)
    assert set(Agent.objects.values_list("status", flat=True)) == {S.CANCELLED}
    call_command("retry_agent", str(child.pk), stdout=out)
    assert Agent.objects.get(pk=child.pk).status == S.PENDING
    assert out.getvalue().splitlines() == [
        f"paused: {root.pk}",
        f"resumed: {root.pk}",
        f"cancelled: {root.pk} {child.pk}",
        f"queued: {child.pk}",
    ]
    history = list(root.events.values_list("seq", "kind", "data__to"))
    assert history == [
        (1, "status", "pending"),
        (2, "spawned", None),
        (3, "status", "paused"),
        (4, "status", "waiting"),
        (5, "status", "cancelled"),
        (6, "message", None),  # the child's result, cancelled with it
    ]


def test_control_commands_refuse_unknown_agents_and_bad_states(spawn):
    agent = spawn()
    with pytest.raises(CommandError, match="Agent 999 does not exist"):
        call_command("pause_agent", "999")
    with pytest.raises(CommandError, match=f"Agent {agent.pk} is pending; it cannot become pending"):
        call_command("resume_agent", str(agent.pk))
