"""Writes of the teams app: API tokens."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from agents.errors import OrchestratorError
from teams.models import ApiToken

TOKEN_PREFIX = "orc_"


def token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Make a token; returns it and its secret, which is never shown again."""
    name = (name or "").strip()
    if not name:
        raise OrchestratorError("Name the token (say what script or machine uses it).")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=key[:10], key_hash=token_hash(key))
    return token, key


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_token_user(key: str) -> AbstractBaseUser | None:
    """The active user a token belongs to, or None (unknown or revoked token, inactive user)."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(key or ""), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)  # at most once a minute
    return token.user
