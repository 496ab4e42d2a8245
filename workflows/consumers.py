"""The workflow page's websocket: the graph is re-rendered when one of its agents changes."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from agents.consumers import LiveConsumer
from agents.events import Kind
from agents.fanout import project_group
from workflows.selectors import workflows_visible_to


class WorkflowConsumer(LiveConsumer):
    async def authorize(self) -> bool:
        self.workflow_id = int(self.scope["url_route"]["kwargs"]["workflow_id"])
        return await database_sync_to_async(self._load)()

    def _load(self) -> bool:
        workflow = workflows_visible_to(self.user).filter(pk=self.workflow_id).first()
        if workflow is None:
            return False
        self.project_id = workflow.project_id
        return True

    def groups_to_join(self) -> list[str]:
        return [project_group(self.project_id)]

    async def agent_events(self, message: dict[str, Any]) -> None:
        # Status and cost changes of the project's agents (new step agents included).
        if any(e["kind"] in (Kind.STATUS, Kind.USAGE) for e in message["events"]):
            html = await database_sync_to_async(self._render)()
            if html:
                await self.send(text_data=html)

    def _render(self) -> str:
        from workflows.views import graph_context

        workflow = workflows_visible_to(self.user).filter(pk=self.workflow_id).first()
        if workflow is None:
            return ""
        context = {**graph_context(workflow, self.user), "oob": True, "csrf_token": self.csrf_token()}
        return render_to_string("workflows/_graph.html", context)
