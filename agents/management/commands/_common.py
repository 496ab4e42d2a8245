"""Shared by the agent commands: one place that turns service errors into one clear line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.errors import OrchestratorError
from agents.models import FINISHED_STATUSES, Agent


def run_service(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except OrchestratorError as exc:
        raise CommandError(str(exc)) from None


def agent_or_error(agent_id: int) -> Agent:
    agent = Agent.objects.select_related("role", "project").filter(pk=agent_id).first()
    if agent is None:
        raise CommandError(f"Agent {agent_id} does not exist.")
    return agent


def wait_for_subtree(agent: Agent, *, poll: float = 0.2, timeout: float | None = None) -> Agent:
    """Block until the agent and all its descendants have finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        statuses = set(agent.descendants(include_self=True).values_list("status", flat=True))
        if statuses <= set(FINISHED_STATUSES):
            agent.refresh_from_db()
            return agent
        if deadline is not None and time.monotonic() > deadline:
            raise CommandError(f"Agent {agent.pk} has not finished after {timeout:.0f} s.")
        time.sleep(poll)


class AgentActionCommand(BaseCommand):
    """A command that applies one service to one agent and says what it did: `<done>: <id>`."""

    done: str

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)

    def act(self, agent: Agent) -> None:
        raise NotImplementedError

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"])
        run_service(lambda: self.act(agent))
        self.stdout.write(f"{self.done}: {agent.pk}")
