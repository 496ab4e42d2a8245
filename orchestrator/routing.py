from django.urls import path

from agents import consumers
from workflows.consumers import WorkflowConsumer

websocket_urlpatterns = [
    path("ws/agents/", consumers.OverviewConsumer.as_asgi()),
    path("ws/agents/<int:agent_id>/", consumers.AgentConsumer.as_asgi()),
    path("ws/approvals/", consumers.ApprovalsConsumer.as_asgi()),
    path("ws/workflows/<int:workflow_id>/", WorkflowConsumer.as_asgi()),
]
