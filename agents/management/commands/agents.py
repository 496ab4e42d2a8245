import json

from django.core.management.base import BaseCommand

from agents.selectors import agent_as_dict, agent_list


class Command(BaseCommand):
    help = "List agents with status, role, tokens and cost."

    def add_arguments(self, parser):
        parser.add_argument("--tree", action="store_true", help="Indent children under their parents.")
        parser.add_argument("--json", action="store_true", help="One JSON list of objects, for scripts.")

    def handle(self, *args, **options):
        agents = agent_list()
        if options["json"]:
            self.stdout.write(json.dumps([agent_as_dict(agent) for agent in agents], indent=2))
            return
        if not options["tree"]:
            agents = agents.order_by("pk")
        header = f"{'ID':>5}  {'ROLE':<24} {'STATUS':<10} {'TOKENS IN':>10} {'OUT':>8} {'COST $':>10}  BRANCH"
        self.stdout.write(header)
        for agent in agents:
            indent = "  " * agent.tree_depth if options["tree"] else ""
            workspace = getattr(agent, "workspace", None)
            self.stdout.write(
                f"{agent.pk:>5}  {(indent + agent.role.name)[:24]:<24} {agent.status:<10} "
                f"{agent.input_tokens:>10} {agent.output_tokens:>8} {agent.cost_usd:>10.4f}  "
                f"{workspace.branch if workspace else '-'}"
            )
