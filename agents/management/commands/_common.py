"""Shared by the agent commands: one place that turns service errors into one clear line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError

from agents.errors import OrchestratorError
from agents.models import FINISHED_STATUSES, Agent
from teams.selectors import can_act, projects_visible_to


def run_service(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except OrchestratorError as exc:
        raise CommandError(str(exc)) from None


def add_user_argument(parser) -> None:
    parser.add_argument(
        "--as-user",
        metavar="USERNAME",
        help="Act as this person: see only their teams' projects, and change nothing they may only look at. "
        "Without it the command acts with the server's full access.",
    )


def user_or_error(options: dict | None) -> AbstractBaseUser | None:
    username = (options or {}).get("as_user")
    if not username:
        return None
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"No active user {username!r}.")
    return user


def agent_or_error(agent_id: int, options: dict | None = None, *, act: bool = False) -> Agent:
    """The agent, if it exists and (with --as-user) that person may see it (and act on it)."""
    user = user_or_error(options)
    agents = Agent.objects.select_related("role", "project")
    if user is not None:
        agents = agents.filter(project__in=projects_visible_to(user))
    agent = agents.filter(pk=agent_id).first()
    if agent is None:
        raise CommandError(f"Agent {agent_id} does not exist.")
    if user is not None and act and not can_act(user, agent.project_id):
        raise CommandError(f"{user.get_username()} may look at agent {agent_id} but not change it.")
    return agent


def check_repo_for(user: AbstractBaseUser | None, repo: str | None) -> None:
    """With --as-user: the repository must be one of that person's projects (or new: then it
    becomes one of their team's)."""
    if user is not None and repo:
        from agents.services import project_for_person

        run_service(lambda: project_for_person(user=user, repo_path=repo))


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
        add_user_argument(parser)

    def act(self, agent: Agent) -> None:
        raise NotImplementedError

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"], options, act=True)
        run_service(lambda: self.act(agent))
        self.stdout.write(f"{self.done}: {agent.pk}")
