"""The one exception type that the CLI prints as a single sentence instead of a trace."""


class UserError(Exception):
    """An expected failure: what is wrong and what to do, in one sentence."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
