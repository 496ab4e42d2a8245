import sys

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        if "qcluster" in sys.argv:
            # Import the heavy modules before django-q2 forks its workers, so no agent's first
            # request pays for the import (about 0.9 s for anthropic alone).
            import agents.execution  # noqa: F401
            from agents import cluster_hooks

            cluster_hooks.install()
