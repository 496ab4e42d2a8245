"""docker-compose.yml describes the hosted mode with the same commands as the Procfile."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def compose_command(service: dict) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-c"], "compose runs the Procfile's shell command"
    return command[2].replace("$$", "$")  # compose's escape for a literal $


def test_compose_names_web_worker_postgres_and_redis():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"web", "worker", "postgres", "redis"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    assert compose["services"]["redis"]["image"].startswith("redis:")
    for name in ("web", "worker"):
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")


def test_compose_commands_match_the_procfile():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    processes = procfile()
    assert set(processes) == {"web", "worker"}
    # web migrates first, then runs exactly the Procfile's command
    assert compose_command(compose["services"]["web"]).endswith("&& " + processes["web"])
    assert compose_command(compose["services"]["worker"]) == processes["worker"]
