from django.core.management.base import BaseCommand

from agents.management.commands._common import agent_or_error, run_service
from agents.services import agent_retry


class Command(BaseCommand):
    help = "Queue a failed or cancelled agent again; it resumes from its transcript."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"])
        run_service(lambda: agent_retry(agent=agent))
        self.stdout.write(f"queued: {agent.pk}")
