import csv
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from agents.management.commands._common import (
    add_user_argument,
    agent_or_error,
    check_repo_for,
    run_service,
    user_or_error,
)
from agents.services import BATCH_FIELDS, agents_spawn_batch

CSV_NUMBERS = {"parent", "budget_tokens"}


class Command(BaseCommand):
    help = (
        "Spawn a batch of agents from a YAML list or a CSV file (a header row naming the fields). "
        "Fields: role, task, repo, parent, model, budget_usd, budget_tokens, permission_mode, key. "
        "Every entry is checked before any agent is created; an entry with a key that was spawned "
        "before is skipped, so re-running the same file creates nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="A .yaml/.yml file with a list of entries, or a .csv file.")
        parser.add_argument("--quiet", action="store_true", help="Print only the new agents' ids.")
        add_user_argument(parser)

    def handle(self, *args, **options):
        path = Path(options["file"])
        entries = read_csv(path) if path.suffix.lower() == ".csv" else read_yaml(path)
        say = (lambda _: None) if options["quiet"] else (lambda text: self.stderr.write(text))
        user = user_or_error(options)
        for entry in entries:
            if isinstance(entry, dict):
                check_repo_for(user, entry.get("repo"))
                if user is not None and entry.get("parent"):
                    agent_or_error(int(entry["parent"]), options, act=True)
        result = run_service(lambda: agents_spawn_batch(entries=entries, progress=say, spawned_by=user))
        for agent in result.created:
            self.stdout.write(str(agent.pk))
        say(f"created {len(result.created)} agents; skipped {len(result.skipped)} spawned before")


def read_yaml(path: Path) -> list:
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
    return entries


def read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            unknown = set(reader.fieldnames or []) - BATCH_FIELDS
            if not reader.fieldnames:
                raise CommandError(f"{path} is empty: the first row must name the fields.")
            if unknown:
                raise CommandError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}.")
            entries = []
            for row in reader:
                entry = {k: v.strip() for k, v in row.items() if k and v is not None and v.strip()}
                for field in CSV_NUMBERS & set(entry):
                    if not entry[field].isdigit():
                        raise CommandError(
                            f"{path}, line {reader.line_num}: {field} must be a whole number, not {entry[field]!r}."
                        )
                    entry[field] = int(entry[field])
                entries.append(entry)
    except OSError as exc:
        raise CommandError(f"Can't read {path}: {exc.strerror}.") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CommandError(f"{path} is not valid CSV: {exc}.") from None
    return entries
