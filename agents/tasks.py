"""django-q2 entry points: thin, by id. The queue only wakes a worker; the lease decides who runs."""

import time

from django_q.tasks import async_task


def enqueue_agent_run(*, agent_id: int) -> None:
    """Ask a worker to run the agent. Call from `transaction.on_commit`, never inside a transaction."""
    async_task("agents.tasks.run_agent", agent_id, task_name=f"agent-{agent_id}")


def run_agent(agent_id: int) -> None:
    from django.db import OperationalError, close_old_connections

    from agents.execution import agent_run

    for attempt in range(3):
        try:
            agent_run(agent_id=agent_id)
            return
        except OperationalError:
            # The database refused us (say, too many connections) before we claimed anything:
            # try again shortly rather than lose the message (the Redis broker won't redeliver).
            if attempt == 2:
                raise
            close_old_connections()
            time.sleep(1 + attempt)


def reap_agents() -> None:
    """The django-q2 Schedule's entry point (every minute); worker clusters also run it every few seconds."""
    from agents.services import agents_reap

    agents_reap()


def process_merges(project_id: int) -> None:
    """Run a project's merge queue (queued by merge requests and by the reaper)."""
    from agents.merges import merges_process

    merges_process(project_id=project_id)
