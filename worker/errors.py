"""The expected failures of the worker's commands, as one exception tree.

Any layer raises them (the provisioner, topic creation, the CLI's own checks); the CLI
prints the sentence instead of a trace and exits with the class's ``exit_code``.
"""


class WorkerError(Exception):
    """An expected failure: what is wrong and what to do, in one sentence."""

    exit_code = 1


class InvalidInput(WorkerError):
    """What the user gave is invalid: an argument, a query, stdin, a definition."""

    exit_code = 2


class UnreadableFile(WorkerError):
    """A file or directory the command was pointed at is missing or is not JSON."""


class NotFound(WorkerError):
    """What the command names does not exist: an experiment, an API key."""


class ConfigurationError(WorkerError):
    """The settings or the deployment do not fit: an environment variable, the topics."""


class CheckFailed(WorkerError):
    """A check the command runs found a difference (generated files out of date)."""


class ServiceUnavailable(WorkerError):
    """Kafka or Redis does not answer."""


class ProvisioningError(WorkerError):
    """The local Kafka or Redis could not be installed or started."""
