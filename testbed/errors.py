"""Exit codes and the exceptions that map to them (one per kind of failure).

- ConfigError: bad input (a file, a line, a key, the fix). Exit 2, nothing started.
- MissingFeature: a kernel feature or tool is absent. Exit 2, reported before any state.
- RunError: the run itself failed (a process died, a check failed). Exit 1.
"""
from __future__ import annotations

OK = 0
RUN_FAILURE = 1
BAD_INPUT = 2
INTERRUPTED = 130


class TestbedError(Exception):
    exit_code = RUN_FAILURE


class ConfigError(TestbedError):
    """Bad input. Formats as one line: `file:line: key: message`."""

    exit_code = BAD_INPUT

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        # one line, whatever a value quoted in the message holds
        message = " ".join(str(message).split())
        if len(message) > 400:
            message = message[:400] + "…"
        self.message, self.file, self.line, self.key = message, file, line, key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class MissingFeature(TestbedError):
    """A kernel feature or tool the run needs is absent; `fix` says how to get it."""

    exit_code = BAD_INPUT

    def __init__(self, what: str, fix: str = ""):
        self.what, self.fix = what, fix
        super().__init__(f"{what}" + (f" (fix: {fix})" if fix else ""))


class RunError(TestbedError):
    exit_code = RUN_FAILURE
