"""API tokens, made and revoked by their owner."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.errors import OrchestratorError
from teams.models import ApiToken
from teams.services import api_token_create, api_token_revoke


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        try:
            _, new_key = api_token_create(user=request.user, name=request.POST.get("name", ""))
        except OrchestratorError as exc:
            messages.error(request, str(exc))
    context = {"tokens": request.user.api_tokens.order_by("-pk"), "new_key": new_key}
    return render(request, "teams/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        raise Http404("No such token.")
    api_token_revoke(token=token)
    messages.success(request, f"Token {token.name} revoked: requests with it are refused from now on.")
    return redirect("teams:tokens")
