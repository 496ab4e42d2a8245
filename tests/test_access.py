"""One sweep over every page, API endpoint, websocket and command with three people: an owner and a
viewer of the team that owns the work, and an outsider. The outsider gets 404/403 and sees nothing;
the viewer reads but cannot act; the owner does both."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from agents.approvals import approval_request
from agents.merges import merge_request
from agents.models import Agent, AgentStatus, Merge
from agents.services import agent_spawn, project_for_repo
from orchestrator.asgi import application
from teams.models import Membership, Team, TeamRole
from teams.services import api_token_create
from workflows.models import StepRun, Workflow, WorkflowTemplate

pytestmark = pytest.mark.django_db(transaction=True)

TWO = """
name: two
steps:
  - id: only
    role: planner
    prompt: "Plan {{ input }}"
"""


@pytest.fixture
def world(seeded, repo, worktrees_dir, settings, django_user_model):
    from workflows.services import workflow_start

    settings.ANTHROPIC_API_KEY = "test-key"
    team, other = Team.objects.create(name="red"), Team.objects.create(name="blue")
    people = {}
    for name, t, role in (
        ("owner", team, TeamRole.OWNER),
        ("viewer", team, TeamRole.VIEWER),
        ("outsider", other, TeamRole.OWNER),
    ):
        people[name] = django_user_model.objects.create_user(name, password="pw")
        Membership.objects.create(team=team if t is team else other, user=people[name], role=role)
    project = project_for_repo(repo_path=str(repo), team=team)
    agent = agent_spawn(role="implementer", task="Owned work", repo_path=str(repo))
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.COMPLETED)
    child = agent_spawn(role="implementer", task="Pending work", repo_path=str(repo))
    merge = merge_request(agent=Agent.objects.get(pk=agent.pk))
    Merge.objects.filter(pk=merge.pk).update(status="conflict", conflicts=["README.md"])
    approval = approval_request(
        agent_id=child.pk, tool_use={"id": "t1", "name": "Write", "input": {"file_path": "a"}}, reason="ask"
    )
    WorkflowTemplate.objects.create(name="two", yaml=TWO)
    workflow = workflow_start(template="two", input="x", repo_path=str(repo))
    ids = {
        "agent": child.pk,
        "project": project.pk,
        "merge": merge.pk,
        "approval": approval.pk,
        "workflow": workflow.pk,
    }
    tokens = {name: api_token_create(user=user, name="t")[1] for name, user in people.items()}
    return people, ids, tokens


PAGES = [
    "/",
    "/agents/{agent}/",
    "/projects/{project}/",
    "/workflows/",
    "/workflows/{workflow}/",
    "/approvals/",
]
PRIVATE_PAGES = ["/agents/{agent}/", "/projects/{project}/", "/workflows/{workflow}/"]
ACTIONS = [
    ("/agents/{agent}/control/pause/", {}),
    ("/agents/{agent}/message/", {"body": "hi"}),
    ("/agents/{agent}/budget/", {"usd": "3"}),
    ("/merges/{merge}/abandon/", {}),
    ("/approvals/{approval}/deny/", {"note": "no"}),
    ("/workflows/{workflow}/cancel/", {}),
]
API_READS = [
    "/api/agents/{agent}",
    "/api/agents/{agent}/events",
    "/api/agents/{agent}/transcript",
    "/api/agents/{agent}/cost",
    "/api/workflows/{workflow}",
]
API_ACTIONS = [
    ("/api/agents/{agent}/pause", {}),
    ("/api/agents/{agent}/messages", {"body": "hi"}),
    ("/api/approvals/{approval}/deny", {"note": "no"}),
]
SOCKETS = ["/ws/agents/{agent}/", "/ws/workflows/{workflow}/"]


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def sockets_open(user, paths: list[str]) -> list[bool]:
    client = browser(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def scenario():
        results = []
        for path in paths:
            ws = WebsocketCommunicator(
                application,
                path,
                headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
            )
            results.append((await ws.connect())[0])
            await ws.disconnect()
        return results

    return async_to_sync(scenario)()


def test_the_outsider_gets_nothing_anywhere(world):
    people, ids, tokens = world
    client = browser(people["outsider"])
    for page in PRIVATE_PAGES:
        assert client.get(page.format(**ids)).status_code == 404, page
    listed = "".join(
        client.get(page.format(**ids)).content.decode() for page in ["/", "/workflows/", "/approvals/"]
    )
    assert (
        "Owned work" not in listed
        and "Pending work" not in listed
        and f"approval-{ids['approval']}" not in listed
    )
    for path, data in ACTIONS:
        assert client.post(path.format(**ids), data).status_code == 404, path
    api = {"HTTP_AUTHORIZATION": f"Bearer {tokens['outsider']}"}
    for path in API_READS:
        assert client.get(path.format(**ids), **api).status_code == 404, path
    for path, body in API_ACTIONS:
        assert (
            client.post(path.format(**ids), json.dumps(body), "application/json", **api).status_code == 404
        ), path
    for path in ["/api/agents", "/api/approvals"]:
        assert client.get(path, **api).json() == [], path
    assert sockets_open(people["outsider"], [p.format(**ids) for p in SOCKETS]) == [False, False]
    for command in (["pause_agent"], ["cancel_agent"], ["tail_agent", "--no-follow"]):
        with pytest.raises(CommandError, match=f"Agent {ids['agent']} does not exist"):
            call_command(*command, str(ids["agent"]), "--as-user", "outsider", stdout=StringIO())
    out = StringIO()
    call_command("agents", "--json", "--as-user", "outsider", stdout=out)
    assert json.loads(out.getvalue()) == []
    assert Agent.objects.get(pk=ids["agent"]).status == AgentStatus.PENDING


def test_the_viewer_reads_everything_and_changes_nothing(world):
    people, ids, tokens = world
    client = browser(people["viewer"])
    for page in PAGES:
        assert client.get(page.format(**ids)).status_code == 200, page
    for path, data in ACTIONS:
        assert client.post(path.format(**ids), data).status_code == 403, path
    api = {"HTTP_AUTHORIZATION": f"Bearer {tokens['viewer']}"}
    for path in API_READS:
        assert client.get(path.format(**ids), **api).status_code == 200, path
    for path, body in API_ACTIONS:
        assert (
            client.post(path.format(**ids), json.dumps(body), "application/json", **api).status_code == 403
        ), path
    assert sockets_open(people["viewer"], [p.format(**ids) for p in SOCKETS]) == [True, True]
    with pytest.raises(CommandError, match="may look at agent"):
        call_command("pause_agent", str(ids["agent"]), "--as-user", "viewer", stdout=StringIO())
    assert Agent.objects.get(pk=ids["agent"]).status == AgentStatus.PENDING
    assert Workflow.objects.get(pk=ids["workflow"]).status == "running"


def test_the_owner_reads_and_acts(world):
    people, ids, tokens = world
    client = browser(people["owner"])
    for page in PAGES:
        assert client.get(page.format(**ids)).status_code == 200, page
    api = {"HTTP_AUTHORIZATION": f"Bearer {tokens['owner']}"}
    for path in API_READS:
        assert client.get(path.format(**ids), **api).status_code == 200, path
    assert client.post(f"/api/agents/{ids['agent']}/pause", **api).json()["status"] == AgentStatus.PAUSED
    call_command("resume_agent", str(ids["agent"]), "--as-user", "owner", stdout=StringIO())
    assert Agent.objects.get(pk=ids["agent"]).status == AgentStatus.PENDING
    assert client.post(f"/workflows/{ids['workflow']}/cancel/").status_code == 302
    assert not StepRun.objects.filter(status="running").exists()
    assert sockets_open(people["owner"], [p.format(**ids) for p in SOCKETS]) == [True, True]


def test_a_person_spawning_from_the_command_line_gets_a_project_of_their_team(world, tmp_path):
    from tests.conftest import git

    people = world[0]
    other = tmp_path / "blue-repo"
    other.mkdir()
    git("init", "-q", "-b", "main", cwd=other)
    (other / "README.md").write_text("blue\n")
    git("add", ".", cwd=other)
    git("-c", "user.name=a", "-c", "user.email=b", "commit", "-q", "-m", "i", cwd=other)
    out = StringIO()
    call_command(
        "spawn_agent",
        "--role",
        "tester",
        "--task",
        "Blue job",
        "--repo",
        str(other),
        "--as-user",
        "outsider",
        stdout=out,
    )
    agent = Agent.objects.get(pk=int(out.getvalue().split()[0]))
    assert agent.project.team.name == "blue" and agent.spawned_by == people["outsider"]
    with pytest.raises(CommandError, match="may not spawn agents in"):
        call_command(
            "spawn_agent",
            "--role",
            "tester",
            "--task",
            "x",
            "--repo",
            str(other),
            "--as-user",
            "viewer",
            stdout=StringIO(),
        )
