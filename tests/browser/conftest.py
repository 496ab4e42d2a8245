"""Real-browser tests: the ASGI app under daphne on the test database, driven by Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Page, sync_playwright

from tests.conftest import ROOT, Workers, wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
STARTUP_TIMEOUT = 30
LOGIN_PATH = "/accounts/login/"
# Local addresses must never go through a proxy a developer may have configured.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class LiveApp:
    """The app served by a daphne subprocess."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(app: LiveApp) -> bool:
    """True once the login page is served; raises at once if the server died or errored."""
    if app.proc.poll() is not None:
        raise AssertionError(f"daphne exited with {app.proc.returncode}:\n{app.log()}")
    try:
        with _direct.open(app.url + LOGIN_PATH, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        raise AssertionError(f"GET {LOGIN_PATH} answered {error.code}:\n{app.log()}") from error
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def live_app(workers: Workers, tmp_path: Path) -> Iterator[LiveApp]:
    """`orchestrator.asgi:application` under daphne, seeing the test database and the fake API."""
    port = free_port()
    log_path = tmp_path / "daphne.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "orchestrator.asgi:application",
            ],
            cwd=ROOT,
            env={**workers.env, "ALLOWED_HOSTS": "127.0.0.1,localhost"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = LiveApp(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        wait_for(
            lambda: _answers(app),
            timeout=STARTUP_TIMEOUT,
            interval=0.2,
            message=lambda: f"daphne to serve {app.url}{LOGIN_PATH}; its log:\n{app.log()}",
        )
        yield app
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def browser_page(monkeypatch) -> Iterator[Page]:
    """A headless Chromium page (1400x900), closed after the test."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Browser tests need Debian's Chromium (Playwright cannot download its own here): "
            "run `apt-get install -y chromium`."
        )
    # Playwright's sync API marks an asyncio loop as running in the test's thread. Django then
    # refuses ORM calls from the test body (plain synchronous calls, so we allow them), and
    # asgiref hands those calls connections of their own, which we must close before the
    # loop stops: left open, they keep PostgreSQL from dropping the test database.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            yield context.new_page()
            context.close()
        finally:
            browser.close()
            connections.close_all()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where browser tests leave screenshots (kept after the run; `var/` is git-ignored)."""
    path = ROOT / "var" / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def staff_user(transactional_db):
    """A superuser the live app can see (committed, since the app runs in another process)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser(
        username="alice", email="alice@example.com", password="correct-horse-battery"
    )


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through the real login form and wait until the browser has left the login page."""
    page.goto(base_url + LOGIN_PATH)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form:has(input[name=username]) [type=submit]")
    if LOGIN_PATH in page.url:
        errors = page.locator(".errorlist").all_inner_texts()
        raise AssertionError(f"Login as {username!r} failed: {errors or page.content()}")
