"""Hosted mode: several worker clusters share the work; tokens are made and revoked in the UI."""

from __future__ import annotations

from collections import Counter

from django.urls import reverse

from agents.models import Agent, AgentEvent, AgentStatus
from agents.services import agents_spawn_batch
from teams.models import ApiToken
from tests.conftest import wait_for
from tests.fakes.anthropic_server import Turn, text, tool_use


def test_two_clusters_run_fifty_agents_none_twice_none_lost(workers, fake_anthropic, repo):
    """In CI this runs on PostgreSQL with the Redis broker: two separate django-q2 clusters."""
    count = 50
    for n in range(count):
        fake_anthropic.script(
            f"Fifty job {n}:",
            [Turn([tool_use("Read", {"file_path": "README.md"})]), Turn([text(f"Job {n} done.")])],
        )
    workers.start(2, workers_per_cluster=3)
    entries = [
        {"role": "implementer", "task": f"Fifty job {n}: read the README.", "repo": str(repo)}
        for n in range(count)
    ]
    agents = agents_spawn_batch(entries=entries).created
    wait_for(
        lambda: Agent.objects.filter(status=AgentStatus.COMPLETED).count() == count,
        timeout=180,
        message=lambda: str(Counter(Agent.objects.values_list("status", flat=True))),
    )
    claims = Counter(
        AgentEvent.objects.filter(kind="status", data__to="running").values_list("agent_id", flat=True)
    )
    assert sorted(claims) == sorted(a.pk for a in agents) and set(claims.values()) == {1}  # each claimed once
    answered = Counter((r.script, r.turn_index) for r in fake_anthropic.requests if r.status == 200)
    assert len(answered) == 2 * count and set(answered.values()) == {1}  # no turn asked twice
    workers_used = {w.split(":")[1] for w in Agent.objects.values_list("worker", flat=True)}
    assert len(workers_used) > 1


def test_tokens_are_made_once_and_revoked_in_the_ui(admin_client, admin_user):
    page = admin_client.post(reverse("teams:tokens"), {"name": "CI"}).content.decode()
    token = ApiToken.objects.get(user=admin_user)
    assert 'id="new-token"' in page and token.prefix in page
    secret = page.split('id="new-token"')[1].split("<pre>")[1].split("</pre>")[0]
    assert secret.startswith(token.prefix) and token.key_hash not in page
    assert admin_client.get("/api/agents", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    assert secret not in admin_client.get(reverse("teams:tokens")).content.decode()  # shown once
    admin_client.post(reverse("teams:revoke", args=[token.pk]))
    assert admin_client.get("/api/agents", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401
    assert (
        "Name the token"
        in admin_client.post(reverse("teams:tokens"), {"name": " "}, follow=True).content.decode()
    )
