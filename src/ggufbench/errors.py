"""Exceptions whose messages say what was expected, what was found, and what to do."""


class GgufbenchError(Exception):
    """Base class: anything the workflow reports to the user as a failed job."""


class ConfigError(GgufbenchError):
    """A config key is missing, malformed or inconsistent with another key."""


class ToolFailed(GgufbenchError):
    """A llama.cpp tool exited non-zero, was killed, or exited 0 without measuring."""
