"""The event log: everything that happens to an agent, numbered per agent, stored first, pushed second.

`event_record` writes the event inside the caller's transaction and, once that commits, hands it
to `agents.fanout` for delivery to browsers. Delivery may drop or delay (a channel layer over
capacity, a web process restarting); the database never does, and every reader catches up by
asking for `seq > last seen` (see `agents.selectors.agent_events`).

Sequence numbers come from `Agent.last_event_seq`, bumped by one UPDATE that also takes the agent
row's lock until commit, so numbers are given out in commit order with no gaps. With
`lease_token`, the UPDATE is also the fence: a worker that lost its lease records nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from agents import fanout
from agents.models import Agent, AgentEvent


class Kind:
    """Event kinds. The dashboard renders each; `tail_agent` prints each."""

    STATUS = "status"  # {from, to, reason}
    TEXT = "text"  # {text}: streamed model text, in chunks
    TOOL_STARTED = "tool_started"  # {id, name, input}
    TOOL_FINISHED = "tool_finished"  # {id, name, output, truncated, is_error, duration_ms}
    USAGE = "usage"  # {input_tokens, output_tokens, cache_*_tokens, cost_usd}
    MESSAGE = "message"  # {sender, body, kind}: mail for this agent
    SPAWNED = "spawned"  # {child, role, task}
    BUDGET_ALERT = "budget_alert"
    BUDGET_WAIT = "budget_wait"
    BUDGET_OVERRUN = "budget_overrun"
    BUDGET_CHANGED = "budget_changed"  # {limit_usd, limit_tokens, note}


# Kinds that change what a row of the overview shows; the project's group gets only these
# (streamed text goes to the agent's own page only).
SUMMARY_KINDS = frozenset(
    {
        Kind.STATUS,
        Kind.TOOL_STARTED,
        Kind.TOOL_FINISHED,
        Kind.USAGE,
        Kind.SPAWNED,
        Kind.BUDGET_ALERT,
        Kind.BUDGET_WAIT,
        Kind.BUDGET_OVERRUN,
        Kind.BUDGET_CHANGED,
        "approval_requested",
        "approval_decided",
        "approval_escalated",
    }
)

MAX_STRING = 20_000  # characters of any one string in an event (tool inputs, outputs, messages)
MAX_OUTPUT = 8_000  # characters of a tool's output kept in its event (the transcript has it all)

_table = Agent._meta.db_table


def event_record(
    agent_id: int,
    kind: str,
    data: Mapping[str, Any] | None = None,
    *,
    by: AbstractBaseUser | None = None,
    lease_token: Any = None,
    activity: str | None = None,
) -> AgentEvent | None:
    """Append an event to the agent's log; publish it once the transaction commits.

    `activity` also sets what the overview says the agent is doing. With `lease_token`, the
    event is recorded only if that lease still holds the agent (returns None otherwise).
    """
    sets, params = ["last_event_seq = last_event_seq + 1"], []
    if activity is not None:
        sets.append("activity = %s")
        params.append(activity[:200])
    where, where_params = ["id = %s"], [agent_id]
    if lease_token is not None:
        where.append("lease_token = %s")
        where_params.append(Agent._meta.get_field("lease_token").get_db_prep_value(lease_token, connection))
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        # One statement numbers the event, locks the agent row until commit and fences the writer.
        cursor.execute(
            f"UPDATE {_table} SET {', '.join(sets)} WHERE {' AND '.join(where)} "
            "RETURNING last_event_seq, project_id",
            params + where_params,
        )
        row = cursor.fetchone()
        if row is None:
            return None
        seq, project_id = row
        return _store(agent_id, project_id, seq, kind, data, by)


def event_record_first(agent: Agent, data: Mapping[str, Any], *, by: AbstractBaseUser | None = None) -> None:
    """The first event of an agent created with `last_event_seq=1` (no UPDATE needed)."""
    _store(agent.pk, agent.project_id, 1, Kind.STATUS, data, by)


def _store(
    agent_id: int,
    project_id: int,
    seq: int,
    kind: str,
    data: Mapping[str, Any] | None,
    by: AbstractBaseUser | None,
) -> AgentEvent:
    """Write the numbered event; publish it once the transaction commits."""
    event = AgentEvent.objects.create(agent_id=agent_id, seq=seq, kind=kind, data=_clean(data), by_user=by)
    message = event_message(event, project_id=project_id)
    transaction.on_commit(lambda: fanout.publish(message))
    return event


def event_message(event: AgentEvent, *, project_id: int) -> dict[str, Any]:
    """An event as JSON primitives (what travels through the channel layer and the API)."""
    return {
        "agent": event.agent_id,
        "project": project_id,
        "seq": event.seq,
        "kind": event.kind,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
        "by": event.by_user.get_username() if event.by_user_id else None,
    }


def _clean(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON primitives only, strings bounded: a UUID, datetime or Decimal becomes a string here,
    so what is stored is exactly what travels through any channel layer (msgpack included)."""
    return bounded(json.loads(json.dumps(dict(data or {}), cls=DjangoJSONEncoder)))


def bounded(value: Any, limit: int = MAX_STRING) -> Any:
    """The value with every string cut to `limit` characters (an event is for people to read)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"… [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {key: bounded(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(item, limit) for item in value]
    return value


def tool_activity(name: str, tool_input: Any) -> str:
    """A one-line summary of a tool call for the overview: `Bash: pytest -q`."""
    detail = ""
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "path", "pattern", "role", "to"):
            if isinstance(tool_input.get(key), str | int):
                detail = str(tool_input[key])
                break
    detail = " ".join(detail.split())
    return f"{name}: {detail[:150]}" if detail else name
