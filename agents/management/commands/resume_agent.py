from django.core.management.base import BaseCommand

from agents.management.commands._common import agent_or_error, run_service
from agents.services import agent_resume


class Command(BaseCommand):
    help = "Resume a paused agent; it continues the same conversation."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"])
        run_service(lambda: agent_resume(agent=agent))
        self.stdout.write(f"resumed: {agent.pk}")
