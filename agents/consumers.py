"""Websockets of the dashboard: they send the same partial templates the pages render, as htmx
out-of-band swaps. Thin: access checks come from teams.selectors, reads from agents.selectors.

Exactly-once on screen: the agent page's consumer numbers what it has sent (`last_seq`). The page
tells it where it stands (`{"after": N}` on open, or `?after=N`); it sends everything after that
from the database, then live events in order, filling any gap from the database. Pushes may be
lost (a channel layer over capacity) or arrive twice; neither shows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.datastructures import MultiValueDict

from agents import selectors
from agents.events import SUMMARY_KINDS, Kind
from agents.fanout import EventTail, agent_group, project_group
from agents.models import Agent
from teams.selectors import can_act, projects_visible_to

REFUSED = 4403  # close code for "not allowed" (the browser doesn't reconnect)
HEAL_SECONDS = 2.0  # how often a quiet agent page checks the database for events it missed
CATCH_UP_BATCH = 500


class LiveConsumer(AsyncWebsocketConsumer):
    """Joins groups after an access check; subscribes this process to the event tail if needed."""

    joined: list[str]

    async def connect(self) -> None:
        self.joined = []
        self.user = self.scope.get("user")
        self.query = MultiValueDict(parse_qs(self.scope.get("query_string", b"").decode()))
        if self.user is None or not self.user.is_authenticated or not await self.authorize():
            await self.close(code=REFUSED)
            return
        await self.accept()
        await EventTail.subscribe()
        for group in self.groups_to_join():
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        await self.ready()

    async def disconnect(self, code: int) -> None:
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.joined:
            await EventTail.unsubscribe()

    async def authorize(self) -> bool:
        raise NotImplementedError

    def groups_to_join(self) -> list[str]:
        raise NotImplementedError

    async def ready(self) -> None:
        """Connected and subscribed."""

    def csrf_token(self) -> str:
        """For the forms in re-rendered fragments: the cookie's secret is a valid form token."""
        return self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")


class AgentConsumer(LiveConsumer):
    """One agent's page: its log, header (status, spend, controls) and children."""

    async def authorize(self) -> bool:
        self.agent_id = int(self.scope["url_route"]["kwargs"]["agent_id"])
        self.last_seq: int | None = None
        self.lock = asyncio.Lock()
        found = await database_sync_to_async(self._load)()
        return found

    def _load(self) -> bool:
        agent = selectors.agent_visible(user=self.user, agent_id=self.agent_id)
        if agent is None:
            return False
        self.project_id = agent.project_id
        self.may_act = can_act(self.user, agent.project_id)
        self.child_ids = set(agent.children.values_list("pk", flat=True))
        return True

    def groups_to_join(self) -> list[str]:
        return [agent_group(self.agent_id), project_group(self.project_id)]

    async def ready(self) -> None:
        after = self.query.get("after")
        if after is not None and after.isdigit():
            await self.catch_up(int(after))
        self.healer = asyncio.create_task(self.heal())

    async def disconnect(self, code: int) -> None:
        if getattr(self, "healer", None):
            self.healer.cancel()
        await super().disconnect(code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page says where it stands: {"after": N} (sent on every open and reopen)."""
        try:
            after = int(json.loads(text_data or "{}")["after"])
        except (ValueError, KeyError, TypeError):
            await self.send(text_data=_flash("Could not understand the page's message; reload it."))
            return
        await self.catch_up(after, restart=True)

    async def agent_events(self, message: dict[str, Any]) -> None:
        own = sorted((e for e in message["events"] if e["agent"] == self.agent_id), key=lambda e: e["seq"])
        children = {e["agent"] for e in message["events"] if e["agent"] in self.child_ids}
        children |= {e["data"].get("child") for e in own if e["kind"] == Kind.SPAWNED}
        async with self.lock:
            if own and self.last_seq is not None and own[-1]["seq"] > self.last_seq:
                fresh = [e for e in own if e["seq"] > self.last_seq]
                contiguous = fresh[0]["seq"] == self.last_seq + 1 and all(
                    b["seq"] == a["seq"] + 1 for a, b in itertools.pairwise(fresh)
                )
                if contiguous:
                    await self._send_events(fresh)
                else:
                    await self._catch_up_locked(self.last_seq)  # a gap: the database has it
        if children - {None}:
            self.child_ids |= children - {None}
            html = await database_sync_to_async(self._render_children)()
            await self.send(text_data=html)

    async def catch_up(self, after: int, restart: bool = False) -> None:
        async with self.lock:
            if restart or self.last_seq is None or after > self.last_seq:
                self.last_seq = after
            await self._catch_up_locked(self.last_seq)

    async def _catch_up_locked(self, after: int) -> None:
        while True:
            events = await database_sync_to_async(self._events_after)(after)
            if not events:
                return
            await self._send_events(events)
            after = events[-1]["seq"]
            if len(events) < CATCH_UP_BATCH:
                return

    async def _send_events(self, events: list[dict[str, Any]]) -> None:
        """Render and send events that follow `last_seq` without a gap (caller holds the lock)."""
        html = await database_sync_to_async(self._render_events)(events)
        await self.send(text_data=html)
        self.last_seq = events[-1]["seq"]

    async def heal(self) -> None:
        """Catch the last events of a burst whose push was lost (nothing newer reveals the gap)."""
        while True:
            await asyncio.sleep(HEAL_SECONDS)
            if self.last_seq is None:
                continue
            latest = await database_sync_to_async(self._latest_seq)()
            if latest > self.last_seq:
                async with self.lock:
                    await self._catch_up_locked(self.last_seq)

    # --- database and templates (run in a thread) ---
    def _latest_seq(self) -> int:
        return Agent.objects.filter(pk=self.agent_id).values_list("last_event_seq", flat=True).first() or 0

    def _events_after(self, after: int) -> list[dict[str, Any]]:
        from agents.events import event_message

        return [
            event_message(e, project_id=self.project_id)
            for e in selectors.agent_events(agent_id=self.agent_id, after=after, limit=CATCH_UP_BATCH)
        ]

    def _render_events(self, events: list[dict[str, Any]]) -> str:
        parts = [
            f'<div hx-swap-oob="beforeend:#events">{render_to_string("agents/_log_item.html", {"item": item})}</div>'
            if item["kind"] != Kind.TOOL_FINISHED
            else render_to_string("agents/_log_item.html", {"item": item})
            for item in selectors.log_items(events, merge=False)
        ]
        if any(e["kind"] in SUMMARY_KINDS for e in events):
            parts.append(self._render_header())
        parts.append(f'<div id="events-cursor" data-seq="{events[-1]["seq"]}" hx-swap-oob="true"></div>')
        return "".join(parts)

    def _render_header(self) -> str:
        agent = selectors.agent_visible(user=self.user, agent_id=self.agent_id)
        if agent is None:
            return ""
        context = {"agent": agent, "can_act": self.may_act, "oob": True, "csrf_token": self.csrf_token()}
        return render_to_string("agents/_agent_header.html", context)

    def _render_children(self) -> str:
        children = selectors.agent_rows(agent_ids=sorted(self.child_ids, reverse=True))
        return render_to_string("agents/_children.html", {"children": children, "oob": True})


class OverviewConsumer(LiveConsumer):
    """The agents overview: rows change in place; new agents appear (first page only)."""

    async def authorize(self) -> bool:
        self.project_ids = await database_sync_to_async(self._visible_projects)()
        return True

    def _visible_projects(self) -> list[int]:
        projects = projects_visible_to(self.user)
        wanted = self.query.get("project")
        if wanted and wanted.isdigit():
            projects = projects.filter(pk=int(wanted))
        return list(projects.values_list("pk", flat=True))

    def groups_to_join(self) -> list[str]:
        return [project_group(pk) for pk in self.project_ids]

    async def agent_events(self, message: dict[str, Any]) -> None:
        changed: dict[int, None] = {}
        new: dict[int, None] = {}
        for event in message["events"]:
            if event["kind"] in SUMMARY_KINDS:
                changed[event["agent"]] = None
            if event["kind"] == Kind.STATUS and event["data"].get("from") is None:
                new[event["agent"]] = None
        if changed:
            html = await database_sync_to_async(self._render_rows)(list(changed), set(new))
            if html:
                await self.send(text_data=html)

    def _render_rows(self, agent_ids: list[int], new: set[int]) -> str:
        first_page_unfiltered = self.query.get("page", "1") == "1" and not self.query.get("status")
        parts = []
        for agent in selectors.agent_rows(agent_ids=agent_ids):
            if agent.pk in new:
                if not first_page_unfiltered:
                    continue
                where = f"afterend:#agent-{agent.parent_id}" if agent.parent_id else "afterbegin:#agent-rows"
                row = render_to_string("agents/_agent_row.html", {"agent": agent})
                parts.append(f'<tbody hx-swap-oob="{where}">{row}</tbody>')  # inserts its rows
            else:
                parts.append(render_to_string("agents/_agent_row.html", {"agent": agent, "oob": "true"}))
        return "".join(parts)


def _flash(text: str) -> str:
    return render_to_string("agents/_flash.html", {"text": text, "error": True})


class ApprovalsConsumer(OverviewConsumer):
    """The team's approval inbox: re-rendered when a request is made, decided or escalated."""

    async def agent_events(self, message: dict[str, Any]) -> None:
        if any(e["kind"].startswith("approval_") for e in message["events"]):
            await self.send(text_data=await database_sync_to_async(self._render_inbox)())

    def _render_inbox(self) -> str:
        context = {**selectors.approvals_inbox(self.user), "oob": True, "csrf_token": self.csrf_token()}
        return render_to_string("agents/_inbox.html", context)
