"""Spawn latency and idle CPU of a worker cluster, embedded (SQLite + ORM broker) and hosted
(PostgreSQL + Redis broker), side by side.

Latency: from the moment `agent_spawn` returns (its transaction committed, the task queued) to the
moment the fake Messages API receives the agent's first request. Agents are spawned one at a time,
after a warm-up agent, each waiting for the previous one to finish, with a random pause of up to
`--jitter` seconds in between so the spawns fall at random points of the broker's poll cycle.

Idle CPU: utime + stime of the `qcluster` process and all its descendants over `--idle-seconds`
with nothing queued, as % of one core. In hosted mode the PostgreSQL backends serving the bench
database are shown separately (Redis's own CPU is not attributed: the server is shared).

    .venv/bin/python bench/spawn_latency.py [--spawns 30] [--workers 4] [--modes embedded,hosted]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    Clusters,
    app_env,
    code_version,
    cpu_percent_of_core,
    cpu_ticks,
    descendants,
    django_setup,
    emit_result,
    log,
    machine_busy_percent,
    make_repo,
    percentile,
    pg_admin_query,
    postgres_database,
    redis_cleanup,
    run_child,
    temp_dir,
)

SCRIPT = Path(__file__).resolve()
MODES = {
    "embedded": "SQLite + django-q2 ORM broker",
    "hosted": "PostgreSQL + django-q2 Redis broker",
}


def wait_until(predicate, timeout: float, interval: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from tests.fakes.anthropic_server import FakeAnthropic, Turn, text

    queue_name = f"bench-spawn-{uuid.uuid4().hex[:8]}"
    busy_before = machine_busy_percent(1)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir("bench-spawn-"))
        fake = stack.enter_context(FakeAnthropic())
        if mode == "embedded":
            database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        else:
            database_url = stack.enter_context(postgres_database("bench_spawn"))
            stack.callback(redis_cleanup, queue_name)
        env = app_env(
            data_dir=tmp,
            database_url=database_url,
            fake_url=fake.base_url,
            redis=mode == "hosted",
            queue_name=queue_name,
            workers=args.workers,
        )
        django_setup(env)
        from django.conf import settings
        from django.db import connection

        from agents.models import Agent
        from agents.services import agent_spawn

        repo = make_repo(tmp / "repo")
        logs = tmp / "logs"
        logs.mkdir()
        clusters = stack.enter_context(Clusters(env, logs))
        clusters.start(1)

        def finished(agent: Agent) -> bool:
            agent.refresh_from_db()
            return agent.is_finished

        def spawn(match: str) -> tuple[Agent, float, float]:
            fake.script(match, [Turn([text("Done.")])])
            before = time.time()
            agent = agent_spawn(role="implementer", task=f"{match}: say done.", repo_path=str(repo))
            return agent, before, time.time()

        log(f"{mode}: warm-up agent (cluster start-up included)")
        agent, _, t0 = spawn("Warm-up agent")
        wait_until(lambda: finished(agent), 90, 0.05, f"the warm-up agent; logs:\n{clusters.logs()}")
        warmup = fake.requests_for("Warm-up agent")[0].received_at - t0

        latencies, spawn_calls, failed, samples = [], [], [], []
        to_claim, claim_to_request, warm = [], [], []
        seen_workers = {agent.worker.rsplit(":", 1)[1]}  # the warm-up agent's worker
        for i in range(args.spawns):
            time.sleep(random.uniform(0, args.jitter))
            match = f"Latency probe {i:03d}"
            agent, before, t0 = spawn(match)
            first = wait_until(lambda m=match: fake.requests_for(m), 30, 0.001, f"{match}'s first request")
            latencies.append(first[0].received_at - t0)
            spawn_calls.append(t0 - before)
            wait_until(lambda a=agent: finished(a), 30, 0.02, f"{match} to finish")
            pid = agent.worker.rsplit(":", 1)[1]
            to_claim.append(agent.started_at.timestamp() - t0)
            claim_to_request.append(first[0].received_at - agent.started_at.timestamp())
            if pid in seen_workers:
                warm.append(latencies[-1])
            seen_workers.add(pid)
            samples.append((round(latencies[-1] * 1000, 1), pid))
            if agent.status != "completed":
                failed.append(f"{agent.pk}: {agent.status} {agent.status_reason}")
        log(f"{mode}: {args.spawns} spawns done; measuring idle CPU for {args.idle_seconds} s")

        time.sleep(2)  # let the last agent's commit and the monitor settle
        root = clusters.pids[0]
        pids = {root} | descendants(root)
        pg_pids: set[int] = set()
        if mode == "hosted":
            dbname = database_url.rsplit("/", 1)[1]
            pg_pids = {
                pid
                for (pid,) in pg_admin_query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )
            }
        connection.close()  # the bench process's own connection must not count as a cluster's
        before_pg = {pid: cpu_ticks(pid) for pid in pg_pids}
        idle_cpu, nprocs = cpu_percent_of_core(pids, args.idle_seconds)
        pg_cpu = None
        if pg_pids:
            used = 0
            for pid, ticks in before_pg.items():
                after = cpu_ticks(pid)
                if ticks is not None and after is not None:
                    used += after - ticks
            pg_cpu = 100.0 * used / CLK_TCK / args.idle_seconds
        violations = fake.violations
        return {
            "mode": mode,
            "code": code_version(),
            "machine_busy_before_pct": busy_before,
            "config": MODES[mode],
            "workers": args.workers,
            "poll_s": settings.Q_CLUSTER.get("poll") if mode == "embedded" else None,
            "spawns": len(latencies),
            "warmup_s": warmup,
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies),
            "min": min(latencies),
            "spawn_call_p50": percentile(spawn_calls, 50),
            "to_claim_p50": percentile(to_claim, 50),
            "claim_to_request_p50": percentile(claim_to_request, 50),
            "warm_n": len(warm),
            "warm_p50": percentile(warm, 50) if warm else None,
            "warm_p95": percentile(warm, 95) if warm else None,
            "idle_cpu_pct": idle_cpu,
            "idle_processes": nprocs,
            "pg_backend_cpu_pct": pg_cpu,
            "pg_backends": len(pg_pids),
            "failed_agents": failed,
            "violations": violations[:5],
            "samples_ms_worker": samples,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawns", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4, help="ORCHESTRATOR_WORKERS of the cluster")
    parser.add_argument("--jitter", type=float, default=0.2, help="max random pause between spawns (s)")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--modes", default="embedded,hosted")
    parser.add_argument("--verbose", action="store_true", help="print every sample")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit_result(child(args.child, args))
        return

    forwarded = [
        f"--spawns={args.spawns}",
        f"--workers={args.workers}",
        f"--jitter={args.jitter}",
        f"--idle-seconds={args.idle_seconds}",
    ]
    results = [run_child(SCRIPT, mode, forwarded, timeout=240) for mode in args.modes.split(",")]
    print()
    print(
        f"Spawn latency: agent_spawn returned -> fake API received the first request "
        f"({args.spawns} sequential spawns after one warm-up agent, {args.workers} workers)"
    )
    header = (
        f"{'mode':<9} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} | {'warm p50':>8} {'warm p95':>8} "
        f"| {'->claim':>7} {'claim->req':>10} | {'idle CPU %core':>14} {'PG backends':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"ERROR: {r['error']}")
            continue
        warm = (
            f"{r['warm_p50'] * 1000:>8.1f} {r['warm_p95'] * 1000:>8.1f}"
            if r["warm_n"]
            else f"{'-':>8} {'-':>8}"
        )
        pg = f"{r['pg_backend_cpu_pct']:.2f}" if r["pg_backend_cpu_pct"] is not None else "-"
        print(
            f"{r['mode']:<9} {r['p50'] * 1000:>7.1f} {r['p95'] * 1000:>7.1f} {r['max'] * 1000:>7.1f} | "
            f"{warm} | {r['to_claim_p50'] * 1000:>7.1f} {r['claim_to_request_p50'] * 1000:>10.1f} | "
            f"{r['idle_cpu_pct']:>14.2f} {pg:>11}"
        )
    print()
    print("warm: spawns that landed on a worker that had already run an agent (its first one excluded).")
    print(
        "->claim: agent_spawn returned -> the worker's claim (Agent.started_at); claim->req: claim -> request."
    )
    print("idle CPU: the qcluster process and all its descendants; PG backends: the bench database's.")
    for r in results:
        if "error" in r:
            continue
        broker = r["config"] + (f", poll {r['poll_s']} s" if r["poll_s"] else "")
        print(
            f"{r['mode']}: {r['code']}; machine {r['machine_busy_before_pct']:.0f}% busy before; "
            f"{broker}; warm samples {r['warm_n']}/{r['spawns']}; "
            f"{r['idle_processes']} cluster processes; warm-up agent {r['warmup_s'] * 1000:.0f} ms; "
            f"agent_spawn call itself p50 {r['spawn_call_p50'] * 1000:.1f} ms"
        )
        if args.verbose:
            print(f"  each spawn (ms, worker pid): {r['samples_ms_worker']}")
        if r["failed_agents"] or r["violations"]:
            print(f"  PROBLEMS: failed agents {r['failed_agents']}, fake API violations {r['violations']}")
    print("Goals: p95 <= 50 ms embedded, <= 20 ms with Redis; idle CPU a few % of a core at most.")
    print("Reference: ORM broker poll 0.2 s ~120 ms p50; poll 0.01 ~11 ms p50; Redis 5-10 ms p50.")


if __name__ == "__main__":
    main()
