import json

from django.core.management.base import BaseCommand

from agents.management.commands._common import add_user_argument, user_or_error
from agents.selectors import agent_as_dict, agent_list
from teams.selectors import projects_visible_to


class Command(BaseCommand):
    help = "List agents with status, role, tokens and cost."

    def add_arguments(self, parser):
        parser.add_argument("--tree", action="store_true", help="Indent children under their parents.")
        parser.add_argument("--json", action="store_true", help="One JSON list of objects, for scripts.")
        add_user_argument(parser)

    def handle(self, *args, **options):
        agents = agent_list()
        user = user_or_error(options)
        if user is not None:
            agents = agents.tree_filter(project__in=projects_visible_to(user))
        if options["json"]:
            self.stdout.write(json.dumps([agent_as_dict(agent) for agent in agents], indent=2))
            return
        if not options["tree"]:
            agents = agents.order_by("pk")
        header = (
            f"{'ID':>5}  {'ROLE':<22} {'STATUS':<10} {'TOKENS IN':>10} {'OUT':>8} "
            f"{'SPENT $':>10} {'RESERVED $':>10} {'BUDGET $':>10}  BRANCH / WHY IT WAITS"
        )
        self.stdout.write(header)
        for agent in agents:
            indent = "  " * agent.tree_depth if options["tree"] else ""
            workspace = getattr(agent, "workspace", None)
            budget = getattr(agent, "budget", None)
            limit = f"{budget.limit_usd:.4f}" if budget and budget.limit_usd is not None else "-"
            reserved = budget.reserved_usd if budget else 0
            note = (
                agent.status_reason if agent.status == "waiting" else (workspace.branch if workspace else "-")
            )
            self.stdout.write(
                f"{agent.pk:>5}  {(indent + agent.role.name)[:22]:<22} {agent.status:<10} "
                f"{agent.input_tokens:>10} {agent.output_tokens:>8} {agent.cost_usd:>10.4f} "
                f"{reserved:>10.4f} {limit:>10}  {note}"
            )
