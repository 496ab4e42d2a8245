from django.core.management.base import BaseCommand

from agents.management.commands._common import agent_or_error, run_service
from agents.services import agent_pause


class Command(BaseCommand):
    help = "Pause an agent where it is (even mid-stream or mid-command); resume_agent continues it."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"])
        run_service(lambda: agent_pause(agent=agent, reason="Paused from the command line."))
        self.stdout.write(f"paused: {agent.pk}")
