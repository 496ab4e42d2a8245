"""django-q2 entry points: thin, by id. The queue only wakes a worker; the lease decides who runs."""

from django_q.tasks import async_task


def enqueue_agent_run(*, agent_id: int) -> None:
    """Ask a worker to run the agent. Call from `transaction.on_commit`, never inside a transaction."""
    async_task("agents.tasks.run_agent", agent_id, task_name=f"agent-{agent_id}")


def run_agent(agent_id: int) -> None:
    from agents.execution import agent_run

    agent_run(agent_id=agent_id)


def reap_agents() -> None:
    """The django-q2 Schedule's entry point (every minute); worker clusters also run it every few seconds."""
    from agents.services import agents_reap

    agents_reap()
