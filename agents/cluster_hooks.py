"""What `manage.py qcluster` does for agents besides running tasks. Installed by AgentsConfig.

- A reaper ticker in the cluster's main process runs `agents_reap()` every
  ORCHESTRATOR_REAP_SECONDS, so an agent whose worker vanished is queued again within about a
  lease (the django-q2 Schedule also runs it, but its scheduler only ticks every 30-60 s).
  It starts after the cluster has forked its sentinel, so no fork ever copies the thread.
- Objects that exist before the fork are frozen (gc.freeze) so workers share their pages.
- On SIGTERM/SIGINT the cluster first asks its workers that are running agents to checkpoint:
  each stops its step, releases its agent to the queue and exits, so another worker continues
  at once. (django-q2 alone would wait for the task to end, which for an agent may be hours.)
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading

from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)


def install() -> None:
    from django_q.cluster import Cluster

    original_start = Cluster.start
    original_sig_handler = Cluster.sig_handler

    def start(self) -> int:
        # Everything imported so far is shared with the forked workers; freezing it keeps the
        # garbage collector from touching (and so copying) those pages in every worker.
        gc.freeze()
        pid = original_start(self)
        ReaperTicker().start()
        return pid

    def sig_handler(self, signum, frame) -> None:
        STOPPING.set()  # this cluster's reaper must not queue work its stopping pusher would take
        try:
            checkpoint_local_workers()
        except Exception:
            log.exception("could not ask workers to checkpoint")
        original_sig_handler(self, signum, frame)

    Cluster.start = start
    Cluster.sig_handler = sig_handler


STOPPING = threading.Event()


class ReaperTicker(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="agents-reaper", daemon=True)

    def run(self) -> None:
        from agents.lifecycle import workspaces_repair
        from agents.services import agents_reap

        try:  # first, what a crash may have left in the repositories (it says what it fixed)
            workspaces_repair()
        except Exception:
            log.exception("repairing worktrees at start-up failed")
            connection.close()
        while not STOPPING.is_set():
            try:
                report = agents_reap()
                if report.requeued or report.failed or report.woken:
                    log.info(
                        "reaper: requeued %s, failed %s, woke %s",
                        report.requeued,
                        report.failed,
                        report.woken,
                    )
            except Exception:
                log.exception("reaper failed; trying again")
                connection.close()
            STOPPING.wait(settings.ORCHESTRATOR_REAP_SECONDS)


def checkpoint_local_workers() -> list[int]:
    """SIGTERM this cluster's worker processes that hold an agent; returns their pids."""
    from agents.execution import HOST
    from agents.models import Agent, AgentStatus

    mine = _descendants(os.getpid())
    signalled = []
    running = Agent.objects.filter(status=AgentStatus.RUNNING, worker__startswith=f"{HOST}:")
    for worker in running.values_list("worker", flat=True):
        pid = int(worker.rsplit(":", 1)[1])
        if pid in mine:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    connection.close()
    return signalled


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
