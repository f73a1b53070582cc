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


class UsageError(HarnessError):
    """Bad input from the user: names the file, option, node or output at fault."""

    exit_code = ExitCode.USAGE_ERROR
