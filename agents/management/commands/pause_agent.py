from agents.management.commands._common import AgentActionCommand
from agents.services import agent_pause


class Command(AgentActionCommand):
    help = "Pause an agent where it is (even mid-stream or mid-command); resume_agent continues it."
    done = "paused"

    def act(self, agent):
        agent_pause(agent=agent, reason="Paused from the command line.")
