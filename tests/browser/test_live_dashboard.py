"""The dashboard in a real browser: spawn, watch live, reload, cancel; and a burst of 500 events."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from agents.events import Kind, event_record
from agents.models import Agent, AgentStatus
from agents.services import agent_spawn
from tests.browser.conftest import login
from tests.fakes.anthropic_server import Turn, text, tool_use

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "correct-horse-battery"


def test_spawn_from_the_form_watch_tools_and_cost_live_reload_and_cancel(
    live_app, browser_page, staff_user, workers, fake_anthropic, repo, artifacts_dir
):
    page = browser_page
    fake_anthropic.script(
        "Tidy the notes",
        [
            Turn([text("Looking around first."), tool_use("Bash", {"command": "sleep 0.4; echo step-one"})]),
            Turn([tool_use("Write", {"file_path": "notes.md", "content": "# Notes\nhello\n"})], delay_s=0.4),
            Turn(
                [
                    tool_use(
                        "Edit", {"file_path": "notes.md", "old_string": "hello", "new_string": "hello, world"}
                    )
                ],
                delay_s=0.4,
            ),
            Turn([tool_use("Bash", {"command": "sleep 120"})], delay_s=0.4),
            Turn([text("Done.")]),
        ],
    )
    workers.start(1)
    login(page, live_app.url, "alice", PASSWORD)

    # Spawn from the form (no project yet: a repository path).
    page.goto(live_app.url + "/agents/new/")
    page.fill("input[name=repo]", str(repo))
    page.select_option("select[name=role]", "implementer")
    page.fill("textarea[name=task]", "Tidy the notes")
    page.fill("input[name=budget_usd]", "5")
    page.click("form.spawn [type=submit]")
    page.wait_for_url(re.compile(r"/agents/\d+/$"))
    agent = Agent.objects.get(task="Tidy the notes")
    expect(page.locator("#live-state")).to_have_text("● live")

    # Tool calls, their output, an edit's diff and the cost arrive without a reload.
    tools = page.locator("#events details.tool")
    expect(tools.nth(2)).to_be_attached(timeout=20_000)
    expect(page.locator("#events")).to_contain_text("step-one")
    expect(page.locator("#events pre.diff .add").filter(has_text="+hello, world")).to_have_count(1)
    expect(page.locator("#agent-header .cost")).not_to_have_text("$0.0000")
    expect(page.locator("#agent-header .badge.running")).to_be_visible()
    expect(tools).to_have_count(4, timeout=20_000)  # the long Bash call is running now
    expect(page.locator("#agent-header")).to_contain_text("Now: Bash: sleep 120")
    page.screenshot(path=artifacts_dir / "agent-page-live.png", full_page=True)
    shown_live = page.locator("#events").inner_text()

    # A reload mid-run shows the whole history from the database.
    page.reload()
    expect(tools).to_have_count(4)
    expect(page.locator("#events")).to_contain_text("Looking around first.")
    assert page.locator("#events").inner_text().replace("\n", "") == shown_live.replace("\n", "")
    expect(page.locator("#live-state")).to_have_text("● live")

    # Overview: the agent's row, live activity and cost.
    page.goto(live_app.url + "/")
    row = page.locator(f"#agent-{agent.pk}")
    expect(row).to_contain_text("Bash: sleep 120")
    page.screenshot(path=artifacts_dir / "overview.png", full_page=True)

    # Cancel from the agent page: the status changes in place.
    page.goto(live_app.url + f"/agents/{agent.pk}/")
    expect(page.locator("#live-state")).to_have_text("● live")
    page.click("button[data-action=cancel]")
    expect(page.locator("#agent-header .badge.cancelled")).to_be_visible(timeout=10_000)
    expect(page.locator("#flash")).to_contain_text("Cancelled.")
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.CANCELLED


def test_a_burst_of_500_events_arrives_complete_and_in_order(
    live_app, browser_page, staff_user, workers, repo, settings
):
    page = browser_page
    settings.ANTHROPIC_API_KEY = "test-key"
    agent = agent_spawn(role="implementer", task="Burst", repo_path=str(repo))  # no worker runs it
    login(page, live_app.url, "alice", PASSWORD)
    page.goto(live_app.url + f"/agents/{agent.pk}/")
    expect(page.locator("#live-state")).to_have_text("● live")
    first = Agent.objects.get(pk=agent.pk).last_event_seq

    for i in range(500):  # as a worker would, one transaction each, as fast as the database allows
        event_record(agent.pk, Kind.TEXT, {"text": f"[{i}]"})

    cursor = page.locator("#events-cursor")
    expect(cursor).to_have_attribute("data-seq", str(first + 500), timeout=15_000)
    seqs = [
        int(s) for s in page.locator("#events li.text").evaluate_all("els => els.map(e => e.dataset.seq)")
    ]
    assert seqs == list(range(first + 1, first + 501))
    assert page.locator("#events").inner_text().count("[") == 500
    assert "".join(f"[{i}]" for i in range(500)) in page.locator("#events").inner_text().replace("\n", "")
