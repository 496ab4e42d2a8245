"""How recorded events reach the browsers' websocket consumers. Two transports, one message shape.

- "push" (with Redis): the process that recorded an event sends it through the channel layer
  (channels-redis) to the groups `agent.<id>` and, for summary kinds, `project.<id>`. A pusher
  thread per process owns one event loop, so channels-redis keeps its connections and a slow
  Redis never holds up an agent.
- "tail" (embedded, no Redis): worker processes can't reach the web process's in-memory layer,
  so each web process runs one `EventTail` task while any consumer is connected: it reads events
  newer than the last it saw from the database every ORCHESTRATOR_EVENT_POLL_SECONDS and sends
  them to the same groups in-process.

Either way a group message is {"type": "agent.events", "events": [event_message, ...]}. Nothing
here must be reliable: consumers number what they have shown and fill gaps from the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import F, Max

log = logging.getLogger(__name__)

MESSAGE_TYPE = "agent.events"


def agent_group(agent_id: int) -> str:
    return f"agent.{agent_id}"


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def group_messages(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Batch events into one channel-layer message per group, keeping their order."""
    from agents.events import SUMMARY_KINDS

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        groups[agent_group(event["agent"])].append(event)
        if event["kind"] in SUMMARY_KINDS:
            groups[project_group(event["project"])].append(event)
    return {group: {"type": MESSAGE_TYPE, "events": batch} for group, batch in groups.items()}


def publish(event: dict[str, Any]) -> None:
    """Called after the event's transaction committed. Never blocks and never raises."""
    if settings.ORCHESTRATOR_EVENT_TRANSPORT == "push":
        _pusher().put(event)
    # "tail": the web processes read the database; nothing to do here.


class Pusher(threading.Thread):
    """Sends recorded events through the channel layer from a thread of their own."""

    def __init__(self) -> None:
        super().__init__(name="event-pusher", daemon=True)
        self.queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def put(self, event: dict[str, Any]) -> None:
        self.queue.put(event)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        layer = get_channel_layer()
        while True:
            batch = [self.queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                loop.run_until_complete(_send(layer, batch))
            except Exception:
                # The database has the events; consumers catch up from it.
                log.warning("could not push %d events to the channel layer", len(batch), exc_info=True)


async def _send(layer: Any, events: list[dict[str, Any]]) -> None:
    for group, message in group_messages(events).items():
        await layer.group_send(group, message)


_pusher_lock = threading.Lock()
_pusher_instance: tuple[int, Pusher] | None = None


def _pusher() -> Pusher:
    """One pusher per process (a forked worker starts its own: threads don't survive fork)."""
    global _pusher_instance
    with _pusher_lock:
        if _pusher_instance is None or _pusher_instance[0] != os.getpid():
            pusher = Pusher()
            pusher.start()
            _pusher_instance = (os.getpid(), pusher)
        return _pusher_instance[1]


class EventTail:
    """Embedded transport: one per web process event loop, running while consumers are connected."""

    _by_loop: dict[asyncio.AbstractEventLoop, EventTail] = {}

    def __init__(self) -> None:
        self.subscribers = 0
        self.task: asyncio.Task | None = None

    @classmethod
    async def subscribe(cls) -> None:
        if settings.ORCHESTRATOR_EVENT_TRANSPORT != "tail":
            return
        tail = cls._by_loop.setdefault(asyncio.get_running_loop(), cls())
        tail.subscribers += 1
        if tail.task is None:
            start = await database_sync_to_async(_last_event_id)()
            tail.task = asyncio.create_task(tail.run(start))

    @classmethod
    async def unsubscribe(cls) -> None:
        tail = cls._by_loop.get(asyncio.get_running_loop())
        if tail is None:
            return
        tail.subscribers -= 1
        if tail.subscribers <= 0 and tail.task is not None:
            tail.task.cancel()
            del cls._by_loop[asyncio.get_running_loop()]

    async def run(self, last_id: int) -> None:
        layer = get_channel_layer()
        interval = settings.ORCHESTRATOR_EVENT_POLL_SECONDS
        while True:
            try:
                last_id, events = await database_sync_to_async(_events_since)(last_id)
                for group, message in group_messages(events).items():
                    await layer.group_send(group, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading new events failed; trying again", exc_info=True)
            if len(events) < TAIL_BATCH:
                await asyncio.sleep(interval)


TAIL_BATCH = 1000


def _last_event_id() -> int:
    from agents.models import AgentEvent

    return AgentEvent.objects.aggregate(last=Max("id"))["last"] or 0


def _events_since(last_id: int) -> tuple[int, list[dict[str, Any]]]:
    from agents.events import event_message
    from agents.models import AgentEvent

    rows = list(
        AgentEvent.objects.filter(id__gt=last_id)
        .select_related("by_user")
        .annotate(agent_project_id=F("agent__project_id"))
        .order_by("id")[:TAIL_BATCH]
    )
    if not rows:
        return last_id, []
    return rows[-1].id, [event_message(row, project_id=row.agent_project_id) for row in rows]
