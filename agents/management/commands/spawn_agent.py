from django.core.management.base import BaseCommand, CommandError

from agents.management.commands._common import (
    add_user_argument,
    agent_or_error,
    check_repo_for,
    run_service,
    user_or_error,
    wait_for_subtree,
)
from agents.models import AgentStatus
from agents.services import agent_spawn


class Command(BaseCommand):
    help = "Spawn one agent and print its id. With --wait, block until it and its children finish."

    def add_arguments(self, parser):
        parser.add_argument("--role", required=True, help="spec-writer, planner, implementer, ...")
        parser.add_argument("--task", required=True, help="What the agent should do.")
        parser.add_argument(
            "--repo", help="Path of the git repository it works on (not needed with --parent)."
        )
        parser.add_argument("--parent", type=int, help="Id of the parent agent.")
        parser.add_argument(
            "--model", help="Model id (default: the role's, else ORCHESTRATOR_DEFAULT_MODEL)."
        )
        parser.add_argument("--budget-usd", help="Dollar limit (for a child: carved out of its parent's).")
        parser.add_argument("--budget-tokens", help="Token limit.")
        parser.add_argument(
            "--permission-mode",
            choices=["ask", "accept-edits", "plan", "auto"],
            help="Default: the role's. ask: every change needs approval; accept-edits: edits allowed, Bash "
            "asks; plan: read-only tools; auto: the project's rules decide.",
        )
        parser.add_argument("--wait", action="store_true", help="Wait for the agent and its descendants.")
        add_user_argument(parser)
        parser.add_argument("--timeout", type=float, help="With --wait: give up after this many seconds.")

    def handle(self, *args, **options):
        user = user_or_error(options)
        check_repo_for(user, options["repo"])
        if user is not None and options["parent"]:
            agent_or_error(options["parent"], options, act=True)
        agent = run_service(
            lambda: agent_spawn(
                role=options["role"],
                task=options["task"],
                repo_path=options["repo"],
                parent=options["parent"],
                model=options["model"],
                budget_usd=options["budget_usd"],
                budget_tokens=options["budget_tokens"],
                permission_mode=options["permission_mode"],
                spawned_by=user,
            )
        )
        self.stdout.write(str(agent.pk))
        if not options["wait"]:
            return
        agent = wait_for_subtree(agent, timeout=options["timeout"])
        self.stdout.write(f"status: {agent.status}")
        if agent.status_reason:
            self.stdout.write(f"reason: {agent.status_reason}")
        self.stdout.write(
            f"tokens: {agent.input_tokens} in, {agent.output_tokens} out, "
            f"{agent.cache_write_tokens} cache write, {agent.cache_read_tokens} cache read"
        )
        self.stdout.write(f"cost: ${agent.cost_usd}")
        if agent.result:
            self.stdout.write(f"result:\n{agent.result}")
        if agent.status != AgentStatus.COMPLETED:
            raise CommandError(f"Agent {agent.pk} {agent.status}: {agent.status_reason or 'no reason given'}")
