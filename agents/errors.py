"""The app's one error shape: a message a person can act on. Raised by services, shown as is."""


class OrchestratorError(Exception):
    """Bad input or a state that forbids the action. Never a bug: bugs raise anything else."""


class InvalidTransition(OrchestratorError):
    pass


class ConfigurationError(OrchestratorError):
    pass
