"""The Bash tool: one command per call in the agent's worktree, bounded in time and memory.

Each command runs in the sandbox of `agents.sandbox` (writes only to the worktree and a private
/tmp, no network unless the project allows it, its own pid namespace, bounded processes), in its
own session (so its process group can be killed as a whole), with an environment built from an
allowlist and a private HOME/TMPDIR that is removed afterwards. Where no sandbox can be set up,
Bash refuses to run unless the project opted out; then commands run as they are, unconfined.
Output is drained continuously and only its head and tail are kept, so a chatty command can
neither fill the pipe nor the worker's memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import sandbox
from agents.tools.base import Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
HEAD_BYTES = 32 * 1024
TAIL_BYTES = 32 * 1024
READ_CHUNK_BYTES = 64 * 1024
POLL_SECONDS = 0.1
KILL_GRACE_SECONDS = 1.0
# After the command ends, how long to keep reading: only a process that left the process group
# (setsid) can still hold the pipe open then, and we must not wait for it.
DRAIN_SECONDS = 0.5
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class _BoundedOutput:
    """Keeps the first HEAD_BYTES and the last TAIL_BYTES of a stream and counts the rest."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.omitted = 0

    def feed(self, data: bytes) -> None:
        room = HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        excess = len(self.tail) - TAIL_BYTES
        if excess > 0:
            del self.tail[:excess]
            self.omitted += excess

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if self.omitted:
            return f"{head}\n[... {self.omitted:,} bytes omitted ...]\n{tail}"
        return head + tail


def _group_has_live_members(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds while only zombies are left (nobody may reap orphans in a container),
    # so on Linux look for a member that is still running.
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            status = Path("/proc", pid, "stat").read_text()
        except OSError:
            continue
        fields = status[status.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def kill_process_group(pgid: int, *, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM every process in the group, then SIGKILL whatever is still running after `grace`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_has_live_members(pgid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _command_env(home: str) -> dict[str, str]:
    """An allowlisted environment: nothing of the worker's (API keys, database URLs) gets through."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "HOME": home,
        "TMPDIR": home,
    }


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(function: Any, failed_path: str, _exc_info: Any) -> None:
        # Tools like Go leave read-only directories behind in their caches.
        try:
            os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
            os.chmod(failed_path, stat.S_IRWXU)
            function(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


_RUNNING, _EXITED, _TIMED_OUT, _STOPPED = "running", "exited", "timed out", "stopped"


def _collect(proc: subprocess.Popen[bytes], ctx: ToolContext, timeout_s: float) -> tuple[str, _BoundedOutput]:
    """Drain the output until the command ends, times out or is stopped; leave its group dead."""
    assert proc.stdout is not None
    output = _BoundedOutput()
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    state = _RUNNING
    drain_until = 0.0
    at_eof = False
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if state == _RUNNING:
                if ctx.should_stop():
                    state = _STOPPED
                elif proc.poll() is not None:
                    state = _EXITED
                elif time.monotonic() >= deadline:
                    state = _TIMED_OUT
                if state != _RUNNING:
                    # Also after a normal exit: background jobs must not outlive the call.
                    kill_process_group(proc.pid)
                    drain_until = time.monotonic() + DRAIN_SECONDS
            if state == _RUNNING:
                wait = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            else:
                wait = drain_until - time.monotonic()
                if at_eof or wait <= 0:
                    return state, output
            if at_eof:  # the command closed its output but still runs
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
                continue
            if selector.select(wait):
                data = os.read(fd, READ_CHUNK_BYTES)
                if data:
                    output.feed(data)
                else:
                    at_eof = True


def _exit_line(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"Exit code: {128 - returncode} (killed by {name})"
    return f"Exit code: {returncode}"


def _run(
    argv: list[str], *, cwd: Path, env: dict[str, str], ctx: ToolContext, timeout_s: float
) -> tuple[str, _BoundedOutput, int]:
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as proc:
        try:
            state, output = _collect(proc, ctx, timeout_s)
        finally:
            kill_process_group(proc.pid)  # a no-op unless _collect was interrupted
    return state, output, proc.returncode


_warned_unsandboxed: set[str] = set()


def _run_bash(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    timeout_ms = tool_input.get("timeout", DEFAULT_TIMEOUT_MS)
    if not Path(ctx.worktree).is_dir():
        raise ToolError(f"Your worktree {ctx.worktree} does not exist; commands cannot run.")
    unavailable = sandbox.sandbox_available()
    if unavailable and not ctx.sandbox_opt_out:
        raise ToolError(
            f"Bash cannot run: no sandbox could be set up on this host ({unavailable}). Commands only "
            "run sandboxed here; a person can set this project's `sandbox_opt_out` in the admin to run "
            "them without one."
        )
    argv = ["bash", "-c", tool_input["command"]]
    private_dir = tempfile.mkdtemp(prefix="agent-bash-")
    try:
        if unavailable:
            if unavailable not in _warned_unsandboxed:
                _warned_unsandboxed.add(unavailable)
                log.warning("Bash runs unsandboxed (the project opted out): %s", unavailable)
            env = _command_env(private_dir)
            running: contextlib.AbstractContextManager[list[str]] = contextlib.nullcontext(argv)
        else:
            env = _command_env("/tmp")  # the private directory, mounted there
            running = sandbox.confined(
                argv,
                worktree=ctx.worktree,
                private_tmp=private_dir,
                network=ctx.sandbox_network,
                env=env,
                label=f"agent-{ctx.agent_id}",
            )
        with running as command:
            state, output, returncode = _run(
                command, cwd=ctx.worktree, env=env, ctx=ctx, timeout_s=timeout_ms / 1000
            )
    finally:
        _remove_tree(private_dir)

    text = output.text().rstrip("\n")
    if state == _STOPPED:
        raise ToolError("Command stopped: the agent was stopped while it ran")
    if state == _TIMED_OUT:
        raise ToolError(
            "\n".join(filter(None, [text, f"Command timed out after {timeout_ms} ms and was killed."]))
        )
    if returncode != 0:
        raise ToolError("\n".join(filter(None, [text, _exit_line(returncode)])))
    return text or "(no output)"


BASH_TOOL = Tool(
    name="Bash",
    description=(
        "Runs a bash command in your worktree (the working directory) and returns its output, stdout "
        "and stderr merged. Each call starts a fresh shell: `cd` and exported variables do not carry "
        "over, so chain dependent commands with `&&`. stdin is closed, so interactive commands fail; "
        "pass flags such as `-y` or `--no-edit`. HOME and TMPDIR are an empty temporary directory that "
        "is deleted after the call, and processes still running when the command ends are killed, so "
        "background jobs do not survive. Output longer than 64 KB keeps its first and last 32 KB. "
        "A non-zero exit code makes the call an error. Commands run in a sandbox: only your worktree "
        "and /tmp are writable, and there is no network unless the project allows it. git commands "
        "that read (status, diff, log) work, but git cannot write the repository from here (no add, "
        "commit or stash): the orchestrator commits your work. Prefer Read, Edit, Write, Glob and "
        "Grep over cat, sed, echo >, find and grep."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run."},
            "timeout": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TIMEOUT_MS,
                "description": f"Optional timeout in milliseconds (max {MAX_TIMEOUT_MS}). "
                f"Default {DEFAULT_TIMEOUT_MS} (2 minutes).",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    handler=_run_bash,
)


def kill_processes_in(directory: Path) -> list[int]:
    """Kill every process (with its group) whose working directory is inside `directory`.

    After a worker died mid-command, what it started may still run in the agent's worktree;
    the next worker clears it before continuing. Returns the pids found.
    """
    root = os.path.realpath(directory)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            pid = int(entry.name)
            found.append(pid)
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return found
