"""Permission modes, project rules and the approval inbox: people in the loop, no worker held."""

from __future__ import annotations

from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.approvals import approval_decide, approval_make_rule, approvals_escalate, rule_create
from agents.models import (
    Agent,
    AgentEvent,
    AgentStatus,
    ApprovalRequest,
    EntryKind,
    PermissionRule,
    WaitingFor,
)
from agents.permissions import decide
from agents.services import agent_spawn, project_for_repo
from orchestrator.asgi import application
from tests.conftest import run_here, wait_for
from tests.fakes.anthropic_server import Turn, text, tool_use

S = AgentStatus


def write_script(fake, task: str, content: str = "draft\n") -> None:
    fake.script(
        task,
        [
            Turn([tool_use("Write", {"file_path": "notes.md", "content": content})]),
            Turn([text("Wrote the notes.")]),
        ],
    )


def tool_results(request) -> list[dict]:
    return [b for b in request.body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def test_ask_mode_waits_without_a_worker_shows_in_the_inbox_live_and_approval_resumes(
    workers, fake_anthropic, repo, admin_user
):
    write_script(fake_anthropic, "Careful notes")
    fake_anthropic.script("Quick other job", [Turn([text("Done quickly.")])])
    workers.start(1, workers_per_cluster=1)  # one worker: the waiting agent must not hold it
    project_for_repo(repo_path=str(repo))  # the inbox listens to the projects that exist when it opens
    client = Client()
    client.force_login(admin_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def scenario():
        ws = WebsocketCommunicator(
            application,
            "/ws/approvals/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
        )
        assert (await ws.connect())[0]
        agent = await database_sync_to_async(agent_spawn)(
            role="implementer", task="Careful notes", repo_path=str(repo), permission_mode="ask"
        )
        html = ""
        while 'class="card approval' not in html:
            html = await ws.receive_from(timeout=20)
        await ws.disconnect()
        return agent, html

    agent, html = async_to_sync(scenario)()
    approval = ApprovalRequest.objects.get(agent=agent)
    assert f'id="approval-{approval.pk}"' in html and "notes.md" in html and "ask mode" in html
    agent.refresh_from_db()
    assert (agent.status, agent.waiting_for) == (S.WAITING, WaitingFor.APPROVAL)
    assert agent.lease_token is None  # no worker holds it...
    other = agent_spawn(role="implementer", task="Quick other job", repo_path=str(repo))
    wait_for(
        lambda: Agent.objects.get(pk=other.pk).status == S.COMPLETED, timeout=30
    )  # ...the one worker is free
    assert not (Path(agent.workspace.path) / "notes.md").exists()

    approval_decide(request=approval, approve=True, by=admin_user)
    wait_for(lambda: Agent.objects.get(pk=agent.pk).status == S.COMPLETED, timeout=30)
    assert (Path(agent.workspace.path) / "notes.md").read_text() == "draft\n"
    call = agent.transcript.get(kind=EntryKind.TOOL_CALL)
    assert (
        call.payload["decision"]["action"] == "allow"
        and "approved by admin" in call.payload["decision"]["why"]
    )
    assert AgentEvent.objects.filter(agent=agent, kind="approval_decided", by_user=admin_user).exists()


def test_a_denial_reason_reaches_the_model(agents_env, repo, admin_user):
    write_script(agents_env, "Denied notes")
    agent = run_here(
        agent_spawn(role="implementer", task="Denied notes", repo_path=str(repo), permission_mode="ask")
    )
    assert agent.waiting_for == WaitingFor.APPROVAL
    approval_decide(
        request=agent.approvals.get(), approve=False, by=admin_user, note="Put notes under docs/."
    )
    agent = run_here(agent)
    assert agent.status == S.COMPLETED
    (result,) = tool_results(agents_env.requests_for("Denied notes")[-1])
    assert result["is_error"] and result["content"] == "Denied by admin: Put notes under docs/."
    assert not (Path(agent.workspace.path) / "notes.md").exists()


def test_an_edited_input_is_what_runs(agents_env, repo, admin_user):
    write_script(agents_env, "Edited notes", content="draft\n")
    agent = run_here(
        agent_spawn(role="implementer", task="Edited notes", repo_path=str(repo), permission_mode="ask")
    )
    approval = agent.approvals.get()
    approval_decide(
        request=approval,
        approve=True,
        by=admin_user,
        edited_input={"file_path": "notes.md", "content": "final\n"},
    )
    agent = run_here(agent)
    assert (Path(agent.workspace.path) / "notes.md").read_text() == "final\n"
    call = agent.transcript.get(kind=EntryKind.TOOL_CALL)
    assert call.payload["input"]["content"] == "final\n" and call.payload["decision"]["edited"] is True


def test_rules_decide_as_written_and_make_this_a_rule_governs_the_next_call(agents_env, repo, admin_user):
    agent = agent_spawn(role="implementer", task="Rules", repo_path=str(repo))
    project = agent.project
    rule_create(project_id=project.pk, action="allow", pattern="Bash(git status*)")
    rule_create(project_id=project.pk, action="deny", pattern="Bash(rm -rf*)")
    rule_create(project_id=project.pk, action="ask", pattern="Write(*.env)")
    rules = list(PermissionRule.objects.filter(project=project))

    def check(mode, tool, tool_input):
        return decide(mode=mode, rules=rules, tool=tool, tool_input=tool_input)

    assert check("ask", "Bash", {"command": "git status --short"}).why == "rule allow Bash(git status*)"
    assert check("auto", "Bash", {"command": "rm -rf /"}).action == "deny"
    assert check("auto", "Write", {"file_path": "prod.env", "content": ""}).action == "ask"
    assert check("auto", "Write", {"file_path": "notes.md", "content": ""}).action == "allow"
    assert check("accept-edits", "Edit", {"file_path": "a.py"}).action == "allow"
    assert check("accept-edits", "Bash", {"command": "make"}).action == "ask"
    assert check("plan", "Write", {"file_path": "a.py"}).action == "deny"
    assert check("plan", "Read", {"file_path": "a.py"}).action == "allow"
    assert check("ask", "Read", {"file_path": "a.py"}).action == "allow"
    with pytest.raises(Exception, match="is not `Tool` or `Tool"):
        rule_create(project_id=project.pk, action="allow", pattern="Bash(")

    # A denied call never runs; the model hears which rule said no.
    agents_env.script(
        "Clean everything",
        [Turn([tool_use("Bash", {"command": "rm -rf important"})]), Turn([text("Could not.")])],
    )
    (Path(repo) / "important").mkdir()
    cleaner = run_here(agent_spawn(role="implementer", task="Clean everything", repo_path=str(repo)))
    (result,) = tool_results(agents_env.requests_for("Clean everything")[-1])
    assert "Not allowed (rule deny Bash(rm -rf*))" in result["content"]
    assert cleaner.status == S.COMPLETED

    # "Make this a rule": the next identical call (another agent) runs without asking.
    for task in ("First asker", "Second asker"):
        agents_env.script(
            task, [Turn([tool_use("Write", {"file_path": "same.md", "content": "x"})]), Turn([text("ok")])]
        )
    first = run_here(
        agent_spawn(role="implementer", task="First asker", repo_path=str(repo), permission_mode="ask")
    )
    rule = approval_make_rule(request=first.approvals.get(), by=admin_user)
    assert (rule.action, rule.pattern) == ("allow", "Write(same.md)")
    assert run_here(first).status == S.COMPLETED
    second = run_here(
        agent_spawn(role="implementer", task="Second asker", repo_path=str(repo), permission_mode="ask")
    )
    assert second.status == S.COMPLETED and not second.approvals.exists()
    assert (
        second.transcript.get(kind=EntryKind.TOOL_CALL).payload["decision"]["why"]
        == "rule allow Write(same.md)"
    )


def test_a_child_is_never_looser_than_its_parent(seeded, repo, worktrees_dir, settings):
    settings.ANTHROPIC_API_KEY = "test-key"
    parent = agent_spawn(role="planner", task="Lead", repo_path=str(repo), permission_mode="plan")
    child = agent_spawn(role="implementer", task="Part", parent=parent, permission_mode="auto")
    assert child.permission_mode == "plan"
    with pytest.raises(Exception, match="Unknown permission mode 'yolo'"):
        agent_spawn(role="implementer", task="x", repo_path=str(repo), permission_mode="yolo")


def test_old_requests_are_escalated_once_and_shown(agents_env, repo, admin_client, settings):
    write_script(agents_env, "Slow decision")
    agent = run_here(
        agent_spawn(role="implementer", task="Slow decision", repo_path=str(repo), permission_mode="ask")
    )
    approval = agent.approvals.get()
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        created_at=timezone.now() - timezone.timedelta(hours=1)
    )
    settings.ORCHESTRATOR_APPROVAL_ESCALATE_SECONDS = 600
    assert approvals_escalate() == [approval.pk]
    assert approvals_escalate() == []
    assert AgentEvent.objects.filter(agent=agent, kind="approval_escalated").count() == 1
    page = admin_client.get(reverse("dashboard:approvals")).content.decode()
    assert f'id="approval-{approval.pk}"' in page and ">escalated<" in page


def test_the_inbox_page_decides_and_keeps_outsiders_and_viewers_out(
    agents_env, repo, client, django_user_model
):
    from teams.models import Membership, Team, TeamRole

    write_script(agents_env, "Inbox notes")
    agent = run_here(
        agent_spawn(role="implementer", task="Inbox notes", repo_path=str(repo), permission_mode="ask")
    )
    approval = agent.approvals.get()
    team = agent.project.team
    viewer = django_user_model.objects.create_user("viewer", password="pw")
    member = django_user_model.objects.create_user("member", password="pw")
    outsider = django_user_model.objects.create_user("outsider", password="pw")
    Membership.objects.create(team=team, user=viewer, role=TeamRole.VIEWER)
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    Membership.objects.create(team=Team.objects.create(name="other"), user=outsider, role=TeamRole.OWNER)
    url = reverse("dashboard:approval_action", args=[approval.pk, "approve"])

    client.force_login(outsider)
    assert f"approval-{approval.pk}" not in client.get(reverse("dashboard:approvals")).content.decode()
    assert client.post(url).status_code == 404
    client.force_login(viewer)
    page = client.get(reverse("dashboard:approvals")).content.decode()
    assert f"approval-{approval.pk}" in page and 'data-action="approve"' not in page
    assert client.post(url).status_code == 403
    client.force_login(member)
    bad = client.post(
        reverse("dashboard:approval_action", args=[approval.pk, "edit"]), {"input": "{not json"}, follow=True
    )
    assert "not valid JSON" in bad.content.decode()
    assert client.post(url).status_code == 302
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by == member
    again = client.post(url, follow=True).content.decode()
    assert "was already approved" in again
