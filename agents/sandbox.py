"""The sandbox agents' commands run in: bubblewrap (Linux namespaces) plus a bound on processes.

Framework-free (Django settings are read lazily, for the data and worktrees directories only).

What a sandboxed command sees:
- the host's file system read-only; its worktree read-write; a private /tmp (an empty directory
  of the worker's that the caller removes afterwards);
- hidden behind empty read-only directories (files: behind /dev/null): the orchestrator's data
  dir (database, generated `secret_key`) and worktrees dir (other agents' work), the
  orchestrator checkout's `.env`, the worker's home and /root (SSH keys, forge and cloud
  credentials), /run (sockets: PostgreSQL's with `trust` would be a database login, Docker's a
  root shell) and Debian's root-only secrets (/etc/shadow, TLS and SSH host keys). The worker may
  well run as root, and a process without capabilities still reads what its uid owns. Home
  directories holding PATH entries (~/.pyenv, ~/.cargo...) are shown again, read-only, so
  toolchains installed there keep working;
- the git directory of its worktree's repository, readable so `git status/diff/log` work, but
  not writable: `git add`/`commit` fail there, agents commit through the orchestrator's tools;
- a fresh pid namespace and /proc: other processes and their /proc/<pid>/environ are invisible;
- no network but its own loopback, unless the project turns the network on (then the host's
  network, including services listening on the host's loopback);
- no capabilities, and only the environment it is given. bwrap is started with that environment
  too: /proc/<pid>/environ shows what a process was *started* with, so the sandbox's pid 1 (a
  fork of bwrap) would otherwise show the worker's secrets whatever `--clearenv` does.

Processes are bounded, so a fork bomb cannot take the host down. What each host gets:
- a writable pids cgroup (v1; or v2 where this process's cgroup may delegate `pids`, in practice
  only the root cgroup): each command gets its own with MAX_PROCESSES tasks, emptied and removed
  afterwards. Root on a VM or a CI machine like ours gets this.
- otherwise, as a non-root user: RLIMIT_NPROC set inside the sandbox's user namespace, where the
  kernel counts only the sandbox's processes (a typical systemd service or rootless container).
- otherwise (root without a writable cgroup): only the command's timeout, as root ignores
  RLIMIT_NPROC. `process_bound()` says which applies.
Memory is not bounded: RLIMIT_AS, the cheap way, stops Chromium (it reserves more address space
than the machine has memory), and memory cgroups are left to whoever runs the worker.

Where bubblewrap cannot set up namespaces (Docker's default seccomp profile, Ubuntu's AppArmor
policy for unprivileged user namespaces), `sandbox_available()` says why and callers refuse to
run commands unless the project opted out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

# Tasks (processes and threads) per command: room for parallel builds and a browser, not for a
# fork bomb.
MAX_PROCESSES = 1024
CGROUP_DIR_NAME = "orchestrator-sandbox"
# An empty cgroup older than this was left by a worker that died; a younger one may be waiting for
# the command it was made for.
STALE_CGROUP_SECONDS = 60
CGROUP_CLEANUP_SECONDS = 5.0
ORCHESTRATOR_CHECKOUT = Path(__file__).resolve().parent.parent
ROOT_ONLY_DIRS = ("/etc/ssl/private", "/var/lib/private")
ROOT_ONLY_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd")
# Secrets inside the home directories that are shown again for the toolchains they hold.
TOOLCHAIN_SECRETS = (".cargo/credentials", ".cargo/credentials.toml")


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path)


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _orchestrator_dirs() -> list[str]:
    """The data dir and the worktrees dir (from the settings if Django is configured), and the
    checkout's default data dir, which may hold a database and key from earlier use."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        data_dir = Path(settings.DATA_DIR)
        worktrees = Path(getattr(settings, "ORCHESTRATOR_WORKTREES_DIR", data_dir / "worktrees"))
    except ImproperlyConfigured:
        data_dir = Path(os.environ.get("ORCHESTRATOR_DATA_DIR") or ORCHESTRATOR_CHECKOUT / "var")
        worktrees = Path(os.environ.get("ORCHESTRATOR_WORKTREES_DIR") or data_dir / "worktrees")
    return [_real(data_dir), _real(worktrees), _real(ORCHESTRATOR_CHECKOUT / "var")]


def _git_common_dir(worktree: str) -> str | None:
    """The git dir of the repository a linked worktree belongs to, if it really is one.

    The agent can rewrite its `.git` file, so the answer must not come from there alone: the
    admin dir it names (`<common>/worktrees/<id>`) has to lie outside the worktree (where the
    agent cannot write) and name this worktree back in its `gitdir` file, as git writes it.
    """
    dot_git = os.path.join(worktree, ".git")
    if os.path.islink(dot_git) or not os.path.isfile(dot_git):
        return None
    try:
        pointer = Path(dot_git).read_text().strip()
        if not pointer.startswith("gitdir:"):
            return None
        admin = _real(os.path.join(worktree, pointer.removeprefix("gitdir:").strip()))
        back = Path(admin, "gitdir").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    common = os.path.dirname(os.path.dirname(admin))
    if (
        _within(admin, worktree)
        or _real(back) != dot_git
        or os.path.basename(os.path.dirname(admin)) != "worktrees"
        or not os.path.isfile(os.path.join(common, "HEAD"))
        or any(_within(common, hidden) for hidden in _orchestrator_dirs())
    ):
        return None
    return common


def _homes() -> list[str]:
    homes = []
    for home in (str(Path.home()), "/root"):
        home = _real(home)
        if home != "/" and os.path.isdir(home) and home not in homes:
            homes.append(home)
    return homes


def _toolchains(path_variable: str, homes: Sequence[str]) -> list[str]:
    """The top-level directories of hidden homes that PATH entries point into (~/.pyenv...)."""
    found = []
    for entry in path_variable.split(":"):
        entry = _real(entry)
        for home in homes:
            if entry.startswith(home.rstrip("/") + "/"):
                top = os.path.join(home, entry[len(home) :].lstrip("/").split("/")[0])
                if os.path.isdir(top) and top not in found:
                    found.append(top)
    return found


@dataclass
class _Mounts:
    """bwrap's mount arguments, in order: a later mount covers an earlier one at the same place."""

    args: list[str]
    covered: list[str]  # places whose host content is out of sight (the private /tmp, the masks)
    shown: list[str]  # places shown again inside covered ones
    masked: list[str]  # made read-only at the end, once bwrap has made its mount points in them

    def hidden(self, path: str) -> bool:
        return any(_within(path, c) for c in self.covered) and not any(_within(path, s) for s in self.shown)

    def mask(self, path: str) -> None:
        if not os.path.lexists(path) or self.hidden(path):
            return
        if os.path.isdir(path):
            self.args += ["--tmpfs", path]
            self.masked.append(path)
        else:
            self.args += ["--ro-bind", "/dev/null", path]
        self.covered.append(path)

    def show(self, path: str, *, writable: bool = False) -> None:
        self.args += ["--bind" if writable else "--ro-bind", path, path]
        self.shown.append(path)


def sandbox_command(
    argv: Sequence[str],
    *,
    worktree: str | os.PathLike[str],
    private_tmp: str | os.PathLike[str],
    network: bool,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The bwrap command line that runs `argv` in `worktree`, confined as the module says.

    Start it with the same `env` (see the module docstring about /proc/<pid>/environ).
    """
    env = dict(env or {})
    worktree = _real(worktree)
    mounts = _Mounts(
        args=["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", str(private_tmp), "/tmp"],
        covered=["/tmp"],
        shown=[],
        masked=[],
    )
    homes = _homes()
    for broad in [*homes, "/run"]:
        mounts.mask(broad)
    for toolchain in _toolchains(env.get("PATH", ""), homes):
        mounts.show(toolchain)
    if network:
        resolv_conf = _real("/etc/resolv.conf")
        if mounts.hidden(resolv_conf):  # systemd-resolved keeps it in /run
            mounts.show(os.path.dirname(resolv_conf))
    specific = [
        *_orchestrator_dirs(),
        _real(ORCHESTRATOR_CHECKOUT / ".env"),
        *ROOT_ONLY_DIRS,
        *ROOT_ONLY_FILES,
        *(str(key) for key in sorted(Path("/etc/ssh").glob("ssh_host_*_key"))),
        *(os.path.join(home, secret) for home in homes for secret in TOOLCHAIN_SECRETS),
    ]
    specific = sorted(set(specific), key=len)  # a parent first: what it covers needs no mask of its own
    for path in specific:
        mounts.mask(path)
    common_dir = _git_common_dir(worktree)
    if common_dir is not None:
        mounts.show(common_dir)
    mounts.show(worktree, writable=True)
    for path in specific:  # what lies inside the worktree came back with it
        if _within(path, worktree) and path != worktree:
            mounts.mask(path)

    args = [_bwrap_path() or "bwrap", *mounts.args]
    for path in mounts.masked:
        args += ["--remount-ro", path]
    args += ["--unshare-all", *(["--share-net"] if network else [])]
    args += ["--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return [*args, "--chdir", worktree, "--", *argv]


@cache
def _bwrap_path() -> str | None:
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")


_sandbox_works = False


def sandbox_available() -> str | None:
    """None when commands can run sandboxed on this host, otherwise what failed.

    A success is remembered for the life of the process; a failure is probed again next time
    (a few milliseconds), so a host can be fixed without restarting the workers.
    """
    global _sandbox_works
    if _sandbox_works:
        return None
    if _bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed; on Debian: apt-get install bubblewrap"
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as scratch:
        command = sandbox_command(["true"], worktree=scratch, private_tmp=scratch, network=False)
        try:
            result = subprocess.run(command, env={}, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not be run: {exc}"
    if result.returncode != 0:
        detail = result.stderr.strip() or f"exit code {result.returncode}"
        return f"bubblewrap could not set up a sandbox: {detail}"
    _sandbox_works = True
    return None


# --- Bounding processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class _CgroupParent:
    """The directory per-command pids cgroups are made in."""

    path: Path
    v2: bool


def _cgroup_parent_candidates() -> Iterator[_CgroupParent]:
    """Where a pids cgroup could go: below this process's own cgroup, v1 first, then v2."""
    own: dict[str, str] = {}  # controller ("" for v2) -> this process's cgroup
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, options) = left.split(), right.split()[:3]
        mount_root, mountpoint = fields[3], fields[4]
        if fstype == "cgroup" and "pids" in options.split(","):
            controller, v2 = "pids", False
        elif fstype == "cgroup2":
            controller, v2 = "", True
        else:
            continue
        if controller not in own:
            continue
        relative = own[controller]
        if mount_root != "/" and _within(relative, mount_root):  # a container sees a subtree
            relative = relative[len(mount_root) :]
        base = Path(mountpoint, relative.lstrip("/"))
        if v2 and "pids" not in _read(base / "cgroup.controllers").split():
            continue
        yield _CgroupParent(base / CGROUP_DIR_NAME, v2)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@cache
def _cgroup_parent() -> _CgroupParent | None:
    """A parent for per-command pids cgroups that works end to end here, or None (probed once)."""
    try:
        candidates = list(_cgroup_parent_candidates())
    except (OSError, ValueError):
        candidates = []
    for parent in candidates:
        try:
            if parent.v2:
                # Only a cgroup without processes of its own may hand a controller down.
                (parent.path.parent / "cgroup.subtree_control").write_text("+pids")
            parent.path.mkdir(exist_ok=True)
            if parent.v2:
                (parent.path / "cgroup.subtree_control").write_text("+pids")
            _sweep(parent.path)
            probe = _Cgroup.create(parent, "probe")
            try:
                subprocess.run(probe.wrap(["true"]), check=True, capture_output=True, timeout=10)
            finally:
                probe.destroy()
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("no pids cgroup in %s: %s", parent.path, exc)
            continue
        return parent
    return None


def _sweep(parent: Path) -> None:
    """Remove cgroups left behind by workers that died (rmdir fails on one still in use)."""
    for child in parent.iterdir():
        with contextlib.suppress(OSError):
            if child.is_dir() and time.time() - child.stat().st_mtime > STALE_CGROUP_SECONDS:
                child.rmdir()


@dataclass(frozen=True)
class _Cgroup:
    path: Path
    v2: bool

    @classmethod
    def create(cls, parent: _CgroupParent, label: str) -> _Cgroup:
        path = parent.path / f"{label}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(MAX_PROCESSES))
        except OSError:
            path.rmdir()
            raise
        return cls(path, parent.v2)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv`, started by a shell that first moves itself into this cgroup: whatever the
        command starts is born inside."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def destroy(self) -> None:
        """Kill whatever is left in the cgroup and remove it."""
        deadline = time.monotonic() + CGROUP_CLEANUP_SECONDS
        while True:
            try:
                pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            except FileNotFoundError:
                return
            if not pids:
                try:
                    self.path.rmdir()
                except OSError as exc:
                    log.warning("could not remove cgroup %s: %s", self.path, exc)
                return
            if time.monotonic() > deadline:
                log.warning("cgroup %s still holds processes %s; left for a later sweep", self.path, pids)
                return
            if self.v2:
                with contextlib.suppress(OSError):  # cgroup.kill: Linux 5.14+
                    (self.path / "cgroup.kill").write_text("1")
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)


def process_bound() -> str | None:
    """How processes are bounded on this host (see the module docstring), None if only by time."""
    parent = _cgroup_parent()
    if parent is not None:
        return f"pids cgroup (v{2 if parent.v2 else 1}) in {parent.path}, {MAX_PROCESSES} tasks"
    if os.geteuid() != 0:
        return f"RLIMIT_NPROC {MAX_PROCESSES} in the sandbox's user namespace"
    return None


@contextlib.contextmanager
def confined(
    argv: Sequence[str],
    *,
    worktree: str | os.PathLike[str],
    private_tmp: str | os.PathLike[str],
    network: bool,
    env: Mapping[str, str],
    label: str,
) -> Iterator[list[str]]:
    """The command line running `argv` sandboxed with bounded processes (start it with `env`).

    On exit, the command's cgroup, if it got one, is emptied and removed.
    """
    parent = _cgroup_parent()
    cgroup = None
    if parent is not None:
        try:
            cgroup = _Cgroup.create(parent, label)
        except OSError as exc:
            log.warning("no cgroup for a command in %s: %s", parent.path, exc)
    if cgroup is None:
        # Raising the limit fails where the hard limit is lower, and that one then applies.
        argv = ["bash", "-c", f'ulimit -u {MAX_PROCESSES} 2>/dev/null; exec "$@"', "bash", *argv]
        yield sandbox_command(argv, worktree=worktree, private_tmp=private_tmp, network=network, env=env)
        return
    try:
        command = sandbox_command(argv, worktree=worktree, private_tmp=private_tmp, network=network, env=env)
        yield cgroup.wrap(command)
    finally:
        cgroup.destroy()
