"""Error types and exit codes: the one place that says how a failure ends a command."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    PARTIAL = 1  # something failed (a feed, a delivery) but the run went on
    USAGE = 2  # usage, configuration or state error
    LOCKED = 3  # another run holds the lock


class RelayError(Exception):
    """Base of every error relay reports to the user; the message is one line."""

    exit_code = ExitCode.USAGE


class ConfigError(RelayError):
    """feeds.yaml (or a template) is invalid. Carries every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StateError(RelayError):
    """The state file is unreadable, corrupted, or from a newer relay."""


class LockedError(RelayError):
    exit_code = ExitCode.LOCKED


class FetchError(Exception):
    """A feed could not be fetched; the message is the one-line reason."""


class ParseError(Exception):
    """A body is not a usable feed; the message is the one-line reason."""


class RenderError(Exception):
    """A template failed for one item; the message is the one-line reason."""
