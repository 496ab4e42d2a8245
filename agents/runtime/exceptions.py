"""How a run ends early. Each carries the reason that is stored on the agent and shown to people."""


class AgentStop(Exception):
    """Base: the loop stops; `str(exc)` is the reason."""


class Cancelled(AgentStop):
    """A person or a parent cancelled the agent."""


class LeaseLost(AgentStop):
    """Another worker owns the agent now: write nothing more."""


class LimitsExceeded(AgentStop):
    """Max turns, wall clock, ... reached."""


class ModelRefused(AgentStop):
    """The model ended with stop_reason `refusal`."""


class ModelError(AgentStop):
    """The API refused the request for good (400/401/403/404...): retrying will not help."""


class ModelUnavailable(AgentStop):
    """The API kept failing (429/5xx/529, dropped connections) through every retry."""


class Paused(AgentStop):
    """A person paused the agent; it resumes from its transcript."""


class Shutdown(AgentStop):
    """The worker is shutting down (SIGTERM): release the agent so another worker continues."""


class OutOfBudget(AgentStop):
    """The next call's worst case cannot be reserved: the agent waits for more budget."""

    def __init__(self, message: str, *, usd: object = None, tokens: int = 0) -> None:
        super().__init__(message)
        self.usd = usd
        self.tokens = tokens


class AwaitingApproval(AgentStop):
    """A tool call needs a person's decision: the agent waits (no worker held) until it is made."""
