"""The one project exception, and the exit codes the CLI gate maps outcomes onto."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of `harness convert` / `harness compare`; CI gates on these."""

    PASSED = 0
    ACCURACY_FAILED = 1
    USAGE_ERROR = 2
    ORDERING_MISMATCH = 3
    STAGE_FAILED = 4
    INTERNAL_ERROR = 5  # a bug in the harness itself: never confused with a verdict
    INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it
    TERMINATED = 143  # SIGTERM (a CI job cancelled or timed out)


class HarnessError(Exception):
    """Raised for anything the harness cannot handle; the message says how to fix it.

    `exit_code` tells the CLI how to end: input and usage problems (an unknown recipe,
    a corrupt weights file, a malformed tolerance) are USAGE_ERROR.
    """

    exit_code: ExitCode = ExitCode.STAGE_FAILED

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Interrupted(BaseException):
    """A signal asked the run to stop (SIGINT, SIGTERM): not an error of the harness nor of the model.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in a library swallows it.
    """

    def __init__(self, signal_name: str, exit_code: ExitCode, stage: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.stage = stage  # where the run was when the signal came, once the pipeline knows


class UsageError(HarnessError):
    """Bad input from the user: names the file, option, node or output at fault."""

    exit_code = ExitCode.USAGE_ERROR
