"""The command line: parse options, build the objects, call the pipeline, print, map errors
to exit codes. The only module that prints or exits."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from relay import __version__
from relay.errors import ConfigError, ExitCode, LockedError, RelayError, RenderError, StateError

if TYPE_CHECKING:
    from relay.context import Context
from relay.models import DROP, DROP_HELD, RELEASE, RETRY, WAITING, DeliveryState, Move

F = TypeVar("F", bound=Callable[..., Any])
TIME_FORMAT = "%Y-%m-%d %H:%M"


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("relay", appauthor=False))


def common_options(func: F) -> F:
    """--config, --state-dir, -v, -q, --traceback on every command."""

    @click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        envvar="RELAY_CONFIG",
        default=Path("feeds.yaml"),
        show_default=True,
        help="The feeds.yaml to use (env RELAY_CONFIG).",
    )
    @click.option(
        "--state-dir",
        type=click.Path(path_type=Path, readable=False),  # relay says what is wrong with it
        envvar="RELAY_STATE_DIR",
        default=None,
        help="Where relay keeps its state (env RELAY_STATE_DIR; default: the user state folder).",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Say what happened, not only what failed.")
    @click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
    @click.option("--traceback", is_flag=True, envvar="RELAY_DEBUG", help="Show Python tracebacks (env RELAY_DEBUG=1).")
    @functools.wraps(func)
    def wrapper(*args: Any, traceback: bool, **kwargs: Any) -> Any:
        kwargs["state_dir"] = kwargs["state_dir"] or default_state_dir()
        try:
            return func(*args, **kwargs)
        except RelayError as exc:
            if traceback:
                raise
            for line in str(exc).splitlines():
                click.echo(f"relay: {line}", err=True)
            sys.exit(int(exc.exit_code))
        except Exception as exc:
            message = _state_failure(exc, kwargs["state_dir"])
            if traceback or message is None:
                raise
            click.echo(f"relay: {message}", err=True)
            sys.exit(int(ExitCode.USAGE))

    return wrapper  # type: ignore[return-value]


def _state_failure(exc: Exception, state_dir: Path) -> str | None:
    """One line for a failure of the state (SQLite or the disk under it), naming the state
    folder and what to do; None for any other error."""
    import errno

    sqlite3 = sys.modules.get("sqlite3")  # imported only by commands that open the state
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        lowered = text.lower()
        if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
            hint = "the state file is damaged; move it away (relay starts afresh) or restore a backup"
        elif "full" in lowered or "i/o" in lowered:
            hint = "the disk is full or failing; free some space, check the disk, and run again"
        elif "readonly" in lowered or "unable to open" in lowered or "permission" in lowered:
            hint = "relay cannot write there; check the folder's owner and permissions"
        elif "locked" in lowered or "busy" in lowered:
            hint = "another program holds the state file; try again later"
        else:
            hint = "check the disk and the file, or move it away to start afresh"
        return f"state {state_dir}: {text}: {hint}"
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        where = exc.filename or state_dir
        if exc.filename and not str(Path(exc.filename).resolve()).startswith(str(state_dir.resolve())):
            return f"{where}: {exc.strerror or exc}"  # not the state: say only what failed
        reason = exc.strerror or str(exc)
        hints = {
            errno.ENOSPC: "the disk is full; free some space and run again",
            errno.EFBIG: "the disk is full or a file size limit was reached; free some space",
            errno.EDQUOT: "the disk quota is used up; free some space",
            errno.EACCES: "relay cannot write there; check the folder's owner and permissions",
            errno.EPERM: "relay cannot write there; check the folder's owner and permissions",
            errno.EROFS: "the file system is read-only; point --state-dir at a writable folder",
            errno.ENOTDIR: "--state-dir must name a folder, not a file",
            errno.EEXIST: "--state-dir must name a folder, not a file",
        }
        hint = hints.get(exc.errno or 0, "check the state folder")
        return f"state {state_dir}: {where}: {reason}: {hint}"
    return None


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="relay")
def cli() -> None:
    """relay: relay the publications of collectives, petitions and news sites to Mastodon
    and Bluesky, exactly once, without flooding.

    \b
    Typical use:
      relay check                 validate feeds.yaml and the templates
      relay preview               see exactly what the next run would post
      relay seed                  mark what the feeds hold today as already seen
      relay run                   one cron pass: poll, queue, post within pacing
      relay cron --install        run it every 5 minutes from cron

    Exit codes: 0 success, 1 something failed but the run went on, 2 usage,
    configuration or state error, 3 another run holds the lock.
    """


def main() -> None:
    cli(prog_name="relay")


def _load(config_path: Path, *, check_templates: bool = True) -> Any:
    from relay.config import load_config
    from relay.render import make_environment, template_exists

    def exists(config: Any, name: str) -> bool:
        return template_exists(make_environment(config.template_dirs), name)

    return load_config(config_path, environ=os.environ, template_exists=exists if check_templates else None)


def _now() -> datetime:
    """The one place RELAY_NOW is read: tests pin the clock of a run with it."""
    override = os.environ.get("RELAY_NOW")
    if override:
        return datetime.fromisoformat(override)
    return datetime.now(UTC)


def _context(config: Any, *, dry_run: bool = False) -> Context:
    """The environment of a command, read once here: nothing below cli reads os.environ."""
    from relay.context import Context

    return Context(
        clock=_now,
        request_timeout=float(os.environ.get("RELAY_REQUEST_TIMEOUT", "30")),
        allow_private=bool(config.network.allow_private),
        dry_run=dry_run,
    )


def _select_feeds(config: Any, names: tuple[str, ...]) -> list[Any]:
    if not names:
        return list(config.feeds)
    known = {feed.name for feed in config.feeds}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            [f"{config.path.name}: no feed named {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"]
        )
    return [feed for feed in config.feeds if feed.name in names]


def _redact(config: Any, text: str) -> str:
    """Secret values back to ${VAR} and URL passwords masked: every line about feeds and
    accounts goes through here before it is printed. Without a configuration (status when
    feeds.yaml does not load), URL passwords are still masked."""
    if config is not None:
        return str(config.redact(text))
    from relay.config import mask_credentials

    return mask_credentials(text)


def _open_store(state_dir: Path, *, quiet: bool = False) -> Any:
    """The state for writing; its warnings (permissions tightened) printed once."""
    from relay.store import Store

    store = Store.open(state_dir)
    for warning in store.warnings:
        click.echo(f"warning: {warning}", err=True)
    return store


@contextlib.contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    """One run at a time. flock is released by the kernel when a process dies, even by
    SIGKILL, so a crashed run never blocks the next one."""
    if state_dir.exists() and not state_dir.is_dir():
        raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "relay.lock"
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LockedError(f"another relay run holds {path}; this one exits") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path())
def init(directory: Path) -> None:
    """Write a starter feeds.yaml, templates/ and .env.example into DIRECTORY.

    Existing files are left alone.

    \b
    Example:
      relay init ~/relay && cd ~/relay && relay check
    """
    from relay.render import BUILTIN_TEMPLATES

    directory.mkdir(parents=True, exist_ok=True)
    starter = Path(__file__).parent / "starter"
    written = []
    for source, target in (
        (starter / "feeds.yaml", directory / "feeds.yaml"),
        (starter / "env.example", directory / ".env.example"),
    ):
        if not target.exists():
            shutil.copyfile(source, target)
            written.append(str(target))
    (directory / "templates").mkdir(exist_ok=True)
    for template in sorted(BUILTIN_TEMPLATES.glob("*.j2")):
        target = directory / "templates" / template.name
        if not target.exists():
            shutil.copyfile(template, target)
            written.append(str(target))
    click.echo(
        f"wrote {len(written)} files in {directory}" if written else f"{directory}: nothing to write, all files exist"
    )


@cli.command()
@common_options
@click.option("--online", is_flag=True, help="Also log in to each account and read the instance limits.")
def check(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, online: bool) -> None:
    """Validate feeds.yaml and render every template against a sample item.

    Every problem is one line naming the file, the line and the field. Exit 0 when the
    configuration is valid, 2 when it is not.

    \b
    Example:
      relay check -c feeds.yaml
      relay check --online          # also checks credentials and instance limits
    """
    from relay.models import Item
    from relay.pipeline import Renderer
    from relay.render import Limits

    config = _load(config_path)
    renderer = Renderer(config)
    sample = Item(
        feed="sample",
        key="sample",
        link="https://example.org/2026/11/exemple-d-article?utm_source=rss",
        canonical_url="example.org/2026/11/exemple-d-article",
        title="Health Data Hub : le gouvernement confirme l'hébergement chez Microsoft",
        summary="Un exemple de résumé, assez long pour être raccourci. " * 20,
        author="Collectif",
        published=_now(),
        tags=("santé",),
    )
    problems = []
    for index, feed in enumerate(config.feeds):
        for name in feed.to:
            account = config.accounts[name]
            try:
                renderer.render(sample, feed, account, Limits(max_characters=account.max_characters or 500))
            except RenderError as exc:
                problems.append(
                    f"{config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for {account.platform}: {exc}"
                )
    if problems:
        raise ConfigError(problems)
    for warning in config.warnings:
        if not quiet:
            click.echo(f"warning: {_redact(config, warning)}", err=True)
    # Mastodon's card is the first link in the text: render each Mastodon feed against an
    # item whose every field holds a URL, and warn when the first URL is not the item's.
    from relay.text import find_urls

    linked = Item(
        feed="sample",
        key="sample-urls",
        link="https://example.org/2026/11/item-link",
        canonical_url="example.org/2026/11/item-link",
        title="Title https://title.example/page",
        summary="Summary (https://summary.example/page) and https://summary.example/other",
        author="Author https://author.example/",
        published=_now(),
        tags=("https://tag.example/",),
        image="https://image.example/picture.jpg",
    )
    for index, feed in enumerate(config.feeds):
        mastodon = [config.accounts[n] for n in feed.to if config.accounts[n].platform == "mastodon"]
        if not mastodon:
            continue
        try:
            post = renderer.render(linked, feed, mastodon[0], Limits(), "Site https://site.example/")
        except RenderError:
            continue
        urls = [post.text[start:end] for start, end in find_urls(post.text)]
        if urls and urls[0] != linked.link and not quiet:
            source = {linked.image: "item.image", feed.url: "feed.url"}.get(urls[0], urls[0])
            click.echo(
                f"warning: {config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for mastodon"
                f" (feed {feed.name}) puts {source} before item.link: Mastodon's card would show that page",
                err=True,
            )
    failed = False
    if online:
        from relay.targets import make_target
        from relay.targets.base import PublishError

        if config.warnings:
            raise ConfigError(list(config.warnings))
        store = _open_store(state_dir)
        for name, account in config.accounts.items():
            target = make_target(account, store, _context(config))
            try:
                click.echo(_redact(config, f"account {name}: {target.check()}"))
            except PublishError as exc:
                failed = True
                click.echo(_redact(config, f"relay: account {name}: {exc}"), err=True)
            finally:
                target.close()
    if not quiet:
        click.echo(
            f"{config.path.name}: ok: {len(config.feeds)} feeds, {len(config.accounts)} accounts"
            f" ({', '.join(f'{n} on {a.platform}' for n, a in config.accounts.items()) or 'none'})"
        )
    if failed:
        sys.exit(ExitCode.PARTIAL)


@cli.command()
@common_options
@format_option
@click.option(
    "--all", "all_items", is_flag=True, help="Render every entry as if new (ignore dedupe, backfill, age, pacing)."
)
@click.option("--feed", "feed_names", multiple=True, metavar="NAME", help="Only this feed (repeatable).")
def preview(
    config_path: Path,
    state_dir: Path,
    verbose: bool,
    quiet: bool,
    output_format: str,
    all_items: bool,
    feed_names: tuple[str, ...],
) -> None:
    """Fetch the feeds and show exactly what the next run would post, per account.

    Changes nothing: no state written, no account contacted, no secret needed.

    \b
    Examples:
      relay preview -c examples/offline/feeds.yaml
      relay preview --feed quadrature --all        # tune a template on every entry
      relay preview --format json | jq '.posts[] | select(.action == "post")'
    """
    from relay.pipeline import plan
    from relay.store import Store

    config = _load(config_path)
    feeds = _select_feeds(config, feed_names)
    store = Store.open_read_only(state_dir)
    planned = plan(config, store, _context(config), feeds, all_items=all_items)
    feeds_out = [_feed_json(config, report) for report in planned.feeds]
    posts_out = []
    for post in planned.posts:
        entry = dataclasses.asdict(post)
        if entry["spoiler_text"] is None:
            del entry["spoiler_text"]
        posts_out.append(entry)
    if output_format == "json":
        # item keys and links resolved against a feed URL can carry its credentials: mask all
        click.echo(_redact(config, json.dumps({"feeds": feeds_out, "posts": posts_out}, ensure_ascii=False, indent=2)))
    else:
        _print_preview(config, feeds_out, posts_out, verbose=verbose, quiet=quiet)
    for warning in config.warnings:
        if not quiet and output_format == "text":
            click.echo(f"warning: {_redact(config, warning)} (needed by `relay run`)", err=True)
    if any(f["status"] == "error" for f in feeds_out):
        sys.exit(ExitCode.PARTIAL)


def _feed_json(config: Any, report: Any) -> dict[str, Any]:
    return {
        "name": report.name,
        "url": _redact(config, report.url),
        "status": report.status,
        "error": None if report.error is None else _redact(config, report.error),
        "entries": report.entries,
        "new": report.new,
        "warnings": [_redact(config, w) for w in report.warnings],
    }


def _print_preview(
    config: Any, feeds: list[dict[str, Any]], posts: list[dict[str, Any]], *, verbose: bool, quiet: bool
) -> None:
    def echo(text: str, err: bool = False) -> None:
        click.echo(_redact(config, text), err=err)

    for feed in feeds:
        if feed["status"] == "error":
            echo(f"relay: feed {feed['name']}: {feed['error']}", err=True)
        elif not quiet:
            echo(f"feed {feed['name']}: {feed['status']}, {feed['entries']} entries, {feed['new']} new")
        for warning in feed["warnings"]:
            echo(f"warning: feed {feed['name']}: {warning}", err=True)
    if quiet:
        return
    from relay.text import truncate

    for name, account in config.accounts.items():
        mine = [p for p in posts if p["account"] == name]
        shown = [p for p in mine if p["action"] != "skip" or verbose or p["text"]]
        counts = {a: sum(1 for p in mine if p["action"] == a) for a in ("post", "hold", "skip")}
        echo("")
        echo(
            f"== {name} ({account.platform}): {counts['post']} to post, {counts['hold']} held, {counts['skip']} skipped"
        )
        for post in shown:
            reason = f" ({post['reason']})" if post["reason"] else ""
            length = f" {post['length']}/{post['limit']}" if post["length"] is not None else ""
            # where the language came from, when not from defaults: a reader checks it there
            source = post.get("language_source", "default")
            language = f" [{post['language']} from {source}]" if source != "default" else ""
            echo(f"-- [{post['action']}] {post['feed']}: {truncate(post['title'], 70)}{length}{language}{reason}")
            if (post["text"] and post["action"] != "skip") or (post["text"] and verbose):
                if post.get("spoiler_text"):
                    echo(f"   CW: {post['spoiler_text']}")
                for line in post["text"].split("\n"):
                    echo(f"   | {line}")
                if post["embed"]:
                    card = post["embed"]["external"]
                    echo(f"   [card] {card['title']} — {truncate(card['description'], 80)} <{card['uri']}>")
        skipped = counts["skip"] - sum(1 for p in shown if p["action"] == "skip")
        if skipped:
            echo(f"   ({skipped} skipped entries not shown; -v lists them with their reasons)")


@cli.command()
@common_options
@click.option("--feed", "feed_names", multiple=True, metavar="NAME", help="Only this feed (repeatable).")
def seed(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, feed_names: tuple[str, ...]) -> None:
    """Mark everything the feeds hold now as seen, without posting anything.

    Use it once before the first `relay run` when even `backfill: 1` is too much.

    \b
    Example:
      relay seed && relay run
    """
    from relay.pipeline import seed as seed_feeds

    config = _load(config_path)
    feeds = _select_feeds(config, feed_names)
    with run_lock(state_dir), contextlib.closing(_open_store(state_dir)) as store:
        reports = seed_feeds(config, store, _context(config), feeds)
    failed = False
    for report in reports:
        if report.status == "error":
            failed = True
            click.echo(_redact(config, f"relay: feed {report.name}: {report.error}"), err=True)
        elif not quiet:
            click.echo(f"feed {report.name}: {report.new} entries marked seen")
    if failed:
        sys.exit(ExitCode.PARTIAL)


@cli.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Take the same path, send nothing, write nothing.")
@click.option("--feed", "feed_names", multiple=True, metavar="NAME", help="Only this feed (repeatable).")
def run(
    config_path: Path, state_dir: Path, verbose: bool, quiet: bool, dry_run: bool, feed_names: tuple[str, ...]
) -> None:
    """One cron pass: poll the feeds that are due, queue what is new, post within pacing.

    Quiet when all is well; each failure is one line on stderr naming the feed or the
    account. Exit 1 when something failed (the rest went on), 3 when another run holds
    the lock.

    \b
    Example (crontab, every 5 minutes):
      */5 * * * * relay run -c /home/me/relay/feeds.yaml >> /home/me/relay/relay.log 2>&1
    """
    config = _load(config_path)
    if config.warnings and not dry_run:
        raise ConfigError([f"{w} (relay run needs it)" for w in config.warnings])
    feeds = _select_feeds(config, feed_names)
    # a dry run works on a scratch copy of the state: it takes no lock and writes nothing
    with contextlib.nullcontext() if dry_run else run_lock(state_dir):
        failed = _run(config, state_dir, feeds, dry_run=dry_run, verbose=verbose, quiet=quiet)
    if failed:
        sys.exit(ExitCode.PARTIAL)


def _run(config: Any, state_dir: Path, feeds: list[Any], *, dry_run: bool, verbose: bool, quiet: bool) -> bool:
    from relay.pipeline import Outcome, run_once
    from relay.text import truncate

    with _dry_run_state(state_dir) if dry_run else contextlib.closing(_open_store(state_dir)) as store:
        report = run_once(config, store, _context(config, dry_run=dry_run), feeds)
    if report.first_run and not quiet:
        click.echo(
            f"warning: no state yet in {state_dir}: first run; each feed relays at most its `backfill` newest"
            " items (`relay seed` relays none)",
            err=True,
        )
    for feed in report.polled:
        if feed.status == "error":
            click.echo(_redact(config, f"relay: feed {feed.name}: {feed.error}"), err=True)
        elif verbose:
            click.echo(f"feed {feed.name}: {feed.status}, {feed.entries} entries, {feed.new} new")
        for warning in feed.warnings:
            click.echo(_redact(config, f"warning: feed {feed.name}: {warning}"), err=True)
    if not report.polled and verbose:
        click.echo("no feed is due")
    for line in report.start_errors:
        click.echo(_redact(config, f"relay: {line}"), err=True)
    for warning in report.target_warnings:
        click.echo(_redact(config, f"warning: {warning}"), err=True)
    delivered = report.delivery
    if delivered is None:
        return report.failed
    for event in delivered.events:
        if event.outcome == Outcome.FAILED:
            click.echo(
                _redact(
                    config,
                    f"relay: account {event.account}: delivery {event.delivery_id} ({event.feed}: {event.title[:60]})"
                    f" failed: {event.detail}",
                ),
                err=True,
            )
        elif event.outcome == Outcome.RETRY:
            click.echo(
                _redact(
                    config,
                    f"relay: account {event.account}: delivery {event.delivery_id} ({event.feed}) will be retried:"
                    f" {event.detail}",
                ),
                err=True,
            )
        elif event.outcome == Outcome.DROPPED:
            if verbose:
                click.echo(f"not posted to {event.account}: {event.feed}: {truncate(event.title, 70)}: {event.detail}")
        elif verbose:
            prefix = "would post" if dry_run else "posted"
            click.echo(f"{prefix} to {event.account}: {event.feed}: {truncate(event.title, 70)} {event.url}".rstrip())
    for line in delivered.account_errors:
        click.echo(_redact(config, f"relay: {line}"), err=True)
    if verbose:
        for name, why in delivered.pacing.items():
            click.echo(f"pacing {name}: {why}")
    return report.failed


@contextlib.contextmanager
def _dry_run_state(state_dir: Path) -> Iterator[Any]:
    from relay.store import Store

    with Store.scratch_copy(state_dir) as store:
        yield store


def _open_existing(state_dir: Path) -> Any:
    from relay.store import state_path

    if state_dir.exists() and not state_dir.is_dir():
        raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
    if not state_path(state_dir).exists():
        raise StateError(f"{state_path(state_dir)}: no state yet (run `relay run` or `relay seed` first)")
    return _open_store(state_dir)


def _config_for_masking(config_path: Path) -> Any:
    """The configuration when it loads, so its secrets can be hidden; status does not need it."""
    if not config_path.exists():
        return None
    try:
        return _load(config_path, check_templates=False)
    except RelayError:
        return None


def _when(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, tz=UTC).strftime(TIME_FORMAT)


@cli.command()
@common_options
@format_option
def status(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, output_format: str) -> None:
    """Feeds (last poll, next poll, errors), the outbox per account, held items.

    \b
    Example:
      relay status
      relay status --format json
    """
    store = _open_existing(state_dir)
    config = _config_for_masking(config_path)
    feeds = [
        {
            "name": s.name,
            "url": _redact(config, s.url),
            "last_polled_at": _iso(s.last_polled_at),
            "last_ok_at": _iso(s.last_ok_at),
            "next_due_at": _iso(s.next_due_at),
            "consecutive_failures": s.consecutive_failures,
            "last_error": None if s.last_error is None else _redact(config, s.last_error),
            "entries": s.entries,
        }
        for s in store.feed_states().values()
    ]
    counts = store.outbox_counts()
    accounts = []
    for name in store.account_names():
        known = store.account_state(name)
        accounts.append(
            {
                "name": name,
                "outbox": counts.get(name, {}),
                "blocked_until": _iso(known.blocked_until),
                "last_error": known.last_error,
                "logins": known.logins,
                "last_posted_at": _iso(store.last_posted_at(name)),
            }
        )
    held = [_delivery_json(d) for d in store.deliveries(states=[DeliveryState.HELD])]
    failed = [_delivery_json(d) for d in store.deliveries(states=[DeliveryState.FAILED])]
    if output_format == "json":
        click.echo(
            _redact(
                config,
                json.dumps(
                    {"feeds": feeds, "accounts": accounts, "held": held, "failed": failed},
                    ensure_ascii=False,
                    indent=2,
                ),
            )
        )
        return

    def echo(text: str) -> None:
        click.echo(_redact(config, text))

    echo(f"state: {store.path}")
    echo("feeds:")
    for s in store.feed_states().values():
        line = f"  {s.name}: last poll {_when(s.last_polled_at)}, next {_when(s.next_due_at)}, {s.entries or 0} entries"
        if s.last_error:
            line += f", FAILING x{s.consecutive_failures}: {s.last_error}"
        echo(line)
    echo("accounts:" if accounts else "accounts: nothing queued or posted yet")
    for account in accounts:
        outbox = ", ".join(f"{n} {state}" for state, n in sorted(account["outbox"].items())) or "nothing yet"
        line = f"  {account['name']}: {outbox}"
        if account["blocked_until"]:
            line += f"; waiting until {account['blocked_until']} ({account['last_error']})"
        echo(line)
    if held:
        echo(f"held ({len(held)}): release with `relay queue release FEED`, drop with `relay queue drop ID`")
        for d in held[:50]:
            echo(f"  #{d['id']} {d['account']} {d['feed']}: {d['title'][:70]}")
    if failed:
        echo(f"failed ({len(failed)}): `relay queue retry ID` once the cause is fixed")
        for d in failed[:50]:
            echo(f"  #{d['id']} {d['account']} {d['feed']}: {d['title'][:60]}: {d['last_error']}")


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC).isoformat()


def _delivery_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "account": d.account,
        "feed": d.feed,
        "title": d.title,
        "link": d.link,
        "state": d.state,
        "attempts": d.attempts,
        "queued_at": _iso(d.queued_at),
        "next_attempt_at": _iso(d.next_attempt_at),
        "posted_at": _iso(d.posted_at),
        "remote_id": d.remote_id,
        "url": d.remote_url,
        "last_error": d.last_error,
    }


@cli.command()
@common_options
@format_option
@click.option("--limit", default=50, show_default=True, help="How many posts to list, newest first.")
def history(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, output_format: str, limit: int) -> None:
    """What was posted, when, to which account, with links to the posts.

    \b
    Example:
      relay history --limit 10
    """
    store = _open_existing(state_dir)
    rows = [
        _delivery_json(d)
        for d in store.deliveries(states=[DeliveryState.POSTED], newest_posted_first=True, limit=limit)
    ]
    if output_format == "json":
        click.echo(_redact(None, json.dumps(rows, ensure_ascii=False, indent=2)))
        return
    for d in rows:
        click.echo(
            _redact(
                None,
                f"{d['posted_at'][:16].replace('T', ' ')} {d['account']} {d['feed']}: {d['title'][:60]} {d['url'] or ''}",
            ).rstrip()
        )


@cli.group()
def queue() -> None:
    """List and steer the outbox: retry, drop, release held items.

    \b
    Examples:
      relay queue list --state failed
      relay queue retry 42
      relay queue release quadrature      # a flood-guarded feed's held items
    """


@queue.command("list")
@common_options
@format_option
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([state.value for state in DeliveryState]),
    help="Only deliveries in this state (repeatable); default: all but posted and dropped.",
)
def queue_list(
    config_path: Path, state_dir: Path, verbose: bool, quiet: bool, output_format: str, states: tuple[str, ...]
) -> None:
    """List deliveries with their state and last error.

    \b
    Example:
      relay queue list --state failed --state held
    """
    store = _open_existing(state_dir)
    wanted = [DeliveryState(s) for s in states] if states else WAITING
    rows = [_delivery_json(d) for d in store.deliveries(states=wanted)]
    if output_format == "json":
        click.echo(_redact(None, json.dumps(rows, ensure_ascii=False, indent=2)))
        return
    for d in rows:
        error = f" [{d['last_error']}]" if d["last_error"] else ""
        click.echo(_redact(None, f"#{d['id']} {d['state']} {d['account']} {d['feed']}: {d['title'][:60]}{error}"))


def _move(state_dir: Path, ids: tuple[int, ...], move: Move) -> None:
    from relay.store import epoch

    with run_lock(state_dir):
        store = _open_existing(state_dir)
        store.move(ids, move, epoch(_now()))
        click.echo(f"{len(ids)} deliveries now {move.to}")


@queue.command("retry")
@common_options
@click.argument("ids", nargs=-1, type=int, required=True)
def queue_retry(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, ids: tuple[int, ...]) -> None:
    """Queue failed (or dropped) deliveries again, with their attempts reset.

    \b
    Example:
      relay queue retry 42 43
    """
    _move(state_dir, ids, RETRY)


@queue.command("drop")
@common_options
@click.argument("ids", nargs=-1, type=int, required=True)
def queue_drop(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, ids: tuple[int, ...]) -> None:
    """Never post these deliveries (queued, held or failed).

    \b
    Example:
      relay queue drop 42
    """
    _move(state_dir, ids, DROP)


@queue.command("release")
@common_options
@click.argument("feed")
def queue_release(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, feed: str) -> None:
    """Queue every held delivery of FEED (after a flood guard); pacing still applies.

    \b
    Example:
      relay queue release quadrature
    """
    _move_feed(state_dir, feed, RELEASE)


@queue.command("drop-held")
@common_options
@click.argument("feed")
def queue_drop_held(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, feed: str) -> None:
    """Drop every held delivery of FEED (a site migration that changed every id).

    \b
    Example:
      relay queue drop-held quadrature
    """
    _move_feed(state_dir, feed, DROP_HELD)


def _move_feed(state_dir: Path, feed: str, move: Move) -> None:
    from relay.store import epoch

    with run_lock(state_dir):
        store = _open_existing(state_dir)
        count = store.move_feed(feed, move, epoch(_now()))
        click.echo(f"feed {feed}: {count} {move.allowed_from[0]} deliveries now {move.to}")


@cli.command()
@common_options
@click.option("--every", default=5, show_default=True, help="Minutes between runs.")
@click.option(
    "--log", "log_path", type=click.Path(path_type=Path), default=None, help="Log file (default: STATE_DIR/relay.log)."
)
@click.option("--install", is_flag=True, help="Add the line to your crontab (once; running it again changes nothing).")
def cron(
    config_path: Path, state_dir: Path, verbose: bool, quiet: bool, every: int, log_path: Path | None, install: bool
) -> None:
    """Print the crontab line for `relay run`, with absolute paths; --install adds it.

    \b
    Example:
      relay cron -c ~/relay/feeds.yaml --install
    """
    beside_python = Path(sys.executable).parent / "relay"
    executable = str(beside_python) if beside_python.exists() else shutil.which("relay") or f"{sys.executable} -m relay"
    log = (log_path or state_dir / "relay.log").resolve()
    command = (
        f"{executable} run -c {shlex.quote(str(config_path.resolve()))}"
        f" --state-dir {shlex.quote(str(state_dir.resolve()))} >> {shlex.quote(str(log))} 2>&1"
    )
    line = f"*/{every} * * * * {command}" if every < 60 else f"0 * * * * {command}"
    if not install:
        click.echo(line)
        return
    if shutil.which("crontab") is None:
        raise StateError("no crontab command on this machine; add the line with your scheduler:\n" + line)
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)  # noqa: S607
    existing = current.stdout if current.returncode == 0 else ""
    if command in existing:
        click.echo("crontab already has the line; nothing changed")
        return
    new = existing + ("" if existing.endswith("\n") or not existing else "\n") + line + "\n"
    subprocess.run(["crontab", "-"], input=new, text=True, check=True)  # noqa: S607
    click.echo(f"added to crontab: {line}")
