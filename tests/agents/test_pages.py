"""The dashboard and the admin show agents, transcripts and cost; actions call the services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent, AgentStatus
from agents.services import agent_spawn
from tests.conftest import run_here
from tests.fakes.anthropic_server import Turn, text, tool_use


@pytest.fixture
def finished_agent(agents_env, repo):
    agents_env.script(
        "Write notes",
        [
            Turn([tool_use("Write", {"file_path": "notes.md", "content": "# Notes\n"})]),
            Turn([text("Notes written to notes.md.")]),
        ],
    )
    return run_here(agent_spawn(role="implementer", task="Write notes for the team", repo_path=str(repo)))


def test_pages_need_a_login(client):
    response = client.get(reverse("dashboard:agents"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_agent_list_shows_the_tree_with_status_and_cost(admin_client, finished_agent):
    response = admin_client.get(reverse("dashboard:agents"))
    body = response.content.decode()
    assert response.status_code == 200
    assert f"#{finished_agent.pk} implementer" in body
    assert "Completed" in body
    assert f"${finished_agent.cost_usd:.4f}" in body


def test_agent_page_shows_the_transcript_and_usage(admin_client, finished_agent):
    response = admin_client.get(reverse("dashboard:agent", args=[finished_agent.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Write notes for the team" in body
    assert "notes.md" in body and "Notes written to notes.md." in body
    assert "2 model calls" in body
    assert finished_agent.workspace.branch in body


def test_unknown_agent_is_404(admin_client, db):
    assert admin_client.get(reverse("dashboard:agent", args=[999])).status_code == 404


def test_admin_agent_page_has_transcript_and_usage_inlines(admin_client, finished_agent):
    response = admin_client.get(reverse("admin:agents_agent_change", args=[finished_agent.pk]))
    assert response.status_code == 200
    inlines = [formset.opts.__class__.__name__ for formset in response.context["inline_admin_formsets"]]
    assert inlines == ["WorkspaceInline", "BudgetInline", "UsageInline", "TranscriptInline"]
    body = response.content.decode()
    assert "Notes written to notes.md." in body


@pytest.mark.parametrize("model", ["project", "role", "agent", "transcriptentry", "message", "workspace"])
def test_admin_lists_render(admin_client, finished_agent, model):
    assert admin_client.get(reverse(f"admin:agents_{model}_changelist")).status_code == 200


@pytest.mark.parametrize("model", ["modelprice", "usagerecord", "budget", "ledgerentry"])
def test_budget_admin_lists_render(admin_client, finished_agent, model):
    assert admin_client.get(reverse(f"admin:budgets_{model}_changelist")).status_code == 200


def test_admin_actions_cancel_and_retry(admin_client, seeded, repo, worktrees_dir, settings):
    settings.ANTHROPIC_API_KEY = "test-key"
    agent = agent_spawn(role="implementer", task="Something long", repo_path=str(repo))
    url = reverse("admin:agents_agent_changelist")
    admin_client.post(url, {"action": "cancel", "_selected_action": [agent.pk]})
    agent.refresh_from_db()
    assert agent.status == AgentStatus.CANCELLED
    admin_client.post(url, {"action": "retry", "_selected_action": [agent.pk]})
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING
    response = admin_client.post(url, {"action": "retry", "_selected_action": [agent.pk]}, follow=True)
    assert f"Agent {agent.pk} is pending; it cannot become pending" in response.content.decode()
    assert Agent.objects.count() == 1
