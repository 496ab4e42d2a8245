from agents.management.commands._common import AgentActionCommand
from agents.services import agent_resume


class Command(AgentActionCommand):
    help = "Resume a paused agent; it continues the same conversation."
    done = "resumed"

    def act(self, agent):
        agent_resume(agent=agent)
