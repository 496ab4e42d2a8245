"""Two costs of issues 8 and 9, each against its baseline in the same run (embedded SQLite):

1. Bash through the bubblewrap sandbox vs the same tool with the project's opt-out (no sandbox):
   median and p95 of `true`, N runs each, interleaved so machine load hits both alike.
2. Spawning a batch: worktrees checked out at spawn (what single spawns do) vs only the branch
   created at spawn and the worktree at the first run (what `spawn_agents` does), per agent.

    .venv/bin/python bench/sandbox_and_batch.py [--runs 50] [--agents 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import app_env, django_setup, log, make_repo, median, percentile, temp_dir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--agents", type=int, default=300)
    args = parser.parse_args()
    with temp_dir("bench-sandbox-") as scratch:
        env = app_env(
            data_dir=scratch / "data",
            database_url=f"sqlite:///{scratch / 'db.sqlite3'}",
            fake_url="http://127.0.0.1:9",
            redis=False,
            queue_name="bench-sandbox",
        )
        (scratch / "data").mkdir()
        django_setup(env)
        sandbox(scratch, args.runs)
        batch(scratch, args.agents)


def sandbox(scratch: Path, runs: int) -> None:
    from agents.sandbox import sandbox_available
    from agents.tools.base import ToolBox, ToolContext
    from agents.tools.shell import BASH_TOOL

    assert sandbox_available() is None, sandbox_available()
    worktree = scratch / "worktree"
    worktree.mkdir()
    from agents import sandbox as sandbox_module

    available = sandbox_module.sandbox_available
    # The baseline: the project's opt-out on a host where no sandbox can be set up.
    modes = {"sandboxed": (False, available), "no sandbox (opted out)": (True, lambda: "bench baseline")}
    box = {
        name: ToolBox.of([BASH_TOOL], ToolContext(worktree=worktree, sandbox_opt_out=opt))
        for name, (opt, _) in modes.items()
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(runs + 1):
        for name, (_, probe) in modes.items():
            sandbox_module.sandbox_available = probe
            started = time.perf_counter()
            result = box[name].execute("Bash", {"command": "true"})
            times[name].append(time.perf_counter() - started)
            assert not result.is_error, result.content
    sandbox_module.sandbox_available = available
    times = {name: values[1:] for name, values in times.items()}  # the first is a warm-up
    print(f"\nBash `true`, {runs} runs each (ms)")
    print("| mode | median | p95 |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {median(values) * 1000:.1f} | {percentile(values, 95) * 1000:.1f} |")
    added = median(times["sandboxed"]) - median(times["no sandbox (opted out)"])
    print(f"sandbox adds {added * 1000:.1f} ms a command (median)")


def batch(scratch: Path, agents: int) -> None:
    from django.conf import settings

    from agents.models import Agent
    from agents.services import _create_agents, spawn_request_validate

    settings.ANTHROPIC_API_KEY = "x"
    print(f"\nSpawning {agents} agents in one batch (one repository each way)")
    print("| worktrees | seconds | ms per agent |\n|---|---|---|")
    for lazy in (False, True):
        repo = make_repo(scratch / f"repo-{'lazy' if lazy else 'eager'}")
        request = spawn_request_validate(role="implementer", task="bench", repo_path=str(repo))
        started = time.perf_counter()
        _create_agents([request] * agents, spawned_by=None, lazy_worktrees=lazy)
        seconds = time.perf_counter() - started
        label = "at first run (spawn_agents)" if lazy else "at spawn"
        print(f"| {label} | {seconds:.1f} | {seconds / agents * 1000:.1f} |")
        log(f"{Agent.objects.count()} agents so far")


if __name__ == "__main__":
    main()
