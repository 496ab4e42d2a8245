"""Dashboard pages and controls: who sees what, who may act, and that each control calls its service."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from agents.models import Agent, AgentStatus, Message, Project, Role
from agents.services import agent_spawn
from budgets.models import Budget
from teams.models import Membership, Team, TeamRole

S = AgentStatus


@pytest.fixture
def red(seeded, repo, worktrees_dir, settings, tmp_path):
    """Team red: a member, a viewer, a project with a running-capable agent. Team blue: an outsider."""
    settings.ANTHROPIC_API_KEY = "test-key"
    User = get_user_model()
    red_team, blue_team = Team.objects.create(name="red"), Team.objects.create(name="blue")
    member = User.objects.create_user("member", password="pw")
    viewer = User.objects.create_user("viewer", password="pw")
    outsider = User.objects.create_user("outsider", password="pw")
    Membership.objects.create(team=red_team, user=member, role=TeamRole.MEMBER)
    Membership.objects.create(team=red_team, user=viewer, role=TeamRole.VIEWER)
    Membership.objects.create(team=blue_team, user=outsider, role=TeamRole.OWNER)
    agent = agent_spawn(role="implementer", task="Red work", repo_path=str(repo), budget_usd="2")
    Project.objects.filter(pk=agent.project_id).update(team=red_team)
    blue_project = Project.objects.create(
        name="blue", repo_path=str(tmp_path / "blue"), base_branch="main", team=blue_team
    )
    blue_agent = Agent.objects.create(
        project=blue_project, role=Role.objects.get(name="tester"), task="Blue work", model="m"
    )
    return {
        "member": member,
        "viewer": viewer,
        "outsider": outsider,
        "agent": agent,
        "blue_agent": blue_agent,
    }


def logged_in(client, user):
    client.force_login(user)
    return client


def test_an_outsider_sees_nothing_of_another_team(client, red):
    agent = red["agent"]
    c = logged_in(client, red["outsider"])
    overview = c.get(reverse("dashboard:agents")).content.decode()
    assert "Red work" not in overview and "Blue work" in overview
    assert c.get(reverse("dashboard:agent", args=[agent.pk])).status_code == 404
    assert c.get(reverse("dashboard:project", args=[agent.project_id])).status_code == 404
    assert c.post(reverse("dashboard:agent_control", args=[agent.pk, "cancel"])).status_code == 404
    assert c.post(reverse("dashboard:agent_message", args=[agent.pk]), {"body": "hi"}).status_code == 404
    assert Agent.objects.get(pk=agent.pk).status == S.PENDING and not Message.objects.exists()


def test_a_viewer_may_look_but_not_act(client, red):
    agent = red["agent"]
    c = logged_in(client, red["viewer"])
    page = c.get(reverse("dashboard:agent", args=[agent.pk])).content.decode()
    assert "Red work" in page and "data-action=" not in page and "Message the agent" not in page
    assert c.post(reverse("dashboard:agent_control", args=[agent.pk, "pause"])).status_code == 403
    assert c.post(reverse("dashboard:agent_budget", args=[agent.pk]), {"usd": "9"}).status_code == 403
    assert Agent.objects.get(pk=agent.pk).status == S.PENDING


def test_controls_call_the_services_and_record_who_did_it(client, red):
    agent = red["agent"]
    c = logged_in(client, red["member"])
    page = c.get(reverse("dashboard:agent", args=[agent.pk])).content.decode()
    assert 'data-action="pause"' in page and 'data-action="cancel"' in page

    response = c.post(reverse("dashboard:agent_control", args=[agent.pk, "pause"]))
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:agent", args=[agent.pk])
    assert Agent.objects.get(pk=agent.pk).status == S.PAUSED
    event = agent.events.filter(kind="status").last()
    assert event.data["to"] == S.PAUSED and event.by_user == red["member"]

    # With htmx: a flash fragment (the websocket shows the new status), errors in words.
    htmx = {"HTTP_HX_REQUEST": "true"}
    response = c.post(reverse("dashboard:agent_control", args=[agent.pk, "resume"]), **htmx)
    assert 'class="flash success"' in response.content.decode() and "Resumed." in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).status == S.PENDING
    response = c.post(reverse("dashboard:agent_control", args=[agent.pk, "resume"]), **htmx)
    assert response.status_code == 200 and "is pending; it cannot become pending" in response.content.decode()

    c.post(reverse("dashboard:agent_message", args=[agent.pk]), {"body": "Use the new API, please."})
    message = Message.objects.get(recipient=agent)
    assert message.sent_by_user == red["member"] and agent.events.filter(kind="message").exists()

    c.post(reverse("dashboard:agent_budget", args=[agent.pk]), {"usd": "7.5"})
    assert Budget.objects.get(agent=agent).limit_usd == 7.5
    follow = c.post(reverse("dashboard:agent_budget", args=[agent.pk]), {"usd": "-1"}, follow=True)
    assert "usd must be zero or more, not -1." in follow.content.decode()
    assert Budget.objects.get(agent=agent).limit_usd == 7.5

    c.post(reverse("dashboard:agent_control", args=[agent.pk, "cancel-subtree"]))
    assert Agent.objects.get(pk=agent.pk).status == S.CANCELLED
    assert c.post(reverse("dashboard:agent_control", args=[agent.pk, "explode"])).status_code == 404
    assert c.get(reverse("dashboard:agent_control", args=[agent.pk, "retry"])).status_code == 405


def test_the_spawn_form_spawns_and_explains_bad_input(client, red, repo):
    agent = red["agent"]
    c = logged_in(client, red["member"])
    assert c.get(reverse("dashboard:agent_new")).status_code == 200
    form = {"project": agent.project_id, "role": "tester", "task": "Test the red work", "budget_usd": "1"}
    response = c.post(reverse("dashboard:agent_new"), form)
    spawned = Agent.objects.get(task="Test the red work")
    assert response["Location"] == reverse("dashboard:agent", args=[spawned.pk])
    assert spawned.spawned_by == red["member"] and spawned.role.name == "tester"

    count = Agent.objects.count()
    for bad, expected in [
        ({**form, "task": ""}, "This field is required"),
        ({**form, "budget_usd": "-3"}, "greater than or equal to 0"),
        ({**form, "role": "wizard"}, "Select a valid choice"),
        ({**form, "project": "", "repo": "/does/not/exist"}, "Repository not found: /does/not/exist"),
        ({**form, "budget_tokens": "lots"}, "Enter a whole number"),
    ]:
        page = c.post(reverse("dashboard:agent_new"), bad).content.decode()
        assert expected in page, (bad, page[-2000:])
    assert Agent.objects.count() == count

    # Another team's project, by its path: refused, nothing created.
    outsider = logged_in(client, red["outsider"])
    page = outsider.post(
        reverse("dashboard:agent_new"), {"repo": str(repo), "role": "tester", "task": "Sneak in"}
    ).content.decode()
    assert "belongs to another team" in page and Agent.objects.count() == count


def test_the_project_page_draws_cost_charts(client, red):
    agent = red["agent"]
    c = logged_in(client, red["member"])
    page = c.get(reverse("dashboard:project", args=[agent.project_id])).content.decode()
    assert page.count("<svg") == 3 and "Cost per day" in page and "By role" in page
