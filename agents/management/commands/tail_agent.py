import json
import time

from django.core.management.base import BaseCommand

from agents.events import Kind, event_message, tool_activity
from agents.management.commands._common import add_user_argument, agent_or_error
from agents.models import FINISHED_STATUSES, Agent
from agents.selectors import agent_events

POLL_SECONDS = 0.2
MAX_OUTPUT_LINES = 20


class Command(BaseCommand):
    help = (
        "Print an agent's event log (what its dashboard page shows) and follow it live until the "
        "agent finishes. Reads the database, so it works in every mode."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent_id", type=int)
        add_user_argument(parser)
        parser.add_argument("--after", type=int, default=0, help="Start after this sequence number.")
        parser.add_argument("--no-follow", action="store_true", help="Print what there is and stop.")
        parser.add_argument(
            "--json", action="store_true", help="One JSON object per event (the websocket shape)."
        )

    def handle(self, *args, **options):
        agent = agent_or_error(options["agent_id"], options)
        after = options["after"]
        self.mid_line = False  # streamed text may leave the cursor mid-line
        try:
            while True:
                events = agent_events(agent_id=agent.pk, after=after, limit=1000)
                for event in events:
                    self.show(event_message(event, project_id=agent.project_id), as_json=options["json"])
                    after = event.seq
                if events:
                    continue
                status = Agent.objects.filter(pk=agent.pk).values_list("status", flat=True).first()
                if options["no_follow"] or status in FINISHED_STATUSES:
                    self.end_line()
                    if not options["json"]:
                        self.stdout.write(f"agent {agent.pk} is {status}")
                    return
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.end_line()

    def show(self, event: dict, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(event))
            return
        kind, data = event["kind"], event["data"]
        if kind == Kind.TEXT:
            self.stdout.write(data.get("text", ""), ending="")
            self.stdout.flush()
            self.mid_line = not data.get("text", "").endswith("\n")
            return
        self.end_line()
        prefix = f"{event['seq']:>4} {event['created_at'][11:19]} "
        self.stdout.write(prefix + describe(kind, data) + (f" (by {event['by']})" if event["by"] else ""))
        if kind == Kind.TOOL_FINISHED and data.get("output"):
            lines = str(data["output"]).splitlines()
            for line in lines[:MAX_OUTPUT_LINES]:
                self.stdout.write("       │ " + line)
            if len(lines) > MAX_OUTPUT_LINES:
                self.stdout.write(f"       │ … {len(lines) - MAX_OUTPUT_LINES} more lines")

    def end_line(self) -> None:
        if self.mid_line:
            self.stdout.write("")
            self.mid_line = False


def describe(kind: str, data: dict) -> str:
    if kind == Kind.STATUS:
        reason = f": {data['reason']}" if data.get("reason") else ""
        return f"status {data.get('from') or 'new'} → {data.get('to')}{reason}"
    if kind == Kind.TOOL_STARTED:
        return "▶ " + tool_activity(data.get("name", "?"), data.get("input")).replace(": ", " ", 1)
    if kind == Kind.TOOL_FINISHED:
        mark = "✗ error" if data.get("is_error") else "✓"
        return f"{mark} {data.get('name', '')} in {data.get('duration_ms') or 0} ms"
    if kind == Kind.USAGE:
        return (
            f"usage {data.get('input_tokens')} in / {data.get('output_tokens')} out, ${data.get('cost_usd')}"
        )
    if kind == Kind.MESSAGE:
        return f"message from {data.get('sender')}: {data.get('body', '')}"
    if kind == Kind.SPAWNED:
        return f"spawned #{data.get('child')} {data.get('role')}: {data.get('task', '')[:100]}"
    return f"{kind} " + ", ".join(f"{key} {value}" for key, value in data.items())
