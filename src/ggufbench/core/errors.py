"""Exceptions whose messages say what was expected, what was found, and what to do."""

from __future__ import annotations


class GgufbenchError(Exception):
    """Base class: anything the workflow reports to the user as a failed job."""


class ConfigError(GgufbenchError):
    """A config key is missing, malformed or inconsistent with another key."""


class ToolFailed(GgufbenchError):
    """A llama.cpp tool exited non-zero, was killed, or exited 0 without measuring. `output` holds what the
    tool printed, when it ran, so a caller can tell a memory failure from other causes."""

    def __init__(self, message: str, output: str = "", returncode: int | None = None):
        super().__init__(message)
        self.output = output
        self.returncode = returncode


class DoesNotFit(ToolFailed):
    """A setting needs more device memory than is free: a result ("does not fit in N GiB"), not a broken job."""
