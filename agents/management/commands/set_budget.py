from django.core.management.base import BaseCommand

from agents.management.commands._common import add_user_argument, agent_or_error, run_service
from budgets.services import budget_set


class Command(BaseCommand):
    help = "Raise or lower an agent's budget; an agent waiting for budget carries on."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)
        add_user_argument(parser)
        parser.add_argument("--usd", help="New dollar limit.")
        parser.add_argument("--tokens", help="New token limit.")

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"], options, act=True)
        budget = run_service(
            lambda: budget_set(
                agent=agent, usd=options["usd"], tokens=options["tokens"], note="set_budget command"
            )
        )
        self.stdout.write(
            f"agent {agent.pk}: limit ${budget.limit_usd}, spent ${budget.spent_usd}, reserved ${budget.reserved_usd}"
        )
