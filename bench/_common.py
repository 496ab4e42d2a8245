"""Shared helpers for the benchmarks: databases, environment, worker clusters, /proc readings.

Each benchmark runs every configuration (SQLite or PostgreSQL, ORM broker or Redis) in a child
process of its own, because Django reads its settings once per process. The parent starts the
children with ``--child NAME``, each child prints one JSON line, and the parent prints the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
RESULT_PREFIX = "BENCH-RESULT "
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- statistics -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- parent/child plumbing ------------------------------------------------------------------


def run_child(script: Path, child: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run `script --child CHILD ARGS...`; stream its stderr; return the JSON it printed."""
    cmd = [sys.executable, str(script), "--child", child, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return {"error": f"child {child!r} timed out after {timeout:.0f} s"}
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": f"child {child!r} exited with {proc.returncode} without a result"}


def emit_result(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- databases ------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(prefix: str = "bench") -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    pg_admin_query(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_database(name)


def drop_database(name: str) -> None:
    """Drop a bench database, bounded in time: on PostgreSQL 15 DROP DATABASE waits until every
    backend on the server absorbs a signal barrier, and a backend stuck elsewhere (e.g. another
    session's COPY waiting for its client) would otherwise hang the benchmark forever."""
    for attempt in range(3):
        try:
            pg_admin_query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout_s=20)
            return
        except Exception as exc:
            log(f"dropping database {name} failed (attempt {attempt + 1}): {exc}")
            time.sleep(2)
    log(
        f"LEFT BEHIND: database {name}; drop it with: psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE \"{name}\"'"
    )


def pg_admin_query(sql: str, params: tuple = (), timeout_s: float | None = None) -> list[tuple]:
    """Run one statement on the `postgres` database in a connection of its own."""
    import psycopg

    url = PG_ADMIN_URL.replace("postgres://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        if timeout_s is not None:
            conn.execute(f"SET statement_timeout = '{int(timeout_s * 1000)}ms'")
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def redis_cleanup(queue_name: str) -> None:
    """Delete the keys django-q2 left for our queue name (the task list, cluster stats)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"django_q:{queue_name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- the app --------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path) -> Path:
    """A git repository with one commit on `main` (a README and a tiny source file)."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "user.email", "bench@example.com", cwd=path)
    git("config", "user.name", "Bench", cwd=path)
    (path / "README.md").write_text("# Bench project\n\nA tiny repository for benchmarks.\n")
    (path / "hello.py").write_text('print("hello")\n')
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "Initial commit", cwd=path)
    return path


def app_env(
    *,
    data_dir: Path,
    database_url: str,
    fake_url: str,
    redis: bool,
    queue_name: str,
    workers: int = 4,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORCHESTRATOR_", "DJANGO_", "ANTHROPIC_")) and key not in ("REDIS_URL",)
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            "SECRET_KEY": "bench",
            "DEBUG": "false",
            "ORCHESTRATOR_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "ANTHROPIC_BASE_URL": fake_url,
            "ANTHROPIC_API_KEY": "x",
            "ORCHESTRATOR_WORKTREES_DIR": str(data_dir / "worktrees"),
            "ORCHESTRATOR_WORKERS": str(workers),
            "ORCHESTRATOR_QUEUE_NAME": queue_name,
            "LOG_LEVEL": "WARNING",
        }
    )
    if redis:
        env["REDIS_URL"] = REDIS_URL
    env.update(extra or {})
    return env


def django_setup(env: dict[str, str]) -> None:
    """Configure Django in this process from `env` and migrate the database."""
    os.environ.clear()
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


class Clusters:
    """`manage.py qcluster` processes, each in its own session; stopped and killed on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int = 1, workers: int | None = None) -> None:
        for _ in range(count):
            env = dict(self.env)
            if workers is not None:
                env["ORCHESTRATOR_WORKERS"] = str(workers)
            log_file = open(self.log_dir / f"qcluster-{len(self.procs)}.log", "w")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=ROOT,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log_file.close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("qcluster-*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> Clusters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


# --- /proc ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (None if it is gone)."""
    fields = _stat_fields(pid)
    if not fields:
        return None
    # After the ")": state(0) ppid(1) ... utime is field 14 of stat, i.e. index 11 here.
    return int(fields[11]) + int(fields[12])


def cpu_percent_of_core(pids: set[int], seconds: float) -> tuple[float, int]:
    """CPU used by `pids` over `seconds` (sampled before and after), as % of one core."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    used = 0
    for pid, ticks in before.items():
        after = cpu_ticks(pid)
        if ticks is not None and after is not None:
            used += after - ticks
    return 100.0 * used / CLK_TCK / elapsed, len(pids)


def private_kb(pid: int) -> int | None:
    """Private_Clean + Private_Dirty of a process from smaps_rollup, in kB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total = 0
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
            return total
    except OSError:
        return None


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def machine_busy_percent(seconds: float = 1.0) -> float:
    """How busy the whole machine is (all CPUs, any process), as % of its capacity."""

    def busy_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy0, total0 = busy_total()
    time.sleep(seconds)
    busy1, total1 = busy_total()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def code_version() -> str:
    """The commit benchmarked, and whether files outside bench/ differ from it."""
    try:
        head = git("rev-parse", "--short", "HEAD", cwd=ROOT)
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench", cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "")
