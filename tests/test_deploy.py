"""Hosted mode: production settings, health endpoints, structured logs and docker-compose.yml."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from django.core.management.utils import get_random_secret_key
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.utils import OperationalError

from orchestrator.logging import JsonFormatter

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def compose_command(service: dict) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-c"], "compose runs the Procfile's shell command"
    return command[2].replace("$$", "$")  # compose's escape for a literal $


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_names_web_worker_postgres_and_redis():
    compose = compose_file()
    assert {"web", "worker", "postgres", "redis"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    assert compose["services"]["redis"]["image"].startswith("redis:")
    for name in ("web", "worker"):
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")


def test_compose_commands_match_the_procfile():
    compose = compose_file()
    processes = procfile()
    assert set(processes) == {"web", "worker"}
    # web migrates first, then runs exactly the Procfile's command
    assert compose_command(compose["services"]["web"]).endswith("&& " + processes["web"])
    assert compose_command(compose["services"]["worker"]) == processes["worker"]


def test_compose_services_have_health_checks_and_start_in_order():
    services = compose_file()["services"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    # the health check asks for http://127.0.0.1:8000 from inside the container
    assert services["web"]["environment"]["ALLOWED_HOSTS"].endswith(",127.0.0.1")
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"
    # web migrates before it answers its health check, so workers start on a migrated database
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_compose_services_can_be_scaled():
    services = compose_file()["services"]
    assert not any("container_name" in service for service in services.values())
    assert "ports" not in services["worker"]
    # one published port, on loopback unless ORCHESTRATOR_PUBLISH says otherwise
    assert services["web"]["ports"] == ["${ORCHESTRATOR_PUBLISH:-127.0.0.1:8000}:8000"]


def test_compose_hard_codes_no_secret():
    compose = compose_file()
    app_env = compose["services"]["web"]["environment"]
    assert app_env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "required, no default"
    assert compose["services"]["web"]["env_file"] == [{"path": ".env", "required": False}]
    # the only default is the documented development password of the bundled PostgreSQL
    assert "${POSTGRES_PASSWORD:-orchestrator}@" in app_env["DATABASE_URL"]
    assert (
        compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == "${POSTGRES_PASSWORD:-orchestrator}"
    )
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN|API_KEY", key):
                assert str(value).startswith("${"), f"{name}: {key} is hard-coded"


# --- production settings --------------------------------------------------------------------


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh process with only `env` (and PATH) as its configuration."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def production_env() -> dict[str, str]:
    return {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "SECRET_KEY": get_random_secret_key(),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "orchestrator.example.com",
    }


def test_production_settings_pass_check_deploy(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_plain_http_switch_is_a_choice_check_deploy_warns_about(tmp_path):
    env = {**production_env(), "ORCHESTRATOR_HTTPS": "false"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_secret_key_is_read_as_is(tmp_path):
    key = "$" + get_random_secret_key()[1:]  # django-environ would look up a variable by that name
    env = {**production_env(), "SECRET_KEY": key}
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        env=env,
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key


SHOW_HTTPS_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
    "getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
)


def test_local_use_stays_on_plain_http(tmp_path):
    result = manage("shell", "--no-imports", "-c", SHOW_HTTPS_SETTINGS, env={}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "0", "None"]


def test_behind_a_tls_proxy_https_comes_from_x_forwarded_proto(tmp_path):
    env = {**production_env(), "ORCHESTRATOR_BEHIND_TLS_PROXY": "true"}
    result = manage("shell", "--no-imports", "-c", SHOW_HTTPS_SETTINGS, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == ["True", "True", "True", "31536000"]
    assert "HTTP_X_FORWARDED_PROTO" in result.stdout


# --- health and readiness -------------------------------------------------------------------


def test_healthz_answers_without_database_or_session(client):
    # No `db` fixture: any query here would fail the test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "sessionid" not in response.cookies
    assert "no-store" in response["Cache-Control"]


def test_health_endpoints_are_not_redirected_to_https(db, client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301


def test_readyz_reports_each_check(db, client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "redis"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["migrations"]["detail"] == "all applied"
    assert "no-store" in response["Cache-Control"]


def test_readyz_is_503_with_the_reason_when_the_database_fails(db, client, monkeypatch):
    def refuse(self):
        raise OperationalError(
            'connection to server at "db" failed: Connection refused\nIs the server running?'
        )

    with monkeypatch.context() as patch:  # undone before the test database is rolled back
        patch.setattr(type(connections["default"]), "ensure_connection", refuse)
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {
        "ok": False,
        "detail": 'OperationalError: connection to server at "db" failed: Connection refused',
    }
    assert body["checks"]["migrations"]["ok"] is False
    assert "Traceback" not in response.content.decode()


def test_readyz_is_503_when_migrations_are_not_applied(db, client, monkeypatch):
    monkeypatch.setattr(
        MigrationExecutor,
        "migration_plan",
        lambda self, targets: [(Migration("0099_later", "agents"), False)],
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == {
        "ok": False,
        "detail": "UnappliedMigrations: 1 not applied: agents.0099_later",
    }


def test_readyz_is_503_when_redis_does_not_answer(db, client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    response = client.get("/readyz")
    assert response.status_code == 503
    redis_check = response.json()["checks"]["redis"]
    assert redis_check["ok"] is False
    assert redis_check["detail"].startswith("ConnectionError:")


# --- structured logs ------------------------------------------------------------------------


def test_json_formatter_writes_one_object_with_extra_fields_and_the_exception():
    logger = logging.getLogger("agents.execution")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "agent %s failed", (7,), sys.exc_info(),
            extra={"agent_id": 7, "worker": object()},
        )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "agents.execution"
    assert entry["message"] == "agent 7 failed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    assert entry["exc_info"].startswith("Traceback") and "ValueError: boom" in entry["exc_info"]
    assert entry["agent_id"] == 7
    assert entry["worker"].startswith("<object object")
    assert not {"args", "msg", "levelno", "pathname"} & set(entry)


def test_log_format_json_makes_every_line_json_on_stderr(tmp_path):
    code = "import logging; logging.getLogger('agents').warning('spawned %s', 3, extra={'agent_id': 3})"
    result = manage(
        "shell", "--no-imports", "-c", code, env={"ORCHESTRATOR_LOG_FORMAT": "json"}, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    expected = {"logger": "agents", "level": "WARNING", "message": "spawned 3", "agent_id": 3}
    assert expected.items() <= entries[-1].items()


def test_unknown_log_format_fails_loudly(tmp_path):
    result = manage("check", env={"ORCHESTRATOR_LOG_FORMAT": "xml"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "ORCHESTRATOR_LOG_FORMAT must be text or json" in result.stderr
