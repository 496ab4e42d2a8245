"""Workflow pages, the admin's validation on save, and the live graph's websocket."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse

from agents.events import Kind, event_record
from agents.models import AgentStatus
from orchestrator.asgi import application
from workflows.models import WorkflowStatus, WorkflowTemplate
from workflows.services import workflow_start

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STEPS = """
name: two
steps:
  - id: first
    role: planner
    prompt: "Plan {{ input }}"
  - id: second
    role: implementer
    needs: [first]
    prompt: "Build {{ input }} after {{ steps.first.result }}"
"""


@pytest.fixture
def workflow(seeded, repo, worktrees_dir, settings):
    settings.ANTHROPIC_API_KEY = "test-key"
    WorkflowTemplate.objects.create(name="two", yaml=TWO_STEPS)
    return workflow_start(template="two", input="a thing", repo_path=str(repo))


def test_the_admin_refuses_an_invalid_template_and_says_where(admin_client, seeded):
    bad = TWO_STEPS.replace("role: implementer", "role: wizard")
    response = admin_client.post(
        reverse("admin:workflows_workflowtemplate_add"), {"name": "two", "description": "", "yaml": bad}
    )
    page = response.content.decode()
    assert (
        response.status_code == 200
        and "line 7, step &quot;second&quot;: unknown role &quot;wizard&quot;" in page
    )
    assert not WorkflowTemplate.objects.filter(name="two").exists()
    good = admin_client.post(
        reverse("admin:workflows_workflowtemplate_add"), {"name": "two", "description": "", "yaml": TWO_STEPS}
    )
    assert good.status_code == 302 and WorkflowTemplate.objects.filter(name="two").exists()


def test_the_workflow_page_shows_the_graph_and_cancels(admin_client, workflow):
    page = admin_client.get(reverse("workflows:detail", args=[workflow.pk])).content.decode()
    assert 'id="step-first"' in page and 'id="step-second"' in page and 'data-status="running"' in page
    assert f"agent #{workflow.step_runs.get(step='first').agent_id}" in page
    assert "a thing" in admin_client.get(reverse("workflows:list")).content.decode()
    admin_client.post(reverse("workflows:control", args=[workflow.pk, "cancel"]))
    workflow.refresh_from_db()
    assert workflow.status == WorkflowStatus.CANCELLED
    assert workflow.step_runs.get(step="first").agent.status == AgentStatus.CANCELLED


def test_the_graph_updates_live_when_a_step_agent_changes(admin_user, workflow):
    client = Client()
    client.force_login(admin_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    agent_id = workflow.step_runs.get(step="first").agent_id

    async def scenario():
        ws = WebsocketCommunicator(
            application,
            f"/ws/workflows/{workflow.pk}/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
        )
        assert (await ws.connect())[0]
        await database_sync_to_async(event_record)(
            agent_id, Kind.STATUS, {"from": "pending", "to": "running"}
        )
        html = await ws.receive_from(timeout=5)
        await ws.disconnect()
        return html

    html = async_to_sync(scenario)()
    assert 'id="workflow-graph" hx-swap-oob="true"' in html and 'id="step-first"' in html


def test_an_outsider_cannot_see_a_workflow(client, workflow, django_user_model):
    outsider = django_user_model.objects.create_user("outsider", password="pw")
    client.force_login(outsider)
    assert client.get(reverse("workflows:detail", args=[workflow.pk])).status_code == 404
    assert client.post(reverse("workflows:control", args=[workflow.pk, "cancel"])).status_code == 404
