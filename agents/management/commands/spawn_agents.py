from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from agents.management.commands._common import run_service
from agents.services import agents_spawn_batch


class Command(BaseCommand):
    help = (
        "Spawn a batch of agents from a YAML file: a list of entries with the fields of spawn_agent "
        "(role, task, repo, parent, model). Every entry is checked before any agent is created."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="YAML file with a list of agents.")

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            entries = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CommandError(f"Can't read {path}: {exc.strerror}.") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}" if where else ""
            raise CommandError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}.") from None
        if not isinstance(entries, list):
            raise CommandError(f"{path} must hold a YAML list of agents, one entry per agent.")
        agents = run_service(lambda: agents_spawn_batch(entries=entries))
        for agent in agents:
            self.stdout.write(str(agent.pk))
