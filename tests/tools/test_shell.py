import os
import time
from pathlib import Path

import pytest

from agents.tools.base import ToolBox, ToolContext
from agents.tools.files import FILE_TOOLS
from agents.tools.shell import BASH_TOOL


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    root = tmp_path / "worktree"
    root.mkdir()
    return root


@pytest.fixture
def box(worktree: Path) -> ToolBox:
    return ToolBox.of([*FILE_TOOLS, BASH_TOOL], ToolContext(worktree=worktree))


def bash(box: ToolBox, command: str, **extra):
    return box.execute("Bash", {"command": command, **extra})


def processes_running(marker: str, *, settle: float = 1.0) -> list[int]:
    """Pids whose command line contains marker, waiting up to `settle` s for them to disappear."""
    deadline = time.monotonic() + settle
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if marker.encode() in cmdline:
                    found.append(int(entry))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def test_echo_runs_in_the_worktree(box, worktree):
    result = bash(box, "echo hello && pwd")
    assert not result.is_error
    assert result.content == f"hello\n{os.path.realpath(worktree)}"


def test_empty_output_says_no_output(box):
    assert bash(box, "true").content == "(no output)"


def test_non_zero_exit_is_an_error_with_merged_output_and_exit_code(box):
    result = bash(box, "echo out; echo err >&2; exit 3")
    assert result.is_error
    assert result.content == "out\nerr\nExit code: 3"


def test_environment_is_allowlisted_and_home_is_private(box, monkeypatch):
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-fake-0123",
        "SECRET_KEY": "django-fake-secret",
        "DATABASE_URL": "postgres://user:fake-pw@db/x",
        "REDIS_URL": "redis://fake-redis:6379",
        "GIT_DIR": "/tmp/fake-git-dir",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    output = bash(box, "env").content
    for name, value in secrets.items():
        assert name not in output
        assert value not in output
    env = dict(line.split("=", 1) for line in output.splitlines())
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["TERM"] == "dumb"
    assert env["HOME"] == env["TMPDIR"]
    assert env["HOME"] != os.environ.get("HOME")
    assert bash(box, 'echo kept > "$HOME/marker" && cat "$HOME/marker"').content == "kept"
    assert bash(box, 'test -e "$HOME/marker"').is_error, "the private HOME is removed after the call"


def test_huge_output_is_bounded_in_memory_and_says_what_was_omitted(box):
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS so growth is measured
    before = peak_rss_kb()
    started = time.monotonic()
    result = bash(box, r"head -c 50000000 /dev/zero | tr '\0' a; echo; echo THE-END")
    assert time.monotonic() - started < 10
    assert peak_rss_kb() - before < 20 * 1024
    assert not result.is_error
    assert len(result.content) < 100 * 1024
    assert result.content.startswith("a" * 1000)
    assert "[... 49,934,473 bytes omitted ...]" in result.content
    assert result.content.endswith("a\nTHE-END")


def test_timeout_kills_the_command_and_reports_it(box):
    started = time.monotonic()
    result = bash(box, "echo before; sleep 30.123", timeout=500)
    assert time.monotonic() - started < 2
    assert result.is_error
    assert result.content == "before\nCommand timed out after 500 ms and was killed."
    assert processes_running("sleep 30.123") == []


def test_cancel_stops_running_bash(worktree):
    started = time.monotonic()
    context = ToolContext(worktree=worktree, should_stop=lambda: time.monotonic() - started > 0.3)
    result = ToolBox.of([BASH_TOOL], context).execute("Bash", {"command": "sleep 60.321"})
    assert time.monotonic() - started < 1.5
    assert result.is_error
    assert result.content == "Command stopped: the agent was stopped while it ran"
    assert processes_running("sleep 60.321") == []


def test_background_jobs_do_not_hang_the_call_and_are_killed(box):
    started = time.monotonic()
    result = bash(box, "sleep 77.7 & echo started")
    assert time.monotonic() - started < 2
    assert result.content == "started"
    assert processes_running("sleep 77.7") == []


def test_background_job_ignoring_sigterm_is_killed_too(box):
    started = time.monotonic()
    result = bash(box, "(trap '' TERM; exec sleep 88.8) > /dev/null 2>&1 & echo started")
    assert time.monotonic() - started < 3
    assert result.content == "started"
    assert processes_running("sleep 88.8") == []
