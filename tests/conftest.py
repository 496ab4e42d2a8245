"""Shared fixtures: a git repository, the fake Messages API, and real qcluster worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.fakes.anthropic_server import FakeAnthropic

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on `main`."""
    path = tmp_path / "repo"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "user.email", "dev@example.com", cwd=path)
    git("config", "user.name", "Dev", cwd=path)
    (path / "README.md").write_text("# Demo project\n")
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "Initial commit", cwd=path)
    return path


@pytest.fixture
def worktrees_dir(tmp_path: Path, settings) -> Path:
    path = tmp_path / "worktrees"
    settings.ORCHESTRATOR_WORKTREES_DIR = path
    return path


@pytest.fixture(autouse=True)
def fresh_price_cache() -> None:
    """Each test sees the prices it sets up (workers cache them for a minute)."""
    from budgets.pricing import price_cache_clear

    price_cache_clear()


@pytest.fixture
def seeded(db) -> None:
    """Roles and prices, as the data migrations seed them (transactional tests flush those)."""
    from agents.models import Role
    from agents.roles import seed_roles
    from budgets.models import ModelPrice
    from budgets.seed import seed_prices

    seed_roles(Role)
    seed_prices(ModelPrice)


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_anthropic(fake_anthropic_server: FakeAnthropic, settings) -> Iterator[FakeAnthropic]:
    fake_anthropic_server.reset()
    settings.ANTHROPIC_BASE_URL = fake_anthropic_server.base_url
    settings.ANTHROPIC_API_KEY = "test-key"
    yield fake_anthropic_server
    assert not fake_anthropic_server.violations, fake_anthropic_server.violations


def database_url() -> str:
    """The test database, as a URL a subprocess can use (file SQLite or PostgreSQL)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Workers:
    """Real `manage.py qcluster` processes on the test database."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, count: int = 1, workers_per_cluster: int = 2, env: dict[str, str] | None = None
    ) -> list[subprocess.Popen]:
        started = []
        for _ in range(count):
            log = open(self.log_dir / f"qcluster-{len(self.procs)}.log", "w")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env={**self.env, "ORCHESTRATOR_WORKERS": str(workers_per_cluster), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("qcluster-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # the sentinel stops its own workers; signalling them all confuses it
        deadline = time.monotonic() + 10
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
            proc.wait()


@pytest.fixture
def workers(transactional_db, seeded, fake_anthropic, worktrees_dir, tmp_path) -> Iterator[Workers]:
    """Start worker processes with `workers.start()`; they see the test database and fake API."""
    from django_q.brokers import get_broker

    get_broker().purge_queue()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ORCHESTRATOR_WORKTREES_DIR": str(worktrees_dir),
        "QUEUE_LOG_LEVEL": "INFO",
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    logs = tmp_path / "logs"
    logs.mkdir()
    pool = Workers(env, logs)
    yield pool
    pool.stop_all()


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"Timed out after {timeout} s waiting for {message() if callable(message) else message}"
    )


@pytest.fixture
def agents_env(transactional_db, seeded, fake_anthropic, worktrees_dir):
    """Everything an agent needs to run in this process (no worker): for focused tests."""
    from agents.execution import anthropic_client

    anthropic_client.cache_clear()  # the client reads the fake server's URL from settings
    yield fake_anthropic
    anthropic_client.cache_clear()


def run_here(agent):
    """Run one agent in the test process, as a worker would, and return it refreshed."""
    from agents.execution import agent_run

    agent_run(agent_id=agent.pk)
    agent.refresh_from_db()
    return agent


def processes_matching(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (to check a tool's process is really gone)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if marker.encode() in f.read().replace(b"\0", b" "):
                        found.append(int(entry.name))
            except OSError:
                continue
    return found
