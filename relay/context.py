"""The environment a command runs in: its clock, its time limits, its network policy, its
state folder and how it fetches.
Built once at the edge (relay.edge) from the options and the environment, and passed down, so
nothing below cli reads os.environ and a test can pin every part of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx


def system_clock() -> datetime:
    return datetime.now(UTC)


class Progress(Protocol):
    """What a long command reports as it goes (relay.edge draws it on a terminal): a count of
    things done out of a total, with the failures so far."""

    def start(self, label: str, total: int) -> None: ...
    def step(self, *, failed: bool = False) -> None: ...
    def done(self) -> None: ...


class NoProgress:
    """Nothing shown: cron, pipes, tests, -q."""

    def start(self, label: str, total: int) -> None:
        pass

    def step(self, *, failed: bool = False) -> None:
        pass

    def done(self) -> None:
        pass


NO_PROGRESS = NoProgress()


@contextmanager
def showing(progress: Progress, label: str, total: int) -> Iterator[Progress]:
    """progress started, and done however the work ends (a terminal gets its cursor back)."""
    progress.start(label, total)
    try:
        yield progress
    finally:
        progress.done()


@dataclass(frozen=True)
class Context:
    clock: Callable[[], datetime] = system_clock  # the run's time (RELAY_NOW pins it)
    request_timeout: float = 30.0  # seconds per platform API request, in total
    allow_private: bool = False  # pages and images named by feed content may be private
    dry_run: bool = False  # take the real path, send nothing
    fast_parser: bool = True  # feedparser-rs may read feeds, when installed (RELAY_PARSER=feedparser: never)
    state_dir: Path | None = None  # where the state lives (the store is opened from it)
    # how feeds are fetched: None is relay's guarded client (relay.fetch.make_client)
    http_client: Callable[[], httpx.Client] | None = None
    # relay watch, asked to stop (SIGTERM, SIGINT): the current delivery ends, no other starts
    stopping: Callable[[], bool] = lambda: False
    # feeds fetched / total and errors so far, drawn on stderr when it is a terminal
    progress: Progress = NO_PROGRESS
