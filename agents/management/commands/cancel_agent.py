from django.core.management.base import BaseCommand

from agents.management.commands._common import add_user_argument, agent_or_error, run_service
from agents.services import agent_cancel


class Command(BaseCommand):
    help = "Cancel an agent (with --subtree, also its unfinished descendants)."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)
        add_user_argument(parser)
        parser.add_argument("--subtree", action="store_true")

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"], options, act=True)
        ids = run_service(
            lambda: agent_cancel(
                agent=agent, subtree=options["subtree"], reason="Cancelled from the command line."
            )
        )
        self.stdout.write("cancelled: " + " ".join(str(pk) for pk in ids))
