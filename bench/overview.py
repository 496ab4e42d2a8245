"""The overview page at scale: 10,000 agents and 1,000,000 events, on PostgreSQL and SQLite.

Loads 5 projects of agent trees (a root, 3 children, 2 grandchildren each: 10 agents per tree),
each agent with 100 events (seq 1..100, a status/text/tool/usage mix, `last_event_seq` set to
match) and each root a budget: first 100 trees (1,000 agents, 100,000 events), then 900 more
(10,000 agents, 1,000,000 events). PostgreSQL loads by COPY then ANALYZEs (as autovacuum would);
SQLite by executemany in one transaction, no ANALYZE (nothing in the app runs it).

At each size, as a logged-in superuser with django.test.Client: `GET /` (the first page of 100
rows), `GET /?page=50` (10,000 agents only) and `GET /agents/<id>/` for a root with 100 events
and 3 children. Median and max of 10 runs after a warm-up, the SQL statements per request
(CaptureQueriesContext) and the time spent in them. Checks that the statement counts are the
same at both sizes. Target: under 200 ms with a constant number of queries.

    .venv/bin/python bench/overview.py [--trees 1000] [--events 100] [--backends postgres,sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    app_env,
    code_version,
    django_setup,
    emit_result,
    log,
    machine_busy_percent,
    median,
    postgres_database,
    run_child,
    temp_dir,
)

SCRIPT = Path(__file__).resolve()
PROJECTS = 5
SMALL_TREES = 100  # the first size: 1,000 agents
RUNS = 10
MODELS = ["claude-sonnet-5-5", "claude-haiku-4-5", "claude-opus-5-5"]
STATUSES = ["completed"] * 7 + ["failed", "running", "waiting"]
START = datetime(2026, 11, 1, tzinfo=UTC)


def event_payloads(count: int) -> list[tuple[str, str]]:
    """(kind, JSON data) for seq 1..count: status changes around cycles of streamed text, a tool
    call and its result, and a usage record. The same for every agent (it is the volume that
    matters, not the words)."""
    cycle = [
        ("text", {"text": "Reading the failing test to see what it expects from the parser. " * 3}),
        ("tool_started", {"id": "", "name": "Bash", "input": {"command": "pytest -q tests/test_parser.py"}}),
        (
            "tool_finished",
            {"id": "", "name": "Bash", "output": "....F.\n1 failed, 5 passed in 0.42s\n" * 4,
             "truncated": False, "is_error": False, "duration_ms": 420},
        ),
        ("usage", {"input_tokens": 5120, "output_tokens": 310, "cache_read_tokens": 4096, "cost_usd": "0.019"}),
    ]  # fmt: skip
    payloads = [
        ("status", {"from": None, "to": "pending", "reason": ""}),
        ("status", {"from": "pending", "to": "running", "reason": ""}),
    ]
    while len(payloads) < count - 1:
        kind, data = cycle[(len(payloads) - 2) % len(cycle)]
        if kind.startswith("tool_"):
            data = {**data, "id": f"toolu_{(len(payloads) - 2) // len(cycle)}"}
        payloads.append((kind, data))
    payloads.append(("status", {"from": "running", "to": "completed", "reason": ""}))
    return [(kind, json.dumps(data)) for kind, data in payloads[:count]]


def load_trees(trees: int, events: int) -> tuple[int, float]:
    """Add `trees` trees of 10 agents (root, 3 children, 2 grandchildren each) across the
    projects, each agent with `events` events; returns (agents added, seconds)."""
    from django.db import connection, transaction

    from agents.models import Agent, Project, Role
    from budgets.models import Budget

    started = time.monotonic()
    projects = list(Project.objects.order_by("pk"))
    roles = list(Role.objects.all())

    def agent(parent: Agent | None, project: Project, task: str) -> Agent:
        status = random.choice(STATUSES)
        input_tokens = random.randint(1_000, 400_000)
        return Agent(
            project=project,
            parent=parent,
            role=random.choice(roles),
            task=task,
            model=random.choice(MODELS),
            status=status,
            lease_token=uuid.uuid4() if status == "running" else None,
            lease_expires_at=START + timedelta(days=30) if status == "running" else None,
            activity="Bash: pytest -q tests/test_parser.py" if status == "running" else "",
            status_reason="Waiting for its children" if status == "waiting" else "",
            input_tokens=input_tokens,
            output_tokens=input_tokens // 20,
            cache_read_tokens=input_tokens // 2,
            cost_usd=Decimal(input_tokens) * Decimal("0.000004"),
            turns=random.randint(1, 40),
            last_event_seq=events,
        )

    with transaction.atomic():
        roots = [
            agent(None, projects[n % len(projects)], f"Fix the flaky parser test, take {n}")
            for n in range(trees)
        ]
        Agent.objects.bulk_create(roots, batch_size=1000)
        children = [agent(r, r.project, "Find why the test fails") for r in roots for _ in range(3)]
        Agent.objects.bulk_create(children, batch_size=1000)
        grandchildren = [agent(c, c.project, "Run the suite and report") for c in children for _ in range(2)]
        Agent.objects.bulk_create(grandchildren, batch_size=1000)
        Budget.objects.bulk_create(
            [Budget(agent=r, limit_usd=r.cost_usd * 2 + Decimal("1"), spent_usd=r.cost_usd) for r in roots],
            batch_size=1000,
        )
        agent_ids = [a.pk for a in (*roots, *children, *grandchildren)]
        payloads = event_payloads(events)

        def rows():
            for agent_id in agent_ids:
                for seq, (kind, data) in enumerate(payloads, start=1):
                    yield agent_id, seq, kind, data, START + timedelta(seconds=seq)

        if connection.vendor == "postgresql":
            with (
                connection.connection.cursor() as cursor,
                cursor.copy(
                    "COPY agents_agentevent (agent_id, seq, kind, data, created_at) FROM STDIN"
                ) as copy,
            ):
                for row in rows():
                    copy.write_row(row)
        else:
            connection.connection.executemany(
                "INSERT INTO agents_agentevent (agent_id, seq, kind, data, created_at) VALUES (?, ?, ?, ?, ?)",
                ((a, s, k, d, c.strftime("%Y-%m-%d %H:%M:%S.%f")) for a, s, k, d, c in rows()),
            )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return len(agent_ids), time.monotonic() - started


def measure(client: Any, url: str) -> dict[str, Any]:
    """Median and max of RUNS requests after a warm-up, with the SQL each made."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    statements: list[tuple[float, str]] = []

    def timed(execute, sql, params, many, context):  # CaptureQueriesContext rounds to 1 ms
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((time.perf_counter() - began, sql))

    response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    times, sql_times, counts = [], [], set()
    slowest = (0.0, "")
    for _ in range(RUNS):
        statements.clear()
        with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(timed):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        counts.add(len(queries))
        sql_times.append(sum(seconds for seconds, _ in statements))
        slowest = max(slowest, *statements)
    body = response.content.decode()
    return {
        "median_s": median(times),
        "max_s": max(times),
        "sql_median_s": median(sql_times),
        "queries": sorted(counts),
        "rows": body.count('<tr id="agent-'),
        "log_items": body.count('<li class="ev '),
        "bytes": len(response.content),
        "slowest_query_s": slowest[0],
        "slowest_query": " ".join(slowest[1].split())[:400],
    }


def child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    busy_before = machine_busy_percent(1)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir("bench-overview-"))
        if backend == "postgres":
            database_url = stack.enter_context(postgres_database("bench_overview"))
        else:
            database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        django_setup(
            app_env(
                data_dir=tmp,
                database_url=database_url,
                fake_url="http://127.0.0.1:9",
                redis=False,
                queue_name="bench-overview",
                extra={"ALLOWED_HOSTS": "testserver"},
            )
        )
        from django.contrib.auth import get_user_model
        from django.test import Client

        from agents.models import Agent, AgentEvent, Project
        from teams.selectors import default_team

        random.seed(5)
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        client = Client()
        client.force_login(user)
        team = default_team()
        for n in range(PROJECTS):
            Project.objects.create(
                name=f"project-{n}", repo_path=f"/nonexistent/{n}", base_branch="main", team=team
            )

        sizes = []
        for trees in (min(SMALL_TREES, args.trees), args.trees - min(SMALL_TREES, args.trees)):
            if not trees:
                continue
            added, seconds = load_trees(trees, args.events)
            total = Agent.objects.count()
            log(f"{backend}: +{added} agents in {seconds:.0f} s; {total} agents now")
            newest_root = Agent.objects.filter(parent=None).order_by("-pk").first()
            pages = {
                "GET /": "/",
                f"GET /agents/{{root}}/ ({args.events} events)": f"/agents/{newest_root.pk}/",
            }
            if total >= 50 * 100:
                pages["GET /?page=50"] = "/?page=50"
            results = {}
            for name, url in pages.items():
                results[name] = measure(client, url)
                log(f"{backend}, {total} agents, {name}: {results[name]['median_s'] * 1000:.1f} ms")
            sizes.append(
                {
                    "agents": total,
                    "events": AgentEvent.objects.count(),
                    "load_s": seconds,
                    "results": results,
                }
            )
        return {
            "backend": backend,
            "code": code_version(),
            "machine_busy_before_pct": busy_before,
            "sizes": sizes,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trees", type=int, default=1000, help="trees of 10 agents in the large size")
    parser.add_argument("--events", type=int, default=100, help="events per agent")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit_result(child(args.child, args))
        return

    forwarded = [f"--trees={args.trees}", f"--events={args.events}"]
    results = [run_child(SCRIPT, backend, forwarded, timeout=900) for backend in args.backends.split(",")]
    print()
    print(
        "Overview page at scale: django.test.Client as a superuser, median and max of 10 runs after a warm-up"
    )
    header = (
        f"{'backend':<9} {'agents':>7} {'events':>10} {'load s':>7} | {'page':<34} {'median ms':>9} "
        f"{'max ms':>7} {'SQL ms':>7} {'queries':>7} {'rows':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"ERROR: {r['error']}")
            continue
        for size in r["sizes"]:
            for name, row in size["results"].items():
                print(
                    f"{r['backend']:<9} {size['agents']:>7,} {size['events']:>10,} {size['load_s']:>7.0f} | "
                    f"{name:<34} {row['median_s'] * 1000:>9.1f} {row['max_s'] * 1000:>7.1f} "
                    f"{row['sql_median_s'] * 1000:>7.1f} {'/'.join(map(str, row['queries'])):>7} {row['rows']:>5}"
                )
    print()
    print("SQL ms: median time in the request's SQL statements; rows: agent rows on the page.")
    for r in results:
        if "error" in r:
            continue
        print(f"{r['backend']}: {r['code']}; machine {r['machine_busy_before_pct']:.0f}% busy before")
        counts = {}
        for size in r["sizes"]:
            for name, row in size["results"].items():
                counts.setdefault(name, []).append(tuple(row["queries"]))
        for name, seen in counts.items():
            if len(seen) > 1:
                same = len(set(seen)) == 1
                print(f"  {name}: queries {' vs '.join(map(str, seen))} -> {'constant' if same else 'GROWS'}")
        large = r["sizes"][-1]
        for name, row in large["results"].items():
            print(
                f"  slowest statement of {name}: {row['slowest_query_s'] * 1000:.1f} ms: {row['slowest_query']}"
            )
    print("Target: under 200 ms, with a constant number of queries.")


if __name__ == "__main__":
    main()
