"""What the command line builds from the environment before a command runs: the
configuration, the context (the one place RELAY_NOW and RELAY_REQUEST_TIMEOUT are read), the
state and its lock, and the redaction every printed line goes through; and what a failure of
the state means, in one line."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from relay.errors import RelayError, StateError

if TYPE_CHECKING:  # imported when used: `relay --help` and a no-op run stay fast
    from relay.config import Config
    from relay.context import Context, Progress
    from relay.store import Store


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("relay", appauthor=False))


def user_config_dir() -> Path:
    """~/.config (XDG_CONFIG_HOME): where systemd user units go."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def state_failure(exc: Exception, state_dir: Path) -> str | None:
    """One line for a failure of the state (SQLite or the disk under it); None for others."""
    if "sqlite3" not in sys.modules and not isinstance(exc, OSError):
        return None  # the state was never opened: not a state failure (and no import to pay)
    from relay.store import describe_failure

    return describe_failure(exc, state_dir)


def load(config_path: Path, *, check_templates: bool = True) -> Config:
    from relay import catalog
    from relay.config import load_config

    listed: frozenset[str] | None = None  # the template folders, listed once per load

    def exists(config: Config, name: str) -> bool:
        nonlocal listed
        if listed is None:
            listed = catalog.available(config.template_dirs)
        return catalog.exists(listed, name)

    return load_config(config_path, environ=os.environ, template_exists=exists if check_templates else None)


def now() -> datetime:
    """The one place the test clocks are read: RELAY_NOW pins the clock of a run; the file
    RELAY_CLOCK_FILE holds the time of a `relay watch` that a test moves forward."""
    clock_file = os.environ.get("RELAY_CLOCK_FILE")
    if clock_file:
        return datetime.fromisoformat(Path(clock_file).read_text(encoding="utf-8").strip())
    override = os.environ.get("RELAY_NOW")
    if override:
        return datetime.fromisoformat(override)
    return datetime.now(UTC)


def test_clock() -> bool:
    """Whether time is the test's (relay watch then waits for the clock file, not the wall)."""
    return bool(os.environ.get("RELAY_CLOCK_FILE"))


def context(config: Config, *, dry_run: bool = False, state_dir: Path | None = None, progress: bool = False) -> Context:
    """The environment of a command, read once here: nothing below cli reads os.environ.
    progress: show it on stderr, when stderr is a terminal."""
    from relay.context import NO_PROGRESS, Context

    return Context(
        progress=terminal_progress() if progress else NO_PROGRESS,
        clock=now,
        request_timeout=float(os.environ.get("RELAY_REQUEST_TIMEOUT", "30")),
        allow_private=bool(config.network.allow_private),
        dry_run=dry_run,
        fast_parser=os.environ.get("RELAY_PARSER", "").strip().lower() != "feedparser",
        state_dir=state_dir,
    )


class TerminalProgress:
    """Click's progress bar on stderr: things done / total, errors so far, seconds elapsed;
    erased when done."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.errors = 0
        self.started = 0.0

    def start(self, label: str, total: int) -> None:
        import time

        if total <= 0:
            return
        self.errors, self.started = 0, time.monotonic()
        self.bar = click.progressbar(
            length=total, label=label, file=sys.stderr, show_pos=True, show_eta=False, item_show_func=self._extra
        )
        self.bar.__enter__()

    def _extra(self, _: object) -> str:
        import time

        errors = f"{self.errors} error{'' if self.errors == 1 else 's'}"
        return f"{errors} · {time.monotonic() - self.started:.1f} s"

    def step(self, *, failed: bool = False) -> None:
        if self.bar is not None:
            self.errors += failed
            self.bar.update(1, True)

    def done(self) -> None:
        """The bar erased (and the cursor shown again): what follows starts on a clean line."""
        if self.bar is not None:
            sys.stderr.write("\r\x1b[2K\x1b[?25h")
            sys.stderr.flush()
            self.bar = None


def terminal_progress() -> Progress:
    """Progress is drawn only on a terminal: cron, pipes and files get exactly what they got
    before (and TERM=dumb nothing)."""
    try:
        shown = sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # a replaced or closed stderr
        shown = False
    from relay.context import NO_PROGRESS

    return TerminalProgress() if shown else NO_PROGRESS


def redact(config: Config | None, text: str) -> str:
    """Secret values back to ${VAR} and URL passwords masked: every line about feeds and
    accounts goes through here before it is printed. Without a configuration (status when
    feeds.yaml does not load), URL passwords are still masked."""
    if config is not None:
        return str(config.redact(text))
    from relay.config import mask_credentials

    return mask_credentials(text)


def open_store(state_dir: Path, *, quiet: bool = False) -> Store:
    """The state for writing; its warnings (permissions tightened) printed once."""
    from relay.store import Store

    store = Store.open(state_dir)
    for warning in store.warnings:
        click.echo(f"warning: {warning}", err=True)
    return store


def run_lock(state_dir: Path) -> contextlib.AbstractContextManager[None]:
    from relay.store import run_lock as lock

    return lock(state_dir)


@contextlib.contextmanager
def dry_run_state(state_dir: Path) -> Iterator[Store]:
    from relay.store import Store

    with Store.scratch_copy(state_dir) as store:
        yield store


def open_existing(state_dir: Path) -> Store:
    from relay.store import state_path

    if state_dir.exists() and not state_dir.is_dir():
        raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
    if not state_path(state_dir).exists():
        raise StateError(f"{state_path(state_dir)}: no state yet (run `relay run` or `relay seed` first)")
    return open_store(state_dir)


def config_for_masking(config_path: Path) -> Config | None:
    """The configuration when it loads, so its secrets can be hidden; status does not need it."""
    if not config_path.exists():
        return None
    try:
        return load(config_path, check_templates=False)
    except RelayError:
        return None
