"""The sandbox Bash runs in: what a command can read, write and reach, and what it leaves behind.

Every test goes through the real Bash tool and bubblewrap (.ci/run installs it), so each one fails
when the confinement it checks is broken. The orchestrator's directories and the fake home live in
/var/tmp: anything under /tmp is out of sight anyway behind the command's private /tmp.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import sandbox
from agents.tools.base import ToolBox, ToolContext, ToolResult
from agents.tools.shell import BASH_TOOL
from tests.conftest import ROOT, git, processes_matching

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-sandbox-test-7f3a",
    "SECRET_KEY": "django-sandbox-test-secret-91c2",
    "DATABASE_URL": "postgres://app:sandbox-test-pw-55e1@127.0.0.1:5432/app",
    "REDIS_URL": "redis://:sandbox-test-redis-08d4@127.0.0.1:6379/0",
}
SECRET_KEY_FILE = "generated-secret-key-in-the-data-dir-3b6e"


def bash(
    worktree: Path,
    command: str,
    *,
    network: bool = False,
    opt_out: bool = False,
    timeout_ms: int | None = None,
    agent_id: int | None = None,
) -> ToolResult:
    context = ToolContext(
        worktree=worktree, agent_id=agent_id, sandbox_network=network, sandbox_opt_out=opt_out
    )
    tool_input: dict[str, object] = {"command": command}
    if timeout_ms is not None:
        tool_input["timeout"] = timeout_ms
    return ToolBox.of([BASH_TOOL], context).execute("Bash", tool_input)


@pytest.fixture
def outside() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir(outside: Path, settings) -> Path:
    """The orchestrator's data dir, as settings make it: a database, a generated secret key."""
    path = outside / "data"
    path.mkdir()
    (path / "secret_key").write_text(SECRET_KEY_FILE)
    (path / "db.sqlite3").write_text("fake database")
    settings.DATA_DIR = path
    settings.ORCHESTRATOR_WORKTREES_DIR = path / "worktrees"
    return path


@pytest.fixture
def worktree(repo: Path, data_dir: Path) -> Path:
    """An agent's worktree where the orchestrator puts it by default: inside the data dir."""
    path = data_dir / "worktrees" / "project-1" / "agent-1"
    git("worktree", "add", "-q", "-b", "agent-1", str(path), cwd=repo)
    return path


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections (the kernel completes them)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def probe(host: str, port: int) -> str:
    return f"timeout 3 bash -c 'echo > /dev/tcp/{host}/{port}' 2>/dev/null && echo {host}:{port} open || echo {host}:{port} closed"


def test_a_sandbox_can_be_set_up_here():
    assert sandbox.sandbox_available() is None


def test_no_secret_in_the_environment_or_in_any_processs_environ(worktree, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    result = bash(worktree, r"env; for f in /proc/[0-9]*/environ; do tr '\0' '\n' < $f; done")
    assert not result.is_error, result.content
    assert result.content.count("LC_ALL=C.UTF-8") >= 3, "env, the command's and pid 1's environ"
    for value in SECRETS.values():
        assert value not in result.content


def test_other_processes_are_out_of_sight(worktree):
    result = bash(
        worktree, f"ls /proc | grep -E '^[0-9]+$'; cat /proc/1/cmdline; test -e /proc/{os.getpid()}"
    )
    assert result.is_error, "the worker's pid is visible in the sandbox"
    pids = [int(line) for line in result.content.splitlines() if line.isdigit()]
    assert max(pids) < 20, pids
    assert "bwrap" in result.content, "pid 1 is the sandbox's own"


def test_the_orchestrators_data_dir_and_other_worktrees_are_hidden(worktree, data_dir):
    other = data_dir / "worktrees" / "project-1" / "agent-2"
    other.mkdir()
    (other / "notes.txt").write_text("another agent's work")
    result = bash(worktree, f"cat {data_dir}/secret_key {data_dir}/db.sqlite3 {other}/notes.txt")
    assert result.is_error
    for content in (SECRET_KEY_FILE, "fake database", "another agent"):
        assert content not in result.content
    listing = bash(worktree, f"ls -A {data_dir} {data_dir}/worktrees/project-1").content
    assert listing.split() == [f"{data_dir}:", "worktrees", f"{data_dir}/worktrees/project-1:", "agent-1"]


def test_commands_have_no_capabilities_to_undo_the_sandbox(worktree, data_dir):
    result = bash(
        worktree, f"grep CapEff /proc/self/status; umount --lazy {data_dir}; cat {data_dir}/secret_key"
    )
    assert result.is_error
    assert "CapEff:\t0000000000000000" in result.content
    assert SECRET_KEY_FILE not in result.content


def test_the_workers_home_and_sockets_are_hidden_but_toolchains_in_home_work(worktree, outside, monkeypatch):
    home = outside / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY 4d1f")
    tool = home / ".toolchain" / "bin" / "hello-from-home"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho hello from a toolchain\n")
    tool.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")

    result = bash(worktree, f"hello-from-home; ls -A {home}; cat {home}/.ssh/id_ed25519")
    assert result.is_error
    assert "PRIVATE KEY" not in result.content
    assert result.content.splitlines()[:2] == ["hello from a toolchain", ".toolchain"]
    # /run holds the host's sockets: PostgreSQL's (often `trust` for local connections), Docker's...
    assert bash(worktree, "ls -A /run").content == "(no output)"
    assert "root:" not in bash(worktree, "cat /etc/shadow").content


def test_no_network_by_default(worktree, listener):
    targets = [
        ("127.0.0.1", listener),
        ("127.0.0.1", 5432),
        ("127.0.0.1", 6379),
        ("1.1.1.1", 53),
        ("10.255.255.1", 80),
    ]
    result = bash(worktree, "; ".join(probe(host, port) for host, port in targets))
    assert result.content.splitlines() == [f"{host}:{port} closed" for host, port in targets]


def test_the_project_switch_gives_commands_the_network(worktree, listener):
    result = bash(worktree, probe("127.0.0.1", listener), network=True)
    assert result.content == f"127.0.0.1:{listener} open"


def test_writes_only_reach_the_worktree_and_a_private_tmp(worktree, repo, data_dir):
    host_file = Path("/tmp", f"sandbox-host-{uuid.uuid4().hex}")
    host_file.write_text("on the host")
    scratch = f"sandbox-scratch-{uuid.uuid4().hex}"
    outside_targets = [ROOT / scratch, Path("/root", scratch), repo / ".git" / scratch, data_dir / scratch]
    try:
        for target in outside_targets:
            result = bash(worktree, f"echo x > {target}")
            assert result.is_error, f"wrote {target}"
        result = bash(
            worktree,
            f"echo kept > inside.txt && echo temp > /tmp/{scratch} && cat /tmp/{scratch} && "
            f"git status --short && test ! -e {host_file}",
        )
        assert result.content == "temp\n?? inside.txt", "the worktree and /tmp are writable, /tmp is private"
        assert (worktree / "inside.txt").read_text() == "kept\n"
        assert not Path("/tmp", scratch).exists()
        assert bash(worktree, f"test -e /tmp/{scratch}").is_error, "/tmp does not outlive the call"
        assert "Read-only file system" in bash(worktree, "git add inside.txt").content
    finally:
        host_file.unlink()
        for target in outside_targets:
            target.unlink(missing_ok=True)


def test_a_rewritten_git_file_exposes_no_other_repository(worktree, tmp_path):
    other = tmp_path / "other"  # under /tmp, so out of sight unless the sandbox shows it
    other.mkdir()
    git("init", "-q", "-b", "main", cwd=other)
    git(
        "-c",
        "user.name=Dev",
        "-c",
        "user.email=dev@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
        cwd=other,
    )
    git("worktree", "add", "-q", "-b", "elsewhere", str(tmp_path / "elsewhere"), cwd=other)
    assert not bash(worktree, f"echo 'gitdir: {other}/.git/worktrees/elsewhere' > .git").is_error
    result = bash(worktree, f"ls {other}/.git")
    assert result.is_error
    assert "No such file or directory" in result.content


class ProcessCounter(threading.Thread):
    """Samples how many processes carry `marker`, and whether the host can still start one."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker = marker
        self.peak = 0
        self.host_could_fork = True
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, len(processes_matching(self.marker)))
            try:
                subprocess.run(["true"], check=True, timeout=5)
            except (OSError, subprocess.SubprocessError):
                self.host_could_fork = False


def test_a_fork_bomb_is_bounded_and_leaves_nothing_behind(worktree):
    assert sandbox.process_bound() is not None, (
        "nothing bounds processes on this host: not running a fork bomb"
    )
    marker = f"bomb{uuid.uuid4().hex[:10]}"
    agent_id = int(uuid.uuid4().int % 10**9)
    counter = ProcessCounter(marker)
    counter.start()
    started = time.monotonic()
    try:
        result = bash(worktree, f"{marker}=1; :(){{ :|:& }};:; sleep 60", timeout_ms=5000, agent_id=agent_id)
    finally:
        counter.done.set()
        counter.join()
    assert time.monotonic() - started < 20
    assert result.is_error
    assert result.content.endswith("Command timed out after 5000 ms and was killed.")
    assert "Resource temporarily unavailable" in result.content, "forks failed at the bound"
    # A scan of /proc is not atomic: it also counts some that die and are replaced during it.
    assert 0 < counter.peak <= sandbox.MAX_PROCESSES * 1.2
    assert counter.host_could_fork
    assert processes_matching(marker) == []
    parent = sandbox._cgroup_parent()
    if parent is not None:
        assert not [p.name for p in parent.path.iterdir() if p.name.startswith(f"agent-{agent_id}-")]


def test_a_long_sleep_is_killed_at_the_timeout_and_leaves_nothing_behind(worktree):
    command = f"sleep 600.{uuid.uuid4().int % 10**9}"
    started = time.monotonic()
    result = bash(worktree, f"(trap '' TERM; {command}) & {command}", timeout_ms=2000)
    assert time.monotonic() - started < 5
    assert result.content == "Command timed out after 2000 ms and was killed."
    assert processes_matching(command) == []


def test_without_a_cgroup_the_process_limit_is_set_inside_the_sandbox(worktree, monkeypatch):
    monkeypatch.setattr(sandbox, "_cgroup_parent", lambda: None)
    assert bash(worktree, "ulimit -u; echo $0").content == f"{sandbox.MAX_PROCESSES}\nbash"


def test_bash_refuses_without_a_sandbox_unless_the_project_opted_out(worktree, monkeypatch):
    reason = "bubblewrap could not set up a sandbox: bwrap: setting up uid map: Permission denied"
    monkeypatch.setattr(sandbox, "sandbox_available", lambda: reason)
    refused = bash(worktree, "echo ran")
    assert refused.is_error
    assert reason in refused.content
    assert "set this project's `sandbox_opt_out` in the admin" in refused.content

    host_file = Path("/tmp", f"sandbox-host-{uuid.uuid4().hex}")
    host_file.write_text("on the host")
    try:
        result = bash(worktree, f"cat {host_file}", opt_out=True)
    finally:
        host_file.unlink()
    assert result.content == "on the host", "opted out: runs on the host, unconfined"
