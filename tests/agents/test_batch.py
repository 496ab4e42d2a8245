"""Batch spawns at scale: thousands of entries, all checked first, idempotent by key."""

from __future__ import annotations

import os
import time
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent

COUNT = int(os.environ.get("BATCH_TEST_COUNT", "2000"))


def write_batch(path, repo, *, bad_at: int | None = None) -> None:
    entries = [
        {
            "key": f"job-{n}",
            "role": "wizard" if n + 1 == bad_at else "implementer",
            "task": f"Job {n}",
            "repo": str(repo),
        }
        for n in range(COUNT)
    ]
    path.write_text(yaml.safe_dump(entries))


def test_two_thousand_entries_all_or_nothing_then_idempotent(seeded, repo, worktrees_dir, tmp_path, settings):
    settings.ANTHROPIC_API_KEY = "test-key"
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    write_batch(bad, repo, bad_at=COUNT * 6 // 10 + 34)
    write_batch(good, repo)

    with pytest.raises(CommandError, match=f"Entry {COUNT * 6 // 10 + 34}: Unknown role 'wizard'"):
        call_command("spawn_agents", str(bad), stdout=StringIO(), stderr=StringIO())
    assert Agent.objects.count() == 0 and not any(worktrees_dir.glob("project-*/agent-*"))

    out, progress = StringIO(), StringIO()
    started = time.monotonic()
    call_command("spawn_agents", str(good), stdout=out, stderr=progress)
    seconds = time.monotonic() - started
    assert len(out.getvalue().split()) == COUNT and Agent.objects.count() == COUNT
    assert (
        f"checked all {COUNT} entries" in progress.getvalue()
        and f"created {COUNT - 100} of {COUNT}" in progress.getvalue()
    )
    assert sorted(Agent.objects.values_list("spawn_key", flat=True)) == sorted(
        f"job-{n}" for n in range(COUNT)
    )
    print(f"{COUNT} agents spawned in {seconds:.1f} s")

    again, progress = StringIO(), StringIO()
    call_command("spawn_agents", str(good), stdout=again, stderr=progress)
    assert again.getvalue() == "" and Agent.objects.count() == COUNT
    assert f"skipped {COUNT} spawned before" in progress.getvalue()


def test_csv_batches_and_their_mistakes(seeded, repo, worktrees_dir, tmp_path, settings):
    settings.ANTHROPIC_API_KEY = "test-key"
    good = tmp_path / "jobs.csv"
    good.write_text(
        f"key,role,task,repo,budget_usd\na,implementer,First,{repo},1.5\nb,tester,Second,{repo},\n"
    )
    out = StringIO()
    call_command("spawn_agents", str(good), "--quiet", stdout=out)
    assert len(out.getvalue().split()) == 2
    assert Agent.objects.get(spawn_key="a").budget.limit_usd == 1.5
    for text, message in [
        ("key,role,colour\na,implementer,red\n", r"unknown column\(s\) colour"),
        (f"role,task,repo,parent\nimplementer,x,{repo},abc\n", "line 2: parent must be a whole number"),
        (
            f"key,role,task,repo\nc,implementer,x,{repo}\nc,implementer,y,{repo}\n",
            "Entry 2: key 'c' appears twice",
        ),
        ("", "is empty"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(CommandError, match=message):
            call_command("spawn_agents", str(bad), stdout=StringIO(), stderr=StringIO())
    assert Agent.objects.count() == 2


def test_a_batch_agent_gets_its_worktree_when_it_first_runs(agents_env, repo, tmp_path):
    from pathlib import Path

    from tests.conftest import git, run_here
    from tests.fakes.anthropic_server import Turn, text, tool_use

    agents_env.script(
        "Lazy one",
        [Turn([tool_use("Write", {"file_path": "lazy.txt", "content": "x\n"})]), Turn([text("ok")])],
    )
    batch = tmp_path / "one.yaml"
    batch.write_text(
        yaml.safe_dump([{"key": "lazy", "role": "implementer", "task": "Lazy one", "repo": str(repo)}])
    )
    call_command("spawn_agents", str(batch), "--quiet", stdout=StringIO())
    agent = Agent.objects.get(spawn_key="lazy")
    assert not Path(agent.workspace.path).exists() and git("rev-parse", agent.workspace.branch, cwd=repo)
    call_command("repair_workspaces", stdout=StringIO())  # not "lost": it was never checked out
    assert not Path(agent.workspace.path).exists()
    agent = run_here(agent)
    assert agent.status == "completed" and git("show", f"{agent.workspace.branch}:lazy.txt", cwd=repo) == "x"
