"""Dashboard pages: thin; reads come from selectors."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from agents import selectors


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    return render(request, "agents/agent_list.html", {"agents": selectors.agent_list()})


@login_required
def agent_detail(request: HttpRequest, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        raise Http404("No such agent.")
    context = {
        "agent": agent,
        "transcript": selectors.agent_transcript(agent=agent),
        "children": agent.children.select_related("role").order_by("pk"),
        "inbox": agent.inbox.select_related("sender__role").order_by("created_at"),
    }
    return render(request, "agents/agent_detail.html", context)
