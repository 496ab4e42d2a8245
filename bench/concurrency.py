"""Many agents at once on PostgreSQL + Redis: concurrency, exactly-once, memory, DB connections.

The fake Messages API takes `--delay` seconds (default 2) to answer each request. `--agents` agents
(default 128) are spawned in one batch (one transaction; all queued when it commits), each doing
`--turns` model calls (default 3: two `Read` tool turns and a final reply). django-q2 runs one task
per worker process, so the clusters get `--agents` workers in all (`--clusters`, default 1).

Before the measured wave, a warm-up wave of as many one-call agents (also `--delay` per reply, so
each worker takes one) runs each worker's first agent, which pays one-time costs (shown apart).
`--no-warmup` measures cold workers instead.

Measured (the measured wave):
- peak concurrently running agents: from the fake's request log (an agent runs from its first
  request to the end of its last reply) and from the database (status `running`, sampled);
- completion: every agent's final status, and "none run twice": each (agent, turn) answered exactly
  once by the fake, and no agent claimed more than once;
- private memory (Private_Clean + Private_Dirty, smaps_rollup) of the worker processes that ran
  agents: the peak of each during the run and the value after, averaged;
- PostgreSQL connections to the bench database (pg_stat_activity, sampled; the bench's own
  connections excluded) against `max_connections`;
- per-turn overhead: (fake received turn k+1) - (fake received turn k) - delay, p50/p99/max, and
  the wait from the moment the spawn batch returned (committed, all queued) to each agent's claim
  and first request (a claim can precede it: the queueing happens inside the call);
- CPU of the machine during the wave: the clusters, the bench process (fake API), the rest.

    .venv/bin/python bench/concurrency.py [--agents 128] [--clusters 1] [--turns 3] [--delay 2]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    CLK_TCK,
    PG_ADMIN_URL,
    Clusters,
    app_env,
    code_version,
    cpu_ticks,
    descendants,
    django_setup,
    log,
    machine_busy_percent,
    make_repo,
    percentile,
    pg_admin_query,
    postgres_database,
    private_kb,
    redis_cleanup,
    temp_dir,
)

FINISHED = ("completed", "failed", "cancelled")


class Sampler(threading.Thread):
    """Samples DB connections, running agents and worker memory while the agents run."""

    def __init__(
        self, dbname: str, cluster_pids: list[int], exclude: set[int], interval: float = 0.25
    ) -> None:
        super().__init__(name="sampler", daemon=True)
        self.dbname = dbname
        self.cluster_pids = cluster_pids
        self.exclude = exclude
        self.interval = interval
        self.done = threading.Event()
        self.connections: list[tuple[float, int]] = []
        self.running: list[tuple[float, int]] = []
        self.memory_peak: dict[int, int] = {}
        self.backend_ticks: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
        self.errors: list[str] = []

    def run(self) -> None:
        import psycopg

        url = PG_ADMIN_URL.replace("postgres://", "postgresql://")
        bench_url = url.rsplit("/", 1)[0] + "/" + self.dbname
        next_memory = 0.0
        try:
            with (
                psycopg.connect(url, autocommit=True) as admin,
                psycopg.connect(bench_url, autocommit=True) as db,
            ):
                own = {admin.info.backend_pid, db.info.backend_pid, *self.exclude}
                while not self.done.wait(self.interval):
                    now = time.time()
                    pids = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.dbname,)
                    ).fetchall()
                    self.connections.append((now, sum(1 for (pid,) in pids if pid not in own)))
                    for (pid,) in pids:
                        ticks = cpu_ticks(pid)
                        if pid not in own and ticks is not None:
                            self.backend_ticks[pid].append((now, ticks))
                    (running,) = db.execute(
                        "SELECT count(*) FROM agents_agent WHERE status = 'running'"
                    ).fetchone()
                    self.running.append((now, running))
                    if now >= next_memory:
                        next_memory = now + 2
                        for root in self.cluster_pids:
                            for pid in descendants(root):
                                kb = private_kb(pid)
                                if kb is not None:
                                    self.memory_peak[pid] = max(kb, self.memory_peak.get(pid, 0))
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def between(self, series: list[tuple[float, int]], start: float, end: float) -> int:
        return max((v for t, v in series if start <= t <= end), default=0)

    def backend_cpu_ticks(self, start: float, end: float) -> int:
        """CPU of the bench database's backends between start and end (sampled; a backend's last
        fraction of a sample interval before it exits is missed)."""
        total = 0
        for samples in self.backend_ticks.values():
            inside = [ticks for t, ticks in samples if start <= t <= end]
            if not inside:
                continue
            before = [ticks for t, ticks in samples if t < start]
            total += inside[-1] - (before[-1] if before else 0)
        return total

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


def machine_ticks() -> int:
    """Busy clock ticks of the whole machine (all CPUs) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def ticks_of(pids: set[int]) -> int:
    return sum(cpu_ticks(pid) or 0 for pid in pids)


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def stats_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": percentile(values, 50) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values) * 1000,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.stack = stack

    def setup(self) -> dict[str, Any]:
        from tests.fakes.anthropic_server import FakeAnthropic

        args, stack = self.args, self.stack
        n = args.agents
        self.clusters_n = max(1, min(args.clusters, n))
        self.per_cluster = math.ceil(n / self.clusters_n)
        queue_name = f"bench-conc-{uuid.uuid4().hex[:8]}"
        info = {
            "agents": n,
            "clusters": self.clusters_n,
            "workers_per_cluster": self.per_cluster,
            "max_connections": int(pg_admin_query("SHOW max_connections")[0][0]),
            "superuser_reserved": int(pg_admin_query("SHOW superuser_reserved_connections")[0][0]),
            "client_connections_before": int(
                pg_admin_query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[
                    0
                ][0]
            ),
            "machine_busy_before_pct": machine_busy_percent(2),
            "code": code_version(),
        }
        self.tmp = stack.enter_context(temp_dir("bench-conc-"))
        self.fake = stack.enter_context(FakeAnthropic())
        database_url = stack.enter_context(postgres_database("bench_conc"))
        self.dbname = database_url.rsplit("/", 1)[1]
        stack.callback(redis_cleanup, queue_name)
        env = app_env(
            data_dir=self.tmp,
            database_url=database_url,
            fake_url=self.fake.base_url,
            redis=True,
            queue_name=queue_name,
            workers=self.per_cluster,
        )
        django_setup(env)
        from django.db import connection

        stack.callback(connection.close)
        self.repo = make_repo(self.tmp / "repo")
        logs = self.tmp / "logs"
        logs.mkdir()
        self.clusters = stack.enter_context(Clusters(env, logs))
        if args.keep_logs:
            stack.callback(lambda: Path(args.keep_logs).write_text(self.clusters.logs()))
        log(f"starting {self.clusters_n} cluster(s) x {self.per_cluster} workers")
        started = time.monotonic()
        self.clusters.start(self.clusters_n)
        deadline = time.monotonic() + 120
        while not all(len(descendants(pid)) >= self.per_cluster + 3 for pid in self.clusters.pids):
            if any(p.poll() is not None for p in self.clusters.procs):
                raise RuntimeError(f"a cluster exited during start-up:\n{self.clusters.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the clusters did not start all their workers within 120 s")
            time.sleep(0.2)
        time.sleep(2)  # let every worker reach its queue
        info["cluster_start_s"] = time.monotonic() - started

        # The bench keeps its Django connection open throughout, so the agents' use of the
        # connection limit cannot lock it out; it is left out of the counts like the sampler's.
        connection.ensure_connection()
        own_pid = connection.connection.info.backend_pid
        info["db_connections_idle"] = int(
            pg_admin_query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                (self.dbname, own_pid),
            )[0][0]
        )
        self.sampler = Sampler(self.dbname, self.clusters.pids, exclude={own_pid})
        self.sampler.start()
        stack.callback(self.sampler.stop)
        return info

    def wave(self, name: str, turns: int, timeout: float) -> dict[str, Any]:
        """Spawn `--agents` agents of `turns` calls in one batch; wait; measure."""
        from django.db import OperationalError

        from agents.models import Agent
        from agents.services import agents_spawn_batch
        from tests.fakes.anthropic_server import Turn, text, tool_use

        args, fake = self.args, self.fake
        matches = [f"{name} agent {i:04d}" for i in range(args.agents)]
        for match in matches:
            script = [
                Turn([tool_use("Read", {"file_path": "README.md"})], delay_s=args.delay)
                for _ in range(turns - 1)
            ]
            fake.script(match, [*script, Turn([text("Done.")], delay_s=args.delay)])
        cluster_procs = set(self.clusters.pids).union(*(descendants(pid) for pid in self.clusters.pids))
        log(f"{name}: spawning {args.agents} agents of {turns} call(s) in one batch")
        spawn_start = time.time()
        agents = agents_spawn_batch(
            entries=[
                {"role": "implementer", "task": f"{m}: read the README.", "repo": str(self.repo)}
                for m in matches
            ]
        ).created
        committed = time.time()
        cpu_before = (machine_ticks(), ticks_of(cluster_procs), cpu_ticks(os.getpid()) or 0)
        ids = [a.pk for a in agents]
        log(f"{name}: spawned in {committed - spawn_start:.1f} s; waiting for the agents")

        deadline = time.monotonic() + timeout
        unfinished, last_state, last_change, stalled = len(ids), None, time.monotonic(), False
        while time.monotonic() < deadline:
            try:
                statuses = collections.Counter(
                    Agent.objects.filter(pk__in=ids).values_list("status", flat=True)
                )
            except OperationalError as exc:
                log(f"polling the agents failed ({exc}); retrying")
                time.sleep(1)
                continue
            unfinished = sum(c for status, c in statuses.items() if status not in FINISHED)
            if unfinished == 0:
                break
            state = (statuses, len(fake.requests))
            if state != last_state:
                last_state, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > args.stall:
                log(f"{name}: no progress for {args.stall:.0f} s ({dict(statuses)}); giving up waiting")
                stalled = True
                break
            time.sleep(0.5)
        all_done = time.time()
        elapsed = all_done - committed
        machine, clusters, own = cpu_before
        cores = os.cpu_count() or 1

        def pct(ticks: int) -> float:
            return 100.0 * ticks / CLK_TCK / elapsed / cores

        rows = list(
            Agent.objects.filter(pk__in=ids).values(
                "task", "status", "status_reason", "attempts", "worker", "started_at"
            )
        )
        by_match = {r["task"].split(":")[0]: r for r in rows}
        answered = collections.Counter()
        intervals, gaps, first_wait, claims = [], [], [], []
        for match in matches:
            stamps = sorted(
                (r.turn_index, r.received_at) for r in fake.requests_for(match) if r.status == 200
            )
            for turn, _ in stamps:
                answered[(match, turn)] += 1
            if by_match[match]["started_at"]:
                claims.append(by_match[match]["started_at"].timestamp() - committed)
            if stamps:
                first_wait.append(stamps[0][1] - committed)
                intervals.append((stamps[0][1], stamps[-1][1] + args.delay))
                gaps.extend(b[1] - a[1] - args.delay for a, b in itertools.pairwise(stamps))
            if args.verbose:
                offsets = [(t, round((at - committed) * 1000)) for t, at in stamps]
                log(
                    f"{match}: worker {by_match[match]['worker']}, requests (turn, ms after commit) {offsets}"
                )
        reasons = collections.Counter(
            (r["status"], (r["status_reason"] or "")[:200]) for r in rows if r["status"] != "completed"
        )
        return {
            "name": name,
            "turns": turns,
            "spawn_batch_s": committed - spawn_start,
            "makespan_s": elapsed,
            "stalled": stalled,
            "timed_out": unfinished > 0 and not stalled,
            "unfinished": unfinished,
            "statuses": dict(collections.Counter(r["status"] for r in rows)),
            "not_completed_reasons": [
                {"status": s, "reason": why, "count": c} for (s, why), c in reasons.most_common(5)
            ],
            "claimed_more_than_once": sum(1 for r in rows if r["attempts"] > 1),
            "answered_twice": sum(1 for c in answered.values() if c > 1),
            "turns_answered": len(answered),
            "turns_expected": len(ids) * turns,
            "peak_running_fake": peak_overlap(intervals),
            "peak_running_db": self.sampler.between(self.sampler.running, committed, all_done),
            "db_connections_peak": self.sampler.between(self.sampler.connections, committed, all_done),
            "turn_overhead_ms": stats_ms(gaps),
            "commit_to_claim_ms": stats_ms(claims),
            "commit_to_first_request_ms": stats_ms(first_wait),
            "worker_pids": sorted({int(r["worker"].rsplit(":", 1)[1]) for r in rows if r["worker"]}),
            "cpu_pct_of_machine": {
                "all": pct(machine_ticks() - machine),
                "clusters": pct(ticks_of(cluster_procs) - clusters),
                "bench_process": pct((cpu_ticks(os.getpid()) or 0) - own),
                "pg_backends": pct(self.sampler.backend_cpu_ticks(committed, all_done)),
            },
        }

    def finish(self, result: dict[str, Any]) -> None:
        pids = result["measured"]["worker_pids"]
        after = [kb for kb in (private_kb(pid) for pid in pids) if kb is not None]
        peaks = [self.sampler.memory_peak[pid] for pid in pids if pid in self.sampler.memory_peak]
        result["workers_used"] = len(pids)
        result["private_mb_after_avg"] = sum(after) / len(after) / 1024 if after else None
        result["private_mb_peak_avg"] = sum(peaks) / len(peaks) / 1024 if peaks else None
        procs = set(self.clusters.pids).union(*(descendants(pid) for pid in self.clusters.pids))
        result["cluster_processes"] = len(procs)
        result["cluster_private_mb_total"] = sum(private_kb(p) or 0 for p in procs) / 1024
        result["sampler_errors"] = self.sampler.errors
        logs_text = self.clusters.logs()
        lines = logs_text.splitlines()
        result["log_error_count"] = sum(1 for line in lines if " ERROR " in line)
        result["log_errors"] = [line[:300] for line in lines if " ERROR " in line][:5]
        result["log_too_many_clients"] = logs_text.count("too many clients")
        result["violations"] = self.fake.violations[:5]
        result["non_200_requests"] = sum(1 for r in self.fake.requests if r.status != 200)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        bench = Bench(args, stack)
        result = bench.setup()
        if args.warmup:
            result["warmup"] = bench.wave("Warm-up", 1, timeout=min(args.timeout, 80))
        result["measured"] = bench.wave("Measured", args.turns, timeout=args.timeout)
        bench.finish(result)
    return result


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    m = r["measured"]
    print()
    print(
        f"Concurrency on PostgreSQL + Redis: {r['agents']} agents x {args.turns} calls, fake API "
        f"{args.delay:g} s per reply; {r['clusters']} cluster(s) x {r['workers_per_cluster']} workers; "
        f"machine {r['machine_busy_before_pct']:.0f}% busy before the run; {r['code']}"
    )
    done = m["statuses"].get("completed", 0)
    lines = [
        ("agents completed", f"{done}/{r['agents']}  (statuses {m['statuses']})"),
        ("peak running (fake log / DB sample)", f"{m['peak_running_fake']} / {m['peak_running_db']}"),
        (
            "each (agent, turn) answered once",
            f"{m['turns_answered']}/{m['turns_expected']} answered, {m['answered_twice']} twice; "
            f"{m['claimed_more_than_once']} agents claimed more than once",
        ),
        (
            "worker private memory (avg)",
            f"peak {r['private_mb_peak_avg'] or 0:.1f} MB, after {r['private_mb_after_avg'] or 0:.1f} MB "
            f"over {r['workers_used']} workers that ran agents",
        ),
        (
            "all cluster processes",
            f"{r['cluster_processes']} processes, {r['cluster_private_mb_total']:.0f} MB private in all",
        ),
        (
            "PostgreSQL connections (bench DB)",
            f"idle clusters {r['db_connections_idle']}, peak {m['db_connections_peak']}; max_connections "
            f"{r['max_connections']} ({r['superuser_reserved']} reserved), "
            f"{r['client_connections_before']} client connections in use before",
        ),
    ]
    for key, label in (
        ("turn_overhead_ms", "per-turn overhead (gap - delay)"),
        ("commit_to_claim_ms", "spawn batch returned -> claimed"),
        ("commit_to_first_request_ms", "spawn batch returned -> 1st request"),
    ):
        if m[key]:
            t = m[key]
            lines.append((label, f"p50 {t['p50']:.0f} ms, p99 {t['p99']:.0f} ms, max {t['max']:.0f} ms"))
    cpu = m["cpu_pct_of_machine"]
    lines.append(
        (
            "CPU, % of the machine",
            f"all {cpu['all']:.0f}%: clusters {cpu['clusters']:.0f}%, PostgreSQL backends "
            f"{cpu['pg_backends']:.0f}%, bench process (fake API) {cpu['bench_process']:.0f}%, the rest "
            f"(Redis, git, kernel, other users' processes) "
            f"{cpu['all'] - cpu['clusters'] - cpu['pg_backends'] - cpu['bench_process']:.0f}%",
        )
    )
    lines.append(
        (
            "timings",
            f"cluster start {r['cluster_start_s']:.1f} s, spawn batch {m['spawn_batch_s']:.1f} s, "
            f"batch returned -> all finished {m['makespan_s']:.1f} s",
        )
    )
    if "warmup" in r:
        w = r["warmup"]
        first = w["commit_to_first_request_ms"]
        lines.append(
            (
                "warm-up wave (cold workers, 1 call)",
                f"{w['statuses']}; batch returned -> 1st request p50 {first['p50']:.0f} ms, max {first['max']:.0f} ms"
                if first
                else f"{w['statuses']}",
            )
        )
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    problems = []
    for wave in [r.get("warmup"), m]:
        if not wave:
            continue
        if wave["stalled"] or wave["timed_out"]:
            problems.append(
                f"{wave['name']}: {wave['unfinished']} agents unfinished when the bench stopped waiting"
            )
        if wave["not_completed_reasons"]:
            problems.append(f"{wave['name']}: not completed: {wave['not_completed_reasons']}")
    if r["violations"] or r["non_200_requests"]:
        problems.append(f"fake API: {r['non_200_requests']} non-200 answers, violations {r['violations']}")
    if r["log_too_many_clients"]:
        problems.append(f"'too many clients' appears {r['log_too_many_clients']} times in the cluster logs")
    if r["log_error_count"]:
        problems.append(f"{r['log_error_count']} ERROR lines in the cluster logs, e.g. {r['log_errors'][:2]}")
    if r["sampler_errors"]:
        problems.append(f"sampler: {r['sampler_errors']}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("Goal: 128 concurrent agents on this machine (2 cores, 24 GB), each run exactly once.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1, help="qcluster processes sharing the workers")
    parser.add_argument("--turns", type=int, default=3, help="model calls per agent (the last one ends it)")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the fake API takes per reply")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="measure cold workers")
    parser.add_argument(
        "--timeout", type=float, default=100, help="seconds to wait for the measured wave at most"
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=75,
        help="stop waiting after this long without progress (the reaper re-sends a lost task after ~65 s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every agent's requests")
    parser.add_argument("--keep-logs", help="write the cluster logs to this file")
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    report(run(args), args)


if __name__ == "__main__":
    main()
