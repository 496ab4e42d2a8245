"""Attribution rollups at scale: 10,000 agents and 1,000,000 usage rows on PostgreSQL.

Times each `budgets.selectors` rollup (median and max of 5 runs after a warm-up) and checks each
is one query. Goal (issue 4): under 100 ms.

    .venv/bin/python bench/rollups.py [--agents 10000] [--usage 1000000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    app_env,
    django_setup,
    emit_result,
    log,
    median,
    postgres_database,
    run_child,
    temp_dir,
)

MODELS = ["claude-sonnet-5-5", "claude-haiku-4-5", "claude-opus-5-5"]


def load(agent_count: int, usage_count: int) -> tuple[int, int]:
    """Agents in a 3-level tree, then transcript entries and usage rows by COPY."""
    from django.db import connection

    from agents.models import Agent, Project, Role
    from teams.selectors import default_team

    project = Project.objects.create(
        name="bench", repo_path="/nonexistent/bench", base_branch="main", team=default_team()
    )
    roles = list(Role.objects.all())
    roots = max(1, agent_count // 100)
    level = [
        Agent(project=project, role=random.choice(roles), task=f"root {n}", model=MODELS[0])
        for n in range(roots)
    ]
    Agent.objects.bulk_create(level)
    created = len(level)
    for fanout in (9, 10):
        children = [
            Agent(
                project=project,
                role=random.choice(roles),
                task="child",
                model=random.choice(MODELS),
                parent=p,
            )
            for p in level
            for _ in range(fanout)
        ][: max(0, agent_count - created)]
        Agent.objects.bulk_create(children)
        created += len(children)
        level = children
    agent_ids = list(Agent.objects.values_list("pk", flat=True))
    log(f"{len(agent_ids)} agents; loading {usage_count} usage rows")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    from budgets.models import ModelPrice

    price_id = ModelPrice.objects.order_by("pk").values_list("pk", flat=True)[0]
    raw = connection.connection  # psycopg's connection, for COPY (nothing else may use it meanwhile)
    with raw.cursor() as cursor:
        with cursor.copy(
            "COPY agents_transcriptentry (id, agent_id, seq, kind, payload, created_at) FROM STDIN"
        ) as copy:
            for n in range(usage_count):
                agent = agent_ids[n % len(agent_ids)]
                copy.write_row((n + 1, agent, n // len(agent_ids), "assistant", "{}", start))
        with cursor.copy(
            "COPY budgets_usagerecord (agent_id, transcript_entry_id, model, price_id, pricing_rule, input_tokens,"
            " output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_usd, created_at)"
            " FROM STDIN"
        ) as copy:
            for n in range(usage_count):
                agent = agent_ids[n % len(agent_ids)]
                when = start + timedelta(minutes=n % (30 * 24 * 60))
                tokens_in, tokens_out = random.randint(100, 50_000), random.randint(10, 4_000)
                copy.write_row(
                    (agent, n + 1, random.choice(MODELS), price_id, "bench", tokens_in, tokens_out, 0, 0, 0,
                     tokens_in * 3 + tokens_out * 15, when)
                )  # fmt: skip
        cursor.execute("SELECT setval('agents_transcriptentry_id_seq', %s)", (usage_count + 1,))
        cursor.execute(
            "UPDATE agents_agent a SET cost_usd = u.cost, input_tokens = u.i, output_tokens = u.o FROM "
            "(SELECT agent_id, sum(cost_usd) cost, sum(input_tokens) i, sum(output_tokens) o "
            " FROM budgets_usagerecord GROUP BY agent_id) u WHERE u.agent_id = a.id"
        )
        cursor.execute(  # what the per-reply upserts would have built
            "INSERT INTO budgets_usagedaily (project_id, day, role, model, calls, input_tokens, output_tokens,"
            " cache_read_tokens, cost_usd) SELECT a.project_id, u.created_at::date, r.name, u.model, count(*),"
            " sum(u.input_tokens), sum(u.output_tokens), sum(u.cache_read_tokens), sum(u.cost_usd)"
            " FROM budgets_usagerecord u JOIN agents_agent a ON a.id = u.agent_id JOIN agents_role r ON r.id = a.role_id"
            " GROUP BY 1, 2, 3, 4"
        )
        cursor.execute("ANALYZE")
    raw.commit()
    return project.pk, Agent.objects.filter(parent__isnull=True).order_by("pk").values_list("pk", flat=True)[
        0
    ]


def child(args: argparse.Namespace) -> None:
    with postgres_database("bench_rollups") as url, temp_dir("bench-rollups") as data:
        django_setup(
            app_env(
                data_dir=data,
                database_url=url,
                fake_url="http://127.0.0.1:9",
                redis=False,
                queue_name="bench-rollups",
            )
        )
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from agents.models import Agent
        from budgets import selectors

        started = time.monotonic()
        project_id, root_id = load(args.agents, args.usage)
        log(f"loaded in {time.monotonic() - started:.0f} s")
        root = Agent.objects.get(pk=root_id)
        cases = {
            "cost_by_role(project)": lambda: selectors.cost_by_role(project_id=project_id),
            "cost_by_model(project)": lambda: selectors.cost_by_model(project_id=project_id),
            "cost_by_day(project)": lambda: selectors.cost_by_day(project_id=project_id),
            "cost_by_project()": selectors.cost_by_project,
            "subtree_totals(root of 100)": lambda: selectors.subtree_totals(agent=root),
        }
        results = {}
        for name, call in cases.items():
            call()  # warm-up
            times = []
            for _ in range(5):
                with CaptureQueriesContext(connection) as queries:
                    began = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - began)
            results[name] = {
                "median_ms": median(times) * 1000,
                "max_ms": max(times) * 1000,
                "queries": len(queries),
            }
            log(f"{name}: {results[name]['median_ms']:.1f} ms")
        emit_result({"agents": Agent.objects.count(), "usage": args.usage, "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--usage", type=int, default=1_000_000)
    parser.add_argument("--child")
    args, _ = parser.parse_known_args()
    if args.child:
        child(args)
        return
    result = run_child(
        Path(__file__), "rollups", [f"--agents={args.agents}", f"--usage={args.usage}"], timeout=1200
    )
    if "error" in result:
        print(f"rollups: {result['error']}")
        sys.exit(1)
    print(
        f"Rollups on PostgreSQL: {result['agents']:,} agents, {result['usage']:,} usage rows (goal: < 100 ms)"
    )
    print(f"{'query':<30} {'median ms':>10} {'max ms':>8} {'queries':>8}")
    for name, row in result["results"].items():
        print(f"{name:<30} {row['median_ms']:>10.1f} {row['max_ms']:>8.1f} {row['queries']:>8}")


if __name__ == "__main__":
    main()
