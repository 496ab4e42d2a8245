from agents.management.commands._common import AgentActionCommand
from agents.services import agent_retry


class Command(AgentActionCommand):
    help = "Queue a failed or cancelled agent again; it resumes from its transcript."
    done = "queued"

    def act(self, agent):
        agent_retry(agent=agent)
