from django.core.management.base import BaseCommand

from agents.lifecycle import agent_archive
from agents.management.commands._common import add_user_argument, agent_or_error, run_service


class Command(BaseCommand):
    help = "Remove a finished agent's worktree (its branch stays); --subtree for its descendants too."

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)
        add_user_argument(parser)
        parser.add_argument("--subtree", action="store_true")

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"], options, act=True)
        archived = run_service(lambda: agent_archive(agent=agent, subtree=options["subtree"]))
        self.stdout.write("archived: " + (" ".join(map(str, archived)) or "nothing (already archived)"))
