"""What budgets cost per turn: a 3-level tree of 50 agents, 4 turns each, fake API answering at once.

"with budgets": the root has a dollar budget carved down the tree and the project a monthly cap,
so every call reserves against two budgets and settles. "without": reservation and settlement
switched off in the sink (the rest of the run is identical). Agents run one after another in the
process, deepest first, so the number is the orchestration cost, not concurrency.

    .venv/bin/python bench/budget_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    app_env,
    django_setup,
    emit_result,
    log,
    make_repo,
    median,
    postgres_database,
    run_child,
    temp_dir,
)

TURNS_PER_AGENT = 4


def run_tree(repo: Path, fake, *, budgets: bool, tag: str) -> float:
    """Spawn 1 + 7 + 42 agents and run them all; returns turns per second."""
    from decimal import Decimal

    from agents.execution import agent_run
    from agents.models import Project
    from agents.services import agent_spawn
    from tests.fakes.anthropic_server import Turn, text, tool_use

    def script(task: str) -> None:
        fake.script(
            task,
            [Turn([tool_use("Read", {"file_path": "README.md"})])] * (TURNS_PER_AGENT - 1)
            + [Turn([text("done")])],
        )

    root_task = f"{tag} root"
    script(root_task)
    root = agent_spawn(
        role="planner", task=root_task, repo_path=str(repo), budget_usd=Decimal("100") if budgets else None
    )
    if budgets:
        Project.objects.filter(pk=root.project_id).update(monthly_budget_usd=Decimal("100000"))
    agents = [root]
    for c in range(7):
        task = f"{tag} child {c}"
        script(task)
        child = agent_spawn(role="planner", task=task, parent=root)
        agents.append(child)
        for g in range(6):
            task = f"{tag} grandchild {c}.{g}"
            script(task)
            agents.append(agent_spawn(role="implementer", task=task, parent=child))
    started = time.perf_counter()
    for agent in reversed(agents):  # deepest first, so parents find their children done
        agent_run(agent_id=agent.pk)
    elapsed = time.perf_counter() - started
    turns = sum(a.turns for a in type(root).objects.filter(pk__in=[a.pk for a in agents]))
    assert turns == len(agents) * TURNS_PER_AGENT, f"{turns} turns"
    return turns / elapsed


def child(args: argparse.Namespace) -> None:
    from contextlib import ExitStack

    with ExitStack() as stack:
        data = stack.enter_context(temp_dir("bench-budgets"))
        if args.child == "postgresql":
            url = stack.enter_context(postgres_database("bench_budgets"))
        else:
            url = f"sqlite:///{data / 'bench.sqlite3'}"
        from tests.fakes.anthropic_server import FakeAnthropic

        fake = stack.enter_context(FakeAnthropic())
        django_setup(
            app_env(
                data_dir=data,
                database_url=url,
                fake_url=fake.base_url,
                redis=False,
                queue_name="bench-budgets",
            )
        )
        from agents.execution import AgentSink

        repo = make_repo(data / "repo")
        reserve, release = AgentSink.reserve, AgentSink.release
        results: dict[str, list[float]] = {"with": [], "without": []}
        for n in range(args.repeats):
            for mode in ("without", "with"):
                if mode == "without":
                    AgentSink.reserve = lambda self, request: None
                    AgentSink.release = lambda self: None
                else:
                    AgentSink.reserve, AgentSink.release = reserve, release
                rate = run_tree(repo, fake, budgets=mode == "with", tag=f"{mode}-{n}")
                results[mode].append(rate)
                log(f"{args.child} {mode} budgets, run {n}: {rate:.0f} turns/s")
        emit_result({mode: median(rates) for mode, rates in results.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    args, _ = parser.parse_known_args()
    if args.child:
        child(args)
        return
    print(f"Turns per second, 3-level tree of 50 agents x {TURNS_PER_AGENT} turns, agents run one at a time")
    print(f"{'database':<12} {'without budgets':>16} {'with budgets':>13} {'ms/turn added':>14}")
    for database in ("sqlite", "postgresql"):
        result = run_child(Path(__file__), database, [f"--repeats={args.repeats}"], timeout=900)
        if "error" in result:
            print(f"{database:<12} {result['error']}")
            continue
        added = (1 / result["with"] - 1 / result["without"]) * 1000
        print(f"{database:<12} {result['without']:>16.0f} {result['with']:>13.0f} {added:>14.2f}")


if __name__ == "__main__":
    main()
