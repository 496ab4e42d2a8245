"""The event log and its websockets: stored first, pushed second, caught up exactly once."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client

from agents.events import Kind, event_record
from agents.models import Agent, AgentEvent, Project, Role
from orchestrator.asgi import application
from teams.models import Membership, Team, TeamRole

pytestmark = pytest.mark.django_db(transaction=True)
SEQ = re.compile(r'<li class="ev [^"]*" data-seq="(\d+)"')


@pytest.fixture
def world(seeded):
    """Two teams, each with a project, an agent and a member."""
    users, agents = {}, {}
    for name in ("red", "blue"):
        team = Team.objects.create(name=name)
        project = Project.objects.create(
            name=name, repo_path=f"/nowhere/{name}", base_branch="main", team=team
        )
        user = get_user_model().objects.create_user(username=name, password="pw")
        Membership.objects.create(team=team, user=user, role=TeamRole.MEMBER)
        agents[name] = Agent.objects.create(
            project=project, role=Role.objects.get(name="implementer"), task=f"{name} work", model="m"
        )
        users[name] = user
    return {name: cookie_for(user) for name, user in users.items()}, agents


def cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(path: str, cookie: bytes | None = None, origin: bytes = b"http://localhost"):
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


def record(agent_id: int, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        event_record(agent_id, Kind.TEXT, {"text": f"line {i}\n"})


async def receive_seqs(ws: WebsocketCommunicator, until: int, timeout: float = 5) -> list[int]:
    """Collect the event numbers the socket sends until it has sent `until`."""
    seen: list[int] = []
    while not seen or seen[-1] < until:
        html = await ws.receive_from(timeout=timeout)
        seen.extend(int(s) for s in SEQ.findall(html))
    return seen


def test_anonymous_foreign_origin_and_other_teams_are_refused(world):
    cookies, agents = world

    async def scenario():
        for ws in (
            communicator(f"/ws/agents/{agents['red'].pk}/"),  # anonymous
            communicator(f"/ws/agents/{agents['red'].pk}/", cookies["red"], origin=b"http://evil.example"),
            communicator(f"/ws/agents/{agents['red'].pk}/", cookies["blue"]),  # another team's member
            communicator("/ws/agents/999999/", cookies["red"]),
        ):
            connected, _ = await ws.connect()
            assert not connected
            await ws.disconnect()
        ws = communicator(f"/ws/agents/{agents['red'].pk}/", cookies["red"])
        connected, _ = await ws.connect()
        assert connected
        await ws.disconnect()

    async_to_sync(scenario)()


def test_a_member_receives_live_events_and_a_reconnect_gets_exactly_the_missed_ones(world):
    cookies, agents = world
    agent = agents["red"]
    record(agent.pk, 3)

    async def scenario():
        ws = communicator(f"/ws/agents/{agent.pk}/?after=0", cookies["red"])
        assert (await ws.connect())[0]
        assert await receive_seqs(ws, until=3) == [1, 2, 3]
        await database_sync_to_async(record)(agent.pk, 2, start=3)  # written by "a worker"
        assert await receive_seqs(ws, until=5) == [4, 5]
        await ws.disconnect()

        await database_sync_to_async(record)(agent.pk, 4, start=5)  # while the page was away
        ws = communicator(f"/ws/agents/{agent.pk}/", cookies["red"])
        assert (await ws.connect())[0]
        await ws.send_json_to({"after": 5})
        assert await receive_seqs(ws, until=9) == [6, 7, 8, 9]
        await asyncio.sleep(0.5)  # the tail or the push would deliver duplicates by now
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    async_to_sync(scenario)()


def test_a_lost_push_is_filled_from_the_database(world, settings):
    """Events 2 and 3 never reach the consumer through the layer; event 4 does: it sends 2, 3, 4."""
    from agents.events import event_message
    from agents.fanout import agent_group

    cookies, agents = world
    agent = agents["red"]
    settings.ORCHESTRATOR_EVENT_TRANSPORT = "none"  # only what this test sends by hand arrives
    record(agent.pk, 4)
    last = AgentEvent.objects.get(agent=agent, seq=4)

    async def scenario():
        from channels.layers import get_channel_layer

        ws = communicator(f"/ws/agents/{agent.pk}/", cookies["red"])
        assert (await ws.connect())[0]
        await ws.send_json_to({"after": 1})
        assert await receive_seqs(ws, until=4) == [2, 3, 4]
        await database_sync_to_async(record)(agent.pk, 2, start=4)  # 5 and 6: pushes "lost"
        newest = await database_sync_to_async(AgentEvent.objects.get)(agent=agent, seq=6)
        # A late duplicate of 4 and the push of 6 (5's was lost): the consumer sends 5 and 6 once.
        await get_channel_layer().group_send(
            agent_group(agent.pk),
            {
                "type": "agent.events",
                "events": [
                    event_message(last, project_id=agent.project_id),
                    event_message(newest, project_id=agent.project_id),
                ],
            },
        )
        assert await receive_seqs(ws, until=6) == [5, 6]
        await ws.disconnect()

    async_to_sync(scenario)()


def test_the_overview_socket_updates_rows_of_visible_projects_only(world):
    cookies, agents = world

    async def scenario():
        ws = communicator("/ws/agents/?page=1", cookies["red"])
        assert (await ws.connect())[0]
        for name in ("blue", "red"):
            await database_sync_to_async(event_record)(
                agents[name].pk,
                Kind.TOOL_STARTED,
                {"id": "t1", "name": "Bash", "input": {"command": "make"}},
                activity="Bash: make",
            )
        html = await ws.receive_from(timeout=5)
        assert f'id="agent-{agents["red"].pk}"' in html and 'hx-swap-oob="true"' in html
        assert f'id="agent-{agents["blue"].pk}"' not in html
        assert await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()

    async_to_sync(scenario)()


def test_event_data_with_uuids_datetimes_and_decimals_travels_through_channels_redis(world):
    """Stored as JSON primitives, so msgpack (channels-redis) carries the event unchanged."""
    from channels_redis.core import RedisChannelLayer

    from agents.events import event_message
    from agents.fanout import agent_group, group_messages

    _, agents = world
    odd = {"id": uuid.uuid4(), "at": datetime(2026, 11, 24, 9, 0, tzinfo=UTC), "usd": Decimal("0.000123")}
    event = event_record(agents["red"].pk, Kind.BUDGET_CHANGED, odd)
    message = event_message(event, project_id=agents["red"].project_id)
    assert message["data"] == {"id": str(odd["id"]), "at": "2026-11-24T09:00:00Z", "usd": "0.000123"}
    layer = RedisChannelLayer(
        hosts=[settings.REDIS_URL or "redis://127.0.0.1:6379/0"], prefix=f"test-{uuid.uuid4().hex[:8]}"
    )

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("agent.check", channel)
        payload = group_messages([message])[agent_group(agents["red"].pk)]
        await layer.group_send("agent.check", payload)
        received = await asyncio.wait_for(layer.receive(channel), timeout=5)
        await layer.flush()
        return received

    received = async_to_sync(scenario)()
    assert received["events"] == [message]


def test_tail_agent_prints_the_log_and_follows_until_the_agent_finishes(world):
    _, agents = world
    agent = agents["red"]
    event_record(agent.pk, Kind.TOOL_STARTED, {"id": "t1", "name": "Bash", "input": {"command": "ls"}})
    out = StringIO()

    def tail():
        try:
            call_command("tail_agent", str(agent.pk), stdout=out)
        finally:
            connection.close()

    follower = threading.Thread(target=tail)
    follower.start()
    time.sleep(0.5)
    assert follower.is_alive()  # still following: the agent has not finished
    event_record(
        agent.pk, Kind.TOOL_FINISHED, {"id": "t1", "name": "Bash", "output": "README.md", "is_error": False}
    )
    event_record(agent.pk, Kind.TEXT, {"text": "Listed the files."})
    Agent.objects.filter(pk=agent.pk).update(status="completed")
    follower.join(timeout=5)
    assert not follower.is_alive()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("   1 ") and "▶ Bash ls" in lines[0]
    assert "✓ Bash" in lines[1] and lines[2].endswith("│ README.md")
    assert lines[3:] == ["Listed the files.", f"agent {agent.pk} is completed"]
