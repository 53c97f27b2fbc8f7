"""The command line: parse options, build the objects (relay.edge), call the pipeline, print
its report (relay.show), map errors to exit codes. With edge, the only module that prints or
exits."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from relay import __version__
from relay.edge import (
    config_for_masking,
    context,
    default_state_dir,
    load,
    now,
    open_existing,
    open_store,
    redact,
    run_lock,
    state_failure,
    terminal_progress,
)
from relay.errors import ConfigError, ExitCode, LockedError, RelayError, StateError
from relay.models import DROP, DROP_HELD, RELEASE, RETRY, WAITING, DeliveryState, Move

if TYPE_CHECKING:  # imported when used: `relay --help` and a no-op run stay fast
    from relay.config import Config, Feed
    from relay.context import Progress

F = TypeVar("F", bound=Callable[..., Any])


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
                # "relay add: …" already names the command
                click.echo(line if line.startswith("relay ") else f"relay: {line}", err=True)
            sys.exit(int(exc.exit_code))
        except Exception as exc:
            message = state_failure(exc, kwargs["state_dir"])
            if traceback or message is None:
                raise
            click.echo(f"relay: {message}", err=True)
            sys.exit(int(ExitCode.USAGE))

    return wrapper  # type: ignore[return-value]


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
      relay post --template appel post a call to action once, to every account
      relay watch                 or run as a service, without cron (relay systemd)
      relay status --check        one line for monitoring: exit 0 ok, 1 warning, 2 critical

    Exit codes: 0 success, 1 something failed but the run went on, 2 usage,
    configuration or state error, 3 another run holds the lock.
    """


def main() -> None:
    cli(prog_name="relay")


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path())
def init(directory: Path) -> None:
    """Write a starter feeds.yaml, templates/ and .env.example into DIRECTORY.

    Existing files are left alone.

    \b
    Example:
      relay init ~/relay && cd ~/relay && relay check
    """
    from relay.pipeline import write_starter

    written = write_starter(directory)
    click.echo(
        f"wrote {len(written)} files in {directory}" if written else f"{directory}: nothing to write, all files exist"
    )
    if written:
        click.echo(
            "next: edit feeds.yaml (your accounts; `relay add URL` adds a site), cp .env.example .env and"
            " fill in the secrets, then relay check --online and relay preview"
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
    from relay.pipeline import check_templates

    config = load(config_path)
    problems, card_warnings = check_templates(config, now())
    if problems:
        raise ConfigError(problems)
    for warning in [*config.warnings, *card_warnings]:
        if not quiet:
            click.echo(f"warning: {redact(config, warning)}", err=True)
    failed = False
    if online:
        from relay.pipeline import check_accounts

        if config.warnings:
            raise ConfigError(list(config.warnings))
        with contextlib.closing(open_store(state_dir)) as store:
            for name, description, error in check_accounts(config, store, context(config, state_dir=state_dir)):
                if error is None:
                    click.echo(redact(config, f"account {name}: {description}"))
                else:
                    failed = True
                    click.echo(redact(config, f"relay: account {name}: {error}"), err=True)
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
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the posts as one page instead, as Mastodon and Bluesky would show them side by side.",
)
@click.option("--open", "open_page", is_flag=True, help="Open the --html page in the web browser.")
def preview(
    config_path: Path,
    state_dir: Path,
    verbose: bool,
    quiet: bool,
    output_format: str,
    all_items: bool,
    feed_names: tuple[str, ...],
    html_path: Path | None,
    open_page: bool,
) -> None:
    """Fetch the feeds and show exactly what the next run would post, per account.

    Changes nothing: no state written, no account contacted, no secret needed.
    Each post says its action (post, boost, quote; held, skipped) and, where they
    apply, the original it boosts or quotes, its credit and its images.

    --html FILE writes a self-contained page of the same posts instead of the
    text listing (JSON with --format json is still printed): each item a row,
    each account a column, with the link card, its thumbnail and the images
    (fetched, shrunk and embedded; at most 30 s are spent on them). The page
    loads nothing and runs no script. --open shows it in the browser.

    On a terminal, stderr shows the feeds fetched so far, the errors and the time
    (as seed, run -v, add and import do); nothing when it is not a terminal.

    \b
    Examples:
      relay preview -c examples/offline/feeds.yaml
      relay preview --feed quadrature --all        # tune a template on every entry
      relay preview --html preview.html --open     # see the posts as followers will
      relay preview --format json | jq '.posts[] | select(.action == "post" or .action == "thread")'
    """
    from relay.pipeline import plan
    from relay.store import Store

    if open_page and html_path is None:
        raise click.UsageError("--open opens the page that --html FILE writes: give --html FILE")
    if html_path is not None and not html_path.resolve().parent.is_dir():
        raise click.UsageError(f"--html {html_path}: the folder {html_path.parent} does not exist")
    config = load(config_path)
    feeds = config.feeds_named(feed_names)
    store = Store.open_read_only(state_dir)
    planned = plan(config, store, context(config, state_dir=state_dir, progress=not quiet), feeds, all_items=all_items)
    from relay import show

    feeds_out = [show.feed_json(report, lambda text: redact(config, text)) for report in planned.feeds]
    posts_out = []
    for post in planned.posts:
        entry = dataclasses.asdict(post)
        if entry["spoiler_text"] is None:
            del entry["spoiler_text"]
        posts_out.append(entry)
    written = _write_page(config, html_path, feeds_out, posts_out, quiet=quiet) if html_path else None
    if output_format == "json":
        # item keys and links resolved against a feed URL can carry its credentials: mask all
        click.echo(redact(config, json.dumps({"feeds": feeds_out, "posts": posts_out}, ensure_ascii=False, indent=2)))
    elif html_path is not None:
        for report in feeds_out:
            if report["status"] == "error":
                click.echo(redact(config, f"relay: feed {report['name']}: {report['error']}"), err=True)
    else:
        _echo(config, show.preview_lines(config.accounts, feeds_out, posts_out, verbose=verbose, quiet=quiet))
    for warning in config.warnings:
        if not quiet and output_format == "text":
            # a secret left unset is a warning here, an error for `relay run`
            needed = " (needed by `relay run`)" if "is not set in the environment" in warning else ""
            click.echo(f"warning: {redact(config, warning)}{needed}", err=True)
    if written and not quiet:
        click.echo(written, err=True)
    if open_page and html_path:
        _open(html_path)
    if any(f["status"] == "error" for f in feeds_out):
        sys.exit(ExitCode.PARTIAL)


def _write_page(
    config: Config,
    path: Path,
    feeds: list[dict[str, Any]],
    posts: list[dict[str, Any]],
    *,
    quiet: bool,
) -> str:
    """preview --html: the page written, every string it shows through the secret
    redaction; what to say about it."""
    from relay.page import Pictures, render_page, summary

    def redacted(value: Any) -> Any:
        if isinstance(value, str):
            return redact(config, value)
        if isinstance(value, list):
            return [redacted(v) for v in value]
        if isinstance(value, dict):
            return {k: redacted(v) for k, v in value.items()}
        return value

    pictures = Pictures(allow_private=config.network.allow_private, progress=terminal(quiet))
    page = render_page(
        feeds,
        posts,
        source=str(config.path),
        generated=now().astimezone(),
        pictures=pictures,
        accounts={name: account.instance for name, account in config.accounts.items()},
        redact=redacted,
    )
    page = redact(config, page)  # and the page once more, whole
    try:
        path.write_text(page, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot write the page: {exc.strerror or exc}") from None
    missing = sum(1 for thumb in pictures.thumbs.values() if not thumb.uri)
    left_out = f"; {missing} picture(s) left out, the page says why" if missing else ""
    return f"relay: preview page written to {path}: {summary(posts)}{left_out}"


def _open(path: Path) -> None:
    import webbrowser

    if not webbrowser.open(path.resolve().as_uri()):
        click.echo(f"relay: no web browser found to open {path}; open it yourself", err=True)


def terminal(quiet: bool) -> Progress:
    """Progress on stderr when it is a terminal (and not -q); else nothing at all."""
    from relay.context import NO_PROGRESS

    return NO_PROGRESS if quiet else terminal_progress()


def _echo(config: Config | None, lines: list[tuple[str, bool]]) -> None:
    """Print a report's lines, each through the secret redaction."""
    for text, err in lines:
        click.echo(redact(config, text), err=err)


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

    config = load(config_path)
    feeds = config.feeds_named(feed_names)
    with run_lock(state_dir), contextlib.closing(open_store(state_dir)) as store:
        reports = seed_feeds(config, store, context(config, state_dir=state_dir, progress=not quiet), feeds)
    failed = False
    for report in reports:
        if report.status == "error":
            failed = True
            click.echo(redact(config, f"relay: feed {report.name}: {report.error}"), err=True)
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
    config = load(config_path)
    if config.warnings and not dry_run:
        raise ConfigError([f"{w} (relay run needs it)" for w in config.warnings])
    feeds = config.feeds_named(feed_names)
    # a dry run works on a scratch copy of the state: it takes no lock and writes nothing
    try:
        with contextlib.nullcontext() if dry_run else run_lock(state_dir):
            failed = _run(config, state_dir, feeds, dry_run=dry_run, verbose=verbose, quiet=quiet)
    except LockedError:
        if not dry_run:
            _locked(config, state_dir)
        raise
    if failed:
        sys.exit(ExitCode.PARTIAL)


def _run(config: Config, state_dir: Path, feeds: list[Feed], *, dry_run: bool, verbose: bool, quiet: bool) -> bool:
    from relay.watch import run_cycle

    lines, failed = run_cycle(
        config, state_dir, feeds, dry_run=dry_run, verbose=verbose, quiet=quiet, progress=verbose and not quiet
    )
    _echo(config, lines)
    return failed


def _locked(config: Config, state_dir: Path) -> None:
    from relay.watch import note_locked

    _echo(config, note_locked(config, state_dir))


@cli.command()
@common_options
@click.argument("text", required=False)
@click.option("--template", "template_name", metavar="NAME", help="Render this template (e.g. appel) instead of TEXT.")
@click.option("--link", metavar="URL", default="", help="The link the post carries (the template's item.link).")
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="A template variable (vars.KEY); appel uses action and why.",
)
@click.option(
    "--to", "to", multiple=True, metavar="ACCOUNT", help="Only this account (repeatable; default: every account)."
)
@click.option(
    "--at", "at_text", metavar='"YYYY-MM-DD HH:MM"', help="Post then, not now (the pacing timezone, else the system's)."
)
@click.option(
    "--now", "skip_interval", is_flag=True, help="Skip min_interval (never max_per_day or the posting window)."
)
@click.option("--dry-run", is_flag=True, help="Show the post exactly as preview would; queue and send nothing.")
@click.option("--again", is_flag=True, help="Post a call already posted once, again (never needed to retry one).")
def post(
    config_path: Path,
    state_dir: Path,
    verbose: bool,
    quiet: bool,
    text: str | None,
    template_name: str | None,
    link: str,
    variables: tuple[str, ...],
    to: tuple[str, ...],
    at_text: str | None,
    skip_interval: bool,
    dry_run: bool,
    again: bool,
) -> None:
    """Post a call to action once to every account (or --to ones), through the outbox:
    exactly once (the same call again is not queued twice), paced, kept in history.

    \b
    Examples:
      relay post "Rassemblement samedi 14h devant le ministère de la Santé" --link https://…
      relay post --template appel --link https://www.mesopinions.com/petition/… \\
        --var action="Signez la pétition contre l'hébergement du Health Data Hub chez Microsoft" \\
        --var why="Nos données de santé doivent rester sous juridiction européenne." --dry-run
      relay post --template appel --link https://… --var action=… --at "2026-12-01 09:00"
    """
    from relay import show
    from relay.calls import TEXT_TEMPLATE, Call, call_key
    from relay.config import parse_moment
    from relay.pipeline import plan_call, send_call

    config = load(config_path)
    problems = []
    if bool(text) == bool(template_name):
        problems.append("relay post: give the TEXT to post, or --template NAME (not both)")
    if link and not re.match(r"^https?://[^/\s]+", link):
        problems.append(f"relay post: --link {link!r} is not an http(s) URL")
    pairs = []
    for variable in variables:
        key, sep, value = variable.partition("=")
        if not sep or not key.strip():
            problems.append(f"relay post: --var {variable!r} is not KEY=VALUE")
        pairs.append((key.strip(), value))
    unknown = [name for name in to if name not in config.accounts]
    if unknown:
        problems.append(f"relay post: --to {unknown[0]!r} is not an account of {config.path.name}")
    at = None
    if at_text:
        at = parse_moment(at_text, config.pacing)
        if at is None:
            problems.append(f'relay post: --at {at_text!r} is not a date and time like "2026-12-01 09:00"')
    if template_name:
        from relay.catalog import available, exists
        from relay.config import builtin_templates, call_variables_problem

        if not exists(available(config.template_dirs), template_name):
            problems.append(f"relay post: no template {template_name!r} (built in: {', '.join(builtin_templates())})")
        elif problem := call_variables_problem(template_name, dict(pairs)):
            problems.append(f"relay post: --var: {problem}")
    moment = now()
    if at is not None and at < moment - timedelta(minutes=1):
        problems.append(f"relay post: --at {at_text!r} is in the past (leave --at out to post now)")
    if problems:
        raise ConfigError(problems)
    accounts = list(to or config.accounts)
    call = Call(
        template=template_name or TEXT_TEMPLATE,
        text=text or "",
        link=link,
        vars=tuple(pairs),
        language=config.language,
        hashtags=config.hashtags,
        now=skip_interval,
    )
    key = call_key(call, accounts, at) + (f":again:{moment.isoformat()}" if again else "")
    closed = _windows_closed(config, accounts, at or moment)
    if dry_run:
        planned = [
            dataclasses.asdict(p if p.account not in closed else dataclasses.replace(p, reason=closed[p.account]))
            for p in plan_call(config, None, call, key, accounts)
        ]
        lines = show.preview_lines(
            {name: config.accounts[name] for name in accounts}, [], planned, verbose=True, quiet=False
        )
        _echo(config, lines)
        return
    with run_lock(state_dir), contextlib.closing(open_store(state_dir)) as store:
        new, ids, report = send_call(config, store, context(config, state_dir=state_dir), call, key, accounts, at)
        done = store.deliveries(ids=ids)
        waiting = [d for d in done if d.state in (DeliveryState.QUEUED, DeliveryState.SENDING)]
    listed = ", ".join(f"#{i}" for i in ids)
    plural = "deliveries" if len(ids) > 1 else "delivery"
    if not new:
        states = ", ".join(f"#{d.id} {d.state}" for d in done)
        click.echo(f"already queued once: {states}; the same call is never queued twice (--again posts it again)")
        return
    if report is None:
        assert at is not None
        click.echo(f"scheduled for {at:%Y-%m-%d %H:%M %Z}: {plural} {listed}")
        for name, why in closed.items():
            click.echo(f"{name}: {why}")
        return
    lines = show.run_lines(report, state_dir, verbose=True, quiet=False, dry_run=False)
    # what the call did, not the feeds' run: no "no feed is due", no pacing line
    _echo(
        config, [line for line in lines if not line[0].startswith(("no feed is due", "pacing ", "warning: no state"))]
    )
    for delivery in waiting:
        why = delivery.last_error or (report.delivery.pacing.get(delivery.account, "") if report.delivery else "")
        click.echo(f"queued: #{delivery.id} to {delivery.account} waits ({why or 'pacing'}); `relay run` posts it")
    if report.failed:
        sys.exit(ExitCode.PARTIAL)


@cli.command()
@common_options
@click.argument("url")
@click.option("--name", metavar="NAME", help="The feed's name in feeds.yaml (default: from its title).")
@click.option("--template", "template_name", metavar="NAME", help="Its template (default: defaults.template).")
@click.option(
    "--to", "to", multiple=True, metavar="ACCOUNT", help="Only this account (repeatable; default: every account)."
)
@click.option("--pick", type=int, metavar="N", help="The page names several feeds: take the N-th (1 is the first).")
def add(
    config_path: Path,
    state_dir: Path,
    verbose: bool,
    quiet: bool,
    url: str,
    name: str | None,
    template_name: str | None,
    to: tuple[str, ...],
    pick: int | None,
) -> None:
    """Find the feed behind a site's address and add it to feeds.yaml, comments kept: a home
    page (its <link rel="alternate">, else /feed/, /rss.xml, /atom.xml, /index.xml,
    /feed.xml), a Mastodon or Bluesky profile, or a feed. It shows the feed's title and
    newest items first. A new feed starts with backfill: 0: adding it never posts its past.

    \b
    Examples:
      relay add https://www.laquadrature.net/
      relay add https://framapiaf.org/@santenathon --name santenathon-masto --to mastodon
      relay add https://example.org/ --pick 2
    """
    from relay.discover import DiscoveryError, append_feed, canonical, discover, name_for

    config = load(config_path)
    problems = []
    if not re.match(r"^https?://[^/\s]+", url):
        problems.append(f"relay add: {url!r} is not an http(s) address")
    unknown = [account for account in to if account not in config.accounts]
    if unknown:
        problems.append(f"relay add: --to {unknown[0]!r} is not an account of {config.path.name}")
    if name is not None and (not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in {f.name for f in config.feeds}):
        problems.append(f"relay add: --name {name!r} must be a new name of letters, digits, - and _")
    if template_name:
        from relay.catalog import available, exists

        if not exists(available(config.template_dirs), template_name):
            problems.append(f"relay add: no template {template_name!r}")
    if problems:
        raise ConfigError(problems)
    try:
        found = discover(url, config, pick=pick, progress=terminal(quiet))
    except DiscoveryError as exc:
        raise ConfigError([f"relay add: {exc}"]) from None
    existing = {canonical(feed.fetch_url): feed.name for feed in config.feeds}
    if canonical(found.url) in existing:
        raise ConfigError(
            [f"relay add: {found.url} is already in {config.path.name} as {existing[canonical(found.url)]!r}"]
        )
    parsed = found.parsed
    click.echo(f"found {found.url} ({found.how})")
    if len(found.choices) > 1:
        for number, (choice, title) in enumerate(found.choices, start=1):
            mark = "*" if choice == found.url else " "
            click.echo(f"  {mark} --pick {number}: {choice}" + (f" ({title})" if title else ""))
    click.echo(f"  {parsed.title or '(untitled)'}: {parsed.entries} items")
    newest = sorted(parsed.items, key=lambda item: item.published.timestamp() if item.published else 0, reverse=True)
    for item in newest[:3]:
        when = f"{item.published:%Y-%m-%d} " if item.published else ""
        click.echo(f"  - {when}{(item.title or item.summary)[:80]}")
    entry: dict[str, Any] = {
        "name": name or name_for(found, found.url, {f.name for f in config.feeds}),
        "url": found.url,
    }
    if template_name:
        entry["template"] = template_name
    if to:
        entry["to"] = list(to)
    entry["backfill"] = 0
    append_feed(config.path, entry)
    click.echo(
        f"added to {config.path.name} as {entry['name']!r} (backfill: 0: its past is never posted); `relay preview --feed {entry['name']}` shows what comes next"
    )


@cli.command("import")
@common_options
@click.argument("opml", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--categories-as-hashtags", is_flag=True, help="The folders a feed is in, in the reader, become its hashtags."
)
@click.option("--no-check", is_flag=True, help="Add the feeds without fetching them first.")
def import_opml(
    config_path: Path,
    state_dir: Path,
    verbose: bool,
    quiet: bool,
    opml: Path,
    categories_as_hashtags: bool,
    no_check: bool,
) -> None:
    """Add every feed of an OPML file (your feed reader's export) to feeds.yaml, as `relay
    add` does: comments kept, backfill: 0, feeds already there skipped and listed.

    Each new feed is fetched first (in parallel, through the same guarded fetcher), and
    one that does not answer as a feed now is not added, with its reason: an old reader's
    export is full of feeds that died, and each would fail every run. --no-check adds
    them all. Exit code 1 when a feed was left out.

    \b
    Example:
      relay import abonnements.opml --categories-as-hashtags
    """
    from relay.discover import (
        OPML_MAX_BYTES,
        DiscoveryError,
        append_feeds,
        canonical,
        check_feeds,
        name_for,
        read_opml,
    )
    from relay.hashtags import category_hashtag

    config = load(config_path)
    size = opml.stat().st_size
    if size > OPML_MAX_BYTES:  # refused before it is read: its size never decides our memory
        raise ConfigError(
            [f"relay import: {opml.name}: {size:,} bytes: an OPML file is refused over {OPML_MAX_BYTES:,}"]
        )
    try:
        subscriptions = read_opml(opml.read_bytes(), opml.name)
    except DiscoveryError as exc:
        raise ConfigError([f"relay import: {exc}"]) from None
    existing = {canonical(feed.fetch_url): feed.name for feed in config.feeds}
    taken = {feed.name for feed in config.feeds}
    entries: list[dict[str, Any]] = []
    for subscription in subscriptions:
        known = canonical(subscription.url)
        if known in existing:
            click.echo(f"skipped {subscription.url}: already in {config.path.name} as {existing[known]!r}")
            continue
        name = name_for(subscription.title, subscription.url, taken)
        taken.add(name)
        existing[known] = name
        entry: dict[str, Any] = {"name": name, "url": subscription.url, "backfill": 0}
        tags = [tag for tag in (category_hashtag(c) for c in subscription.categories) if tag]
        if categories_as_hashtags and tags:
            entry["hashtags"] = list(dict.fromkeys(tags))
        entries.append(entry)
    failing = {} if no_check else check_feeds([entry["url"] for entry in entries], config, terminal(quiet))
    for url, reason in failing.items():
        if reason.startswith("an HTML page, not a feed"):
            reason = f"a web page, not a feed: `relay add {url}` finds the feed a page names"
        click.echo(f"relay import: not added {url}: {reason}", err=True)
    entries = [entry for entry in entries if entry["url"] not in failing]
    for entry in entries:
        click.echo(f"added {entry['name']}: {entry['url']}")
    append_feeds(config.path, entries)
    left_out = f", {len(failing)} not added (they do not answer as feeds now; --no-check adds them)" if failing else ""
    click.echo(
        f"{len(entries)} feeds added to {config.path.name} (backfill: 0),"
        f" {len(subscriptions) - len(entries) - len(failing)} skipped{left_out}"
    )
    if failing:
        sys.exit(ExitCode.PARTIAL)


@cli.command("export")
@common_options
@click.option("--opml", "as_opml", is_flag=True, required=True, help="As OPML 2.0 (the format feed readers import).")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file (default: stdout)."
)
def export_opml(
    config_path: Path, state_dir: Path, verbose: bool, quiet: bool, as_opml: bool, output: Path | None
) -> None:
    """Write feeds.yaml's feeds as an OPML 2.0 list, for a feed reader or another relay.

    \b
    Example:
      relay export --opml -o relay-feeds.opml
    """
    from relay.discover import write_opml

    text = write_opml(load(config_path, check_templates=False))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


def _windows_closed(config: Config, accounts: list[str], when: datetime) -> dict[str, str]:
    """The accounts whose posting window is closed at `when`: a call waits for it to open."""
    from relay.schedule import window_closed

    closed = {}
    for name in accounts:
        why = window_closed(config.accounts[name].pacing, when.timestamp())
        if why:
            closed[name] = f"queued now, posted once the posting window opens ({why.split(': ', 1)[1]})"
    return closed


def _status_check(config_path: Path, state_dir: Path) -> None:
    """`relay status --check`: exactly one line on stdout, whatever fails, and 0, 1 or 2."""
    from relay.alerts import check_line

    if not config_path.exists():
        click.echo(f"CRITICAL: {config_path}: no such file (give the probe -c /path/to/feeds.yaml)")
        sys.exit(2)
    try:
        config = load(config_path, check_templates=False)
    except RelayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(redact(None, f"CRITICAL: {config_path.name} does not load: {first}"))
        sys.exit(2)
    if not (state_dir / "relay.db").exists():
        click.echo(f"WARNING: no state yet in {state_dir}: relay has not run yet")
        sys.exit(1)
    try:
        store = open_existing(state_dir)
    except RelayError as exc:
        click.echo(redact(config, f"CRITICAL: {exc}"))
        sys.exit(2)
    code, line = check_line(config, store, now().timestamp())
    click.echo(redact(config, line))
    sys.exit(code)


@cli.command()
@common_options
@format_option
@click.option(
    "--check",
    is_flag=True,
    help="One line for a monitoring probe; exit 0 ok, 1 warning (held items, failed deliveries),"
    " 2 critical (a feed failing past alerts.feed_failing_after, an account stopped, the lock stuck).",
)
def status(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, output_format: str, check: bool) -> None:
    """Feeds (last poll, next poll, errors), the outbox per account, held items.

    \b
    Examples:
      relay status
      relay status --format json
      relay status --check      # one line; exit 0 ok, 1 warning, 2 critical
    """
    from relay import show

    if check:
        _status_check(config_path, state_dir)
    store = open_existing(state_dir)
    config = config_for_masking(config_path)
    data = show.status_json(store, lambda text: redact(config, text), config, now())
    if output_format == "json":
        click.echo(redact(config, json.dumps(data, ensure_ascii=False, indent=2)))
        return
    _echo(config, [(line, False) for line in show.status_lines(store, data)])


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
    from relay import show

    store = open_existing(state_dir)
    posted = store.deliveries(states=[DeliveryState.POSTED], newest_posted_first=True, limit=limit)
    # a thread's replies, each with its own state (thread: N)
    rows = [{**show.delivery_json(d), "thread": [show.part_json(p) for p in store.thread_parts(d.id)]} for d in posted]
    if output_format == "json":
        click.echo(redact(None, json.dumps(rows, ensure_ascii=False, indent=2)))
        return
    for d in rows:
        click.echo(redact(None, show.history_line(d)).rstrip())


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
    from relay import show

    store = open_existing(state_dir)
    wanted = [DeliveryState(s) for s in states] if states else WAITING
    rows = [show.delivery_json(d) for d in store.deliveries(states=wanted)]
    if output_format == "json":
        click.echo(redact(None, json.dumps(rows, ensure_ascii=False, indent=2)))
        return
    for d in rows:
        click.echo(redact(None, show.queue_line(d)))


def _move(state_dir: Path, ids: tuple[int, ...], move: Move) -> None:
    from relay.store import epoch

    with run_lock(state_dir):
        store = open_existing(state_dir)
        store.move(ids, move, epoch(now()))
        click.echo(f"{len(ids)} deliveries now {move.to}")


@queue.command("retry")
@common_options
@click.argument("ids", nargs=-1, type=int, required=True)
def queue_retry(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, ids: tuple[int, ...]) -> None:
    """Queue failed (or dropped) deliveries again, with their attempts reset; for a posted
    thread whose replies failed (`relay history` says so), queue those replies again.

    \b
    Example:
      relay queue retry 42 43
    """
    from relay.store import epoch

    with run_lock(state_dir):
        store = open_existing(state_dir)
        threads = [i for i in ids if (d := store.delivery(i)) and d.state == DeliveryState.POSTED]
        replies = sum(store.retry_parts(i, epoch(now())) for i in threads)
        rest = tuple(i for i in ids if i not in threads)
        if rest:
            store.move(rest, RETRY, epoch(now()))
        if threads and not replies:
            raise StateError(
                f"delivery #{threads[0]} is posted: only failed deliveries and failed thread replies can be retried"
            )
    click.echo(f"{len(rest)} deliveries now queued" + (f"; {replies} thread replies queued again" if threads else ""))


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
        store = open_existing(state_dir)
        count = store.move_feed(feed, move, epoch(now()))
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


@cli.command()
@common_options
def watch(config_path: Path, state_dir: Path, verbose: bool, quiet: bool) -> None:
    """Run relay as a service, for hosts without cron: the same code as `relay run`, at each
    feed's `every`, each account's next allowed post and each campaign's next occurrence,
    asleep in between. One line per action on stderr. feeds.yaml is reloaded when it
    changes (at least every 5 minutes, at once on SIGHUP); a new file that does not load
    keeps the old one and is reported by the alerts. SIGTERM or SIGINT: the delivery under
    way ends, then it exits 0. It takes the same lock as `relay run`.

    \b
    Example:
      relay watch -c ~/relay/feeds.yaml
    """
    from relay.watch import Watcher

    sys.exit(Watcher(config_path.resolve(), state_dir.resolve(), _echo, quiet=quiet).run())


@cli.command()
@common_options
@click.option(
    "--install",
    is_flag=True,
    help="Write the units to ~/.config/systemd/user ($XDG_CONFIG_HOME/systemd/user; their files are replaced).",
)
def systemd(config_path: Path, state_dir: Path, verbose: bool, quiet: bool, install: bool) -> None:
    """Print systemd user units: relay-watch.service (relay watch, always running), or
    relay-run.service with relay-run.timer (relay run every 5 minutes). Enable one of
    the two; --install writes all three files.

    \b
    Example:
      relay systemd -c ~/relay/feeds.yaml --install
      systemctl --user daemon-reload && systemctl --user enable --now relay-watch.service
    """
    from relay.edge import user_config_dir

    beside_python = Path(sys.executable).parent / "relay"
    executable = str(beside_python) if beside_python.exists() else shutil.which("relay") or f"{sys.executable} -m relay"
    arguments = f"-c {shlex.quote(str(config_path.resolve()))} --state-dir {shlex.quote(str(state_dir.resolve()))}"
    units = systemd_units(executable, arguments, config_path.resolve().parent)
    if not install:
        for name, text in units.items():
            click.echo(f"# {name}\n{text}")
        return
    folder = user_config_dir() / "systemd" / "user"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text, encoding="utf-8")
        click.echo(f"wrote {folder / name}")
    click.echo(
        "then either: systemctl --user daemon-reload && systemctl --user enable --now relay-watch.service\n"
        "or:          systemctl --user daemon-reload && systemctl --user enable --now relay-run.timer\n"
        "(and `loginctl enable-linger` so they run while you are logged out)"
    )


def systemd_units(executable: str, arguments: str, folder: Path) -> dict[str, str]:
    service = (
        "[Unit]\nDescription=relay: {what}\n\n"
        "[Service]\nType={kind}\nWorkingDirectory={folder}\nExecStart={executable} {command} {arguments}\n{extra}"
    )
    return {
        "relay-watch.service": service.format(
            what="relay feeds to Mastodon and Bluesky (relay watch)",
            kind="simple",
            folder=folder,
            executable=executable,
            command="watch",
            arguments=arguments,
            extra="Restart=on-failure\nRestartSec=60\nKillSignal=SIGTERM\nTimeoutStopSec=120\n\n"
            "[Install]\nWantedBy=default.target\n",
        ),
        "relay-run.service": service.format(
            what="one relay run (started by relay-run.timer)",
            kind="oneshot",
            folder=folder,
            executable=executable,
            command="run",
            arguments=arguments,
            extra="SuccessExitStatus=3\n",  # another run held the lock: not a failure
        ),
        "relay-run.timer": "[Unit]\nDescription=relay run every 5 minutes\n\n"
        "[Timer]\nOnCalendar=*:0/5\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
    }
