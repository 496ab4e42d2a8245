"""The REST API: token auth, spawning, event paging, control, errors in one shape, scoping, rates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.test import Client

from agents.events import Kind, event_record
from agents.models import Agent, AgentStatus, Message, Project, Role
from teams.models import Membership, Team, TeamRole
from teams.services import api_token_create, api_token_revoke
from tests.conftest import ROOT

S = AgentStatus


@pytest.fixture
def world(seeded, repo, worktrees_dir, settings, django_user_model):
    """A team with a member (token) and a viewer (token), and an outsider (token) in another team."""
    settings.ANTHROPIC_API_KEY = "test-key"
    team, other = Team.objects.create(name="red"), Team.objects.create(name="blue")
    users, tokens = {}, {}
    for name, t, role in (
        ("member", team, TeamRole.MEMBER),
        ("viewer", team, TeamRole.VIEWER),
        ("outsider", other, TeamRole.OWNER),
    ):
        users[name] = django_user_model.objects.create_user(name, password="pw")
        Membership.objects.create(team=t, user=users[name], role=role)
        tokens[name] = api_token_create(user=users[name], name=f"{name}'s script")[1]
    from agents.services import project_for_repo

    project = project_for_repo(repo_path=str(repo), team=team)
    return {"users": users, "tokens": tokens, "project": project, "repo": str(repo)}


def call(method: str, path: str, token: str | None = None, body=None, raw: str | None = None):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs = {"content_type": "application/json"} if data is not None else {}
    response = (
        getattr(client, method)(f"/api{path}", data=data, **kwargs, **headers)
        if data is not None
        else getattr(client, method)(f"/api{path}", **headers)
    )
    return response.status_code, (response.json() if response.content else None)


def assert_error(status_body, status: int, code: str, text: str = "") -> None:
    status_, body = status_body
    assert status_ == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and text in body["error"]["message"], body


def test_tokens_authenticate_and_revoked_tokens_are_refused(world):
    assert_error(call("get", "/agents"), 401, "unauthenticated")
    assert_error(call("get", "/agents", token="orc_not-a-token"), 401, "unauthenticated")
    assert call("get", "/agents", token=world["tokens"]["member"])[0] == 200
    token = world["users"]["member"].api_tokens.get()
    api_token_revoke(token=token)
    assert_error(call("get", "/agents", token=world["tokens"]["member"]), 401, "unauthenticated")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_spawn_page_events_control_and_message(world):
    member = world["tokens"]["member"]
    status, agent = call(
        "post",
        "/agents",
        member,
        {"role": "implementer", "task": "API work", "repo": world["repo"], "budget_usd": 2},
    )
    assert status == 201 and agent["status"] == "pending" and agent["budget_usd"] == "2.000000"
    assert Agent.objects.get(pk=agent["id"]).spawned_by == world["users"]["member"]
    for n in range(5):
        event_record(agent["id"], Kind.TEXT, {"text": f"chunk {n}"})
    status, page = call("get", f"/agents/{agent['id']}/events?after=0&limit=3", member)
    assert status == 200 and [e["seq"] for e in page["events"]] == [1, 2, 3] and page["next_after"] == 3
    status, page = call("get", f"/agents/{agent['id']}/events?after=3", member)
    assert [e["seq"] for e in page["events"]] == [4, 5, 6] and page["events"][-1]["data"] == {
        "text": "chunk 4"
    }
    assert call("get", f"/agents/{agent['id']}/events?after=6", member)[1]["events"] == []

    assert call("post", f"/agents/{agent['id']}/pause", member)[1]["status"] == S.PAUSED
    assert call("post", f"/agents/{agent['id']}/resume", member)[1]["status"] == S.PENDING
    status, message = call("post", f"/agents/{agent['id']}/messages", member, {"body": "Please add tests."})
    assert status == 201 and Message.objects.get(pk=message["id"]).sent_by_user == world["users"]["member"]
    assert call("post", f"/agents/{agent['id']}/cancel", member)[1]["status"] == S.CANCELLED
    assert call("post", f"/agents/{agent['id']}/retry", member)[1]["status"] == S.PENDING
    assert_error(
        call("post", f"/agents/{agent['id']}/resume", member), 400, "invalid", "it cannot become pending"
    )
    assert call("get", f"/agents/{agent['id']}/transcript", member) == (200, [])
    status, cost = call("get", f"/agents/{agent['id']}/cost", member)
    assert status == 200 and cost["subtree_agents"] == 1


def test_malformed_bodies_get_the_error_shape(world):
    member = world["tokens"]["member"]
    assert_error(call("post", "/agents", member, {"role": "implementer"}), 422, "validation")
    assert_error(
        call("post", "/agents", member, {"role": "implementer", "task": "x", "budget_usd": -1}),
        422,
        "validation",
    )
    assert_error(call("post", "/agents", member, raw="{not json"), 400, "bad_request", "Cannot parse")
    assert_error(
        call("post", "/agents", member, {"role": "wizard", "task": "x", "repo": world["repo"]}),
        400,
        "invalid",
        "Unknown role 'wizard'",
    )
    assert_error(call("post", "/agents/1/explode", member), 422, "validation")
    assert_error(call("get", "/agents/999999", member), 404, "not_found")
    assert not Agent.objects.exists()


def test_scoping_outsiders_see_nothing_and_viewers_cannot_act(world):
    member, viewer, outsider = (world["tokens"][k] for k in ("member", "viewer", "outsider"))
    agent = call("post", "/agents", member, {"role": "implementer", "task": "Scoped", "repo": world["repo"]})[
        1
    ]
    assert call("get", "/agents", outsider) == (200, [])
    for path in (
        f"/agents/{agent['id']}",
        f"/agents/{agent['id']}/events",
        f"/agents/{agent['id']}/transcript",
    ):
        assert_error(call("get", path, outsider), 404, "not_found")
    assert_error(call("post", f"/agents/{agent['id']}/cancel", outsider), 404, "not_found")
    assert_error(
        call("post", "/agents", outsider, {"role": "tester", "task": "Sneak", "repo": world["repo"]}),
        403,
        "forbidden",
    )
    assert_error(
        call("post", "/agents", outsider, {"role": "tester", "task": "Sneak", "parent": agent["id"]}),
        404,
        "not_found",
    )
    assert [a["id"] for a in call("get", "/agents", viewer)[1]] == [agent["id"]]
    assert_error(call("post", f"/agents/{agent['id']}/pause", viewer), 403, "forbidden")
    assert_error(call("post", f"/agents/{agent['id']}/messages", viewer, {"body": "hi"}), 403, "forbidden")
    assert Agent.objects.get(pk=agent["id"]).status == S.PENDING and Agent.objects.count() == 1


def test_spawning_is_rate_limited_per_user_and_per_team(world, settings):
    settings.ORCHESTRATOR_SPAWN_RATE_USER = 2
    member = world["tokens"]["member"]
    body = {"role": "implementer", "task": "Limited", "repo": world["repo"]}
    assert call("post", "/agents", member, body)[0] == 201
    assert call("post", "/agents", member, body)[0] == 201
    assert_error(call("post", "/agents", member, body), 429, "rate_limited", "2 spawns a minute per user")
    settings.ORCHESTRATOR_SPAWN_RATE_USER = 100
    settings.ORCHESTRATOR_SPAWN_RATE_TEAM = 3
    assert call("post", "/agents", member, body)[0] == 201
    assert_error(
        call("post", "/agents/batch", member, {"entries": [body, body]}), 429, "rate_limited", "per team"
    )
    assert Agent.objects.count() == 3


def test_batch_is_all_or_nothing_and_workflows_start(world):
    member = world["tokens"]["member"]
    good = {"role": "implementer", "task": "One", "repo": world["repo"]}
    assert_error(
        call("post", "/agents/batch", member, {"entries": [good, {**good, "role": "wizard"}]}),
        400,
        "invalid",
        "Entry 2",
    )
    assert not Agent.objects.exists()
    status, body = call("post", "/agents/batch", member, {"entries": [good, {**good, "task": "Two"}]})
    assert status == 201 and len(body["created"]) == 2

    from workflows.services import builtin_templates_sync

    builtin_templates_sync()
    status, workflow = call(
        "post", "/workflows", member, {"template": "feature", "input": "Add CSV", "repo": world["repo"]}
    )
    assert status == 201 and workflow["status"] == "running" and workflow["steps"][0]["id"] == "spec"
    assert call("get", f"/workflows/{workflow['id']}", member)[1]["id"] == workflow["id"]
    assert_error(call("get", f"/workflows/{workflow['id']}", world["tokens"]["outsider"]), 404, "not_found")


def test_approvals_are_listed_and_decided_through_the_api(world):
    from agents.approvals import approval_request

    member = world["tokens"]["member"]
    agent = call("post", "/agents", member, {"role": "implementer", "task": "Ask", "repo": world["repo"]})[1]
    request = approval_request(
        agent_id=agent["id"],
        tool_use={"id": "toolu_1", "name": "Write", "input": {"file_path": "a"}},
        reason="ask mode",
    )
    listed = call("get", "/approvals", member)[1]
    assert [a["id"] for a in listed] == [request.pk]
    assert call("get", "/approvals", world["tokens"]["outsider"])[1] == []
    assert_error(
        call("post", f"/approvals/{request.pk}/approve", world["tokens"]["viewer"], {}), 403, "forbidden"
    )
    status, decided = call("post", f"/approvals/{request.pk}/deny", member, {"note": "No."})
    assert status == 200 and decided["status"] == "denied"
    assert_error(
        call("post", f"/approvals/{request.pk}/approve", member, {}), 400, "invalid", "already denied"
    )


@pytest.mark.django_db(transaction=True)
def test_a_property_based_run_of_the_openapi_document_finds_no_server_error(
    live_server, seeded, repo, settings, django_user_model
):
    """schemathesis generates requests from /api/openapi.json and checks that none gets a 500."""
    settings.ANTHROPIC_API_KEY = "test-key"
    user = django_user_model.objects.create_user("prober", password="pw")
    team = Team.objects.create(name="probe")
    Membership.objects.create(team=team, user=user, role=TeamRole.OWNER)
    project = Project.objects.create(name="probe", repo_path=str(repo), base_branch="main", team=team)
    Agent.objects.create(project=project, role=Role.objects.get(name="implementer"), task="probe", model="m")
    _, token = api_token_create(user=user, name="schemathesis")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{live_server.url}/api/openapi.json",
            "--checks",
            "not_a_server_error",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
