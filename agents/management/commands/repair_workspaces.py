from django.core.management.base import BaseCommand

from agents.lifecycle import workspaces_repair


class Command(BaseCommand):
    help = (
        "Repair what crashed processes left in the projects' repositories: stale index.lock files, "
        "worktree directories no agent owns, lost worktrees of unfinished agents. Worker clusters "
        "run this when they start."
    )

    def handle(self, *args, **options):
        report = workspaces_repair()
        for line in report.repaired:
            self.stdout.write(f"repaired: {line}")
        for line in report.problems:
            self.stderr.write(f"problem: {line}")
        if not report.repaired and not report.problems:
            self.stdout.write("nothing to repair")
