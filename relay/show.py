"""How reports are shown: the text lines and JSON of preview, run, status, history and the
queue. Each function returns what to print (a line and whether it goes to stderr); cli
prints it, every line through its secret redaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.config import Account, Campaign, Config
from relay.models import SENT_ACTIONS, DeliveryState
from relay.store import Delivery, Store, ThreadPart

if TYPE_CHECKING:
    from relay.pipeline import RunReport
    from relay.poll import FeedReport


def truncate(text: str, max_graphemes: int) -> str:
    """relay.text's, imported when a line needs it: a cron run with nothing to say does not
    load the grapheme tables."""
    from relay.text import truncate

    return truncate(text, max_graphemes)


Line = tuple[str, bool]  # the text, and whether it is an error or warning (stderr)
TIME_FORMAT = "%Y-%m-%d %H:%M"


def feed_json(report: FeedReport, redact: Callable[[str], str]) -> dict[str, Any]:
    return {
        "name": report.name,
        "url": redact(report.url),
        "status": report.status,
        "error": None if report.error is None else redact(report.error),
        "entries": report.entries,
        "new": report.new,
        "warnings": [redact(w) for w in report.warnings],
    }


def preview_lines(
    accounts: Mapping[str, Account],
    feeds: list[dict[str, Any]],
    posts: list[dict[str, Any]],
    *,
    verbose: bool,
    quiet: bool,
) -> list[Line]:
    lines: list[Line] = []
    for feed in feeds:
        if feed["status"] == "error":
            lines.append((f"relay: feed {feed['name']}: {feed['error']}", True))
        elif not quiet:
            lines.append(
                (f"feed {feed['name']}: {feed['status']}, {feed['entries']} entries, {feed['new']} new", False)
            )
        lines += [(f"warning: feed {feed['name']}: {warning}", True) for warning in feed["warnings"]]
    if quiet:
        return lines
    for name, account in accounts.items():
        mine = [p for p in posts if p["account"] == name]
        shown = [p for p in mine if p["action"] != "skip" or verbose or p["text"]]
        counts = {a: sum(1 for p in mine if p["action"] == a) for a in ("hold", "skip")}
        counts["post"] = sum(1 for p in mine if p["action"] in SENT_ACTIONS)
        lines.append(("", False))
        lines.append(
            (
                f"== {name} ({account.platform}): {counts['post']} to post, {counts['hold']} held,"
                f" {counts['skip']} skipped",
                False,
            )
        )
        for post in shown:
            lines += [(text, False) for text in _preview_post(post, verbose=verbose)]
        skipped = counts["skip"] - sum(1 for p in shown if p["action"] == "skip")
        if skipped:
            lines.append((f"   ({skipped} skipped entries not shown; -v lists them with their reasons)", False))
    return lines


def _preview_post(post: dict[str, Any], *, verbose: bool) -> list[str]:
    reason = f" ({post['reason']})" if post["reason"] else ""
    length = f" {post['length']}/{post['limit']}" if post["length"] is not None else ""
    # where the language came from, when not from defaults: a reader checks it there
    source = post.get("language_source", "default")
    language = f" [{post['language']} from {source}]" if source != "default" else ""
    # an untitled item (a Mastodon status, a Bluesky post) is shown by its text's first line
    title = post["title"] or (post["text"] or "").split("\n")[0] or "(untitled)"
    lines = [f"-- [{post['action']}] {post['feed']}: {truncate(title, 70)}{length}{language}{reason}"]
    if post.get("original"):
        lines.append(f"   [original] {post['original']}")
    if post.get("credit"):
        lines.append(f"   [credit] {post['credit']} (a live mention)")
    if post["action"] == "boost":
        lines.append(f"   [boosting] {post['original']} (as it is; if it is gone, posted instead:)")
    if post["text"] and (post["action"] != "skip" or verbose):
        if post.get("spoiler_text"):
            lines.append(f"   CW: {post['spoiler_text']}")
        lines += [f"   | {line}" for line in post["text"].split("\n")]
        if post["embed"] and "record" in post["embed"]:
            lines.append(f"   [quoting] {post['embed']['record']['uri']}")
        elif post["embed"] and "images" in post["embed"]:
            pass  # listed below
        elif post["embed"]:
            card = post["embed"]["external"]
            lines.append(f"   [card] {card['title']} — {truncate(card['description'], 80)} <{card['uri']}>")
        for image in post.get("images") or []:
            lines.append(f"   [image] {image['url']} — {truncate(image['alt'], 80)}")
        replies = post.get("thread") or []
        for number, reply in enumerate(replies, start=2):
            lines.append(f"   [reply {number}/{len(replies) + 1}] {reply['length']}/{reply['limit']}")
            lines += [f"   | {line}" for line in reply["text"].split("\n")]
    return lines


def run_lines(report: RunReport, state_dir: Path, *, verbose: bool, quiet: bool, dry_run: bool) -> list[Line]:
    lines: list[Line] = []
    if report.first_run and not quiet:
        lines.append(
            (
                f"warning: no state yet in {state_dir}: first run; each feed relays at most its `backfill` newest"
                " items (`relay seed` relays none)",
                True,
            )
        )
    for feed in report.polled:
        if feed.status == "error":
            lines.append((f"relay: feed {feed.name}: {feed.error}", True))
        elif verbose:
            lines.append((f"feed {feed.name}: {feed.status}, {feed.entries} entries, {feed.new} new", False))
        lines += [(f"warning: feed {feed.name}: {warning}", True) for warning in feed.warnings]
    if not report.polled and verbose:
        lines.append(("no feed is due", False))
    if verbose:
        lines += [(f"campaign {name}: its occurrence due now is queued", False) for name in report.campaigns]
    lines += [(f"relay: {line}", True) for line in report.start_errors]
    lines += [(f"warning: {warning}", True) for warning in report.target_warnings]
    delivered = report.delivery
    if delivered is None:
        return lines
    from relay.deliver import Outcome

    for event in delivered.events:
        if event.outcome == Outcome.FAILED:
            lines.append(
                (
                    f"relay: account {event.account}: delivery {event.delivery_id} ({event.feed}:"
                    f" {(event.title or '(untitled)')[:60]}) failed: {event.detail}",
                    True,
                )
            )
        elif event.outcome == Outcome.RETRY:
            lines.append(
                (
                    f"relay: account {event.account}: delivery {event.delivery_id} ({event.feed}) will be retried:"
                    f" {event.detail}",
                    True,
                )
            )
        elif not verbose:
            continue
        elif event.outcome == Outcome.DROPPED:
            lines.append(
                (
                    f"not posted to {event.account}: {event.feed}: {truncate(event.title or '(untitled)', 70)}: {event.detail}",
                    False,
                )
            )
        else:
            prefix = "would post" if dry_run else "posted"
            title = truncate(event.title or "(untitled)", 70)
            text = f"{prefix} to {event.account}: {event.feed}: {title} {event.url}".rstrip()
            if event.detail.startswith(("the first of a thread", "the rest of its thread")):
                text += f" ({event.detail})"
            lines.append((text, False))
    lines += [(f"relay: {line}", True) for line in delivered.account_errors]
    if verbose:
        lines += [(f"pacing {name}: {why}", False) for name, why in delivered.pacing.items()]
    return lines


def iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC).isoformat()


def _when(value: float | None) -> str:
    return "never" if value is None else datetime.fromtimestamp(value, tz=UTC).strftime(TIME_FORMAT)


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "account": d.account,
        "feed": d.feed,
        "title": d.title,
        "link": d.link,
        "state": d.state,
        "attempts": d.attempts,
        "queued_at": iso(d.queued_at),
        "next_attempt_at": iso(d.next_attempt_at),
        "posted_at": iso(d.posted_at),
        "remote_id": d.remote_id,
        "url": d.remote_url,
        "last_error": d.last_error,
    }


def status_json(
    store: Store, redact: Callable[[str], str], config: Config | None = None, now: datetime | None = None
) -> dict[str, Any]:
    feeds = [
        {
            "name": s.name,
            "url": redact(s.url),
            "last_polled_at": iso(s.last_polled_at),
            "last_ok_at": iso(s.last_ok_at),
            "next_due_at": iso(s.next_due_at),
            "consecutive_failures": s.consecutive_failures,
            "last_error": None if s.last_error is None else redact(s.last_error),
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
                "blocked_until": iso(known.blocked_until),
                "last_error": known.last_error,
                "logins": known.logins,
                "last_posted_at": iso(store.last_posted_at(name)),
                "window": _window_json(config.accounts.get(name) if config else None, now or datetime.now(UTC)),
            }
        )
    held = [delivery_json(d) for d in store.deliveries(states=[DeliveryState.HELD])]
    failed = [delivery_json(d) for d in store.deliveries(states=[DeliveryState.FAILED])]
    campaigns = [
        _campaign_json(campaign, now or datetime.now(UTC)) for campaign in (config.campaigns if config else ())
    ]
    return {"feeds": feeds, "accounts": accounts, "held": held, "failed": failed, "campaigns": campaigns}


def _short(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _campaign_json(campaign: Campaign, now: datetime) -> dict[str, Any]:
    from relay.calls import next_occurrence

    upcoming = next_occurrence(campaign, now)
    return {
        "name": campaign.name,
        "every": _short(campaign.every.total_seconds()),
        "from": campaign.start.isoformat(),
        "until": campaign.until.isoformat() if campaign.until else None,
        "next": upcoming.isoformat() if upcoming else None,
        "next_local": upcoming.strftime("%a %Y-%m-%d %H:%M %Z") if upcoming else None,  # on from's clock
    }


def _window_json(account: Account | None, now: datetime) -> dict[str, Any] | None:
    """An account's posting window: open now, or when it next opens."""
    from relay.window import describe_next, is_open, next_open

    window = account.pacing.window if account else None
    if window is None:
        return None
    return {
        "window": window.text,
        "open": is_open(window, now),
        "next_open": next_open(window, now).isoformat(),
        "opens": describe_next(window, now).removeprefix("opens "),  # on the window's clock
    }


def status_lines(store: Store, status: dict[str, Any]) -> list[str]:
    lines = [f"state: {store.path}", "feeds:"]
    for s in store.feed_states().values():
        line = f"  {s.name}: last poll {_when(s.last_polled_at)}, next {_when(s.next_due_at)}, {s.entries or 0} entries"
        if s.last_error:
            line += f", FAILING x{s.consecutive_failures}: {s.last_error}"
        lines.append(line)
    accounts, held, failed = status["accounts"], status["held"], status["failed"]
    lines.append("accounts:" if accounts else "accounts: nothing queued or posted yet")
    for account in accounts:
        outbox = ", ".join(f"{n} {state}" for state, n in sorted(account["outbox"].items())) or "nothing yet"
        line = f"  {account['name']}: {outbox}"
        if account["blocked_until"]:
            line += f"; waiting until {account['blocked_until']} ({account['last_error']})"
        window = account.get("window")
        if window:
            shown = "open" if window["open"] else f"closed, opens {window['opens']}"
            line += f"; posting window {window['window']}: {shown}"
        lines.append(line)
    for campaign in status.get("campaigns") or []:
        upcoming = campaign["next_local"] or "none (over)"
        lines.append(f"campaign {campaign['name']}: every {campaign['every']}, next {upcoming}")
    if held:
        lines.append(f"held ({len(held)}): release with `relay queue release FEED`, drop with `relay queue drop ID`")
        lines += [f"  #{d['id']} {d['account']} {d['feed']}: {d['title'][:70]}" for d in held[:50]]
    if failed:
        lines.append(f"failed ({len(failed)}): `relay queue retry ID` once the cause is fixed")
        lines += [f"  #{d['id']} {d['account']} {d['feed']}: {d['title'][:60]}: {d['last_error']}" for d in failed[:50]]
    return lines


def part_json(part: ThreadPart) -> dict[str, Any]:
    return {
        "part": part.part,
        "state": part.state,
        "posted_at": iso(part.posted_at),
        "remote_id": part.remote_id,
        "url": part.remote_url,
        "last_error": part.last_error,
    }


def history_line(d: dict[str, Any]) -> str:
    line = f"{d['posted_at'][:16].replace('T', ' ')} {d['account']} {d['feed']}: {d['title'][:60]} {d['url'] or ''}"
    replies = d.get("thread") or []
    if replies:
        posted = 1 + sum(1 for reply in replies if reply["state"] == "posted")
        line = line.rstrip() + f" (thread: {posted} of {len(replies) + 1} posted)"
    if d.get("last_error"):  # a posted thread whose reply failed
        line += f" [{d['last_error']}]"
    return line


def queue_line(d: dict[str, Any]) -> str:
    error = f" [{d['last_error']}]" if d["last_error"] else ""
    return f"#{d['id']} {d['state']} {d['account']} {d['feed']}: {d['title'][:60]}{error}"
