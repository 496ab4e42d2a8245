"""Liveness and readiness, for container health checks and load balancers.

`/healthz` says the process serves requests: it touches no database, Redis or session.
`/readyz` says it can do its work: the database answers, Redis answers (when configured) and every
migration is applied. A failed check is reported by name with its reason, never as a traceback.
Both keep Django's host validation: ask with a host in ALLOWED_HOSTS (docs/deploy.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 2


@require_safe
@never_cache
@login_not_required
async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
@login_not_required
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _run(_database)}
    if checks["database"]["ok"]:
        checks["migrations"] = _run(_migrations)
    else:
        checks["migrations"] = {"ok": False, "detail": "not checked: the database is unavailable"}
    checks["redis"] = _run(_redis)
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


def _run(check: Callable[[], str]) -> dict:
    try:
        return {"ok": True, "detail": check()}
    except Exception as exc:
        reason = _first_line(exc)
        log.warning("readiness check %s failed: %s", check.__name__.lstrip("_"), reason)
        return {"ok": False, "detail": reason}


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan)
        raise UnappliedMigrations(f"{len(plan)} not applied: {names}")
    return "all applied"


def _redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "PONG"


class UnappliedMigrations(Exception):
    """The code expects migrations the database does not have yet."""
