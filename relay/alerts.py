"""Alerts: the problems that need a person, found in the state after each run, and told to
the owner (feeds.yaml's `alerts:`) once when each starts and once when it ends:

- a feed failing for more than alerts.feed_failing_after (default 24 hours);
- items held by the flood guard;
- deliveries, or a thread's replies, marked failed;
- an account stopped (its token or session refused);
- runs that could not take the lock for more than an hour.

Three ways to tell: a ping URL (a healthchecks-style dead-man switch: URL/start when a run
starts, URL when it went well, URL/fail with the problems when not), an email through SMTP
(smtplib, TLS), and a Mastodon direct message. A way that fails gives a warning, never a
failed run. `relay status --check` reads the same problems, for a monitoring probe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.config import Alerts, Config
from relay.models import DeliveryState
from relay.store import Store

if TYPE_CHECKING:
    from relay.context import Context
    from relay.pipeline import RunReport

LOCK_HELD_AFTER = 3600  # a lock held this long by another run is a problem
PING_TIMEOUT = 10.0
SMTP_TIMEOUT = 20.0
DM_GRAPHEMES = 480  # a direct message stays within Mastodon's default 500


@dataclass(frozen=True)
class Problem:
    key: str  # what it is about, stable while it lasts: feed:NAME, held:FEED:ACCOUNT, failed:ID…
    severity: str  # warning or critical
    text: str  # one line


def problems(config: Config | None, store: Store, now: float) -> list[Problem]:
    """Every problem the state shows now, critical ones first."""
    from relay.text import truncate

    after = (config.alerts if config else Alerts()).feed_failing_after.total_seconds()
    names = {feed.name for feed in config.feeds} if config else None
    found: list[Problem] = []
    for state in store.feed_states().values():
        if names is not None and state.name not in names:
            continue
        since = state.failing_since
        if state.consecutive_failures and since is not None and now - since >= after:
            found.append(
                Problem(
                    f"feed:{state.name}",
                    "critical",
                    f"feed {state.name} failing for {_duration(now - since)} ({state.consecutive_failures} polls):"
                    f" {state.last_error}",
                )
            )
    for key, (since, text) in sorted(store.conditions().items()):
        if key == "lock" and now - since < LOCK_HELD_AFTER:
            continue
        found.append(Problem(key, "critical", text))
    for (feed, account), count in sorted(store.held_counts().items()):
        found.append(
            Problem(
                f"held:{feed}:{account}",
                "warning",
                f"{count} item{'s' if count > 1 else ''} of feed {feed} held by the flood guard for {account}"
                f" (`relay queue release {feed}` or `relay queue drop-held {feed}`)",
            )
        )
    for d in store.deliveries(states=[DeliveryState.FAILED]):
        found.append(
            Problem(
                f"failed:{d.id}",
                "warning",
                f"delivery #{d.id} to {d.account} ({d.feed}: {truncate(d.title or '(untitled)', 60)}) failed:"
                f" {d.last_error}",
            )
        )
    for d in store.failed_threads():
        found.append(
            Problem(f"thread:{d.id}", "warning", f"delivery #{d.id} to {d.account} ({d.feed}): {d.last_error}")
        )
    return sorted(found, key=lambda p: p.severity != "critical")


def check_line(config: Config | None, store: Store, now: float) -> tuple[int, str]:
    """`relay status --check`: an exit code (0 ok, 1 warning, 2 critical) and one line."""
    found = problems(config, store, now)
    if not found:
        feeds = len(config.feeds) if config else len(store.feed_states())
        return 0, f"OK: {feeds} feeds, nothing failing"
    worst = 2 if found[0].severity == "critical" else 1
    label = "CRITICAL" if worst == 2 else "WARNING"
    shown = "; ".join(p.text for p in found[:3])
    more = f"; and {len(found) - 3} more (relay status)" if len(found) > 3 else ""
    return worst, f"{label}: {len(found)} problem{'s' if len(found) > 1 else ''}: {shown}{more}"


def note_run(
    store: Store, report: RunReport, now: float, config: Config | None = None, *, config_loaded: bool = True
) -> None:
    """What a run saw that the state keeps nowhere else: accounts stopped (and back), that
    it took the lock, and that feeds.yaml loads (relay watch reports when it does not)."""
    conditions = store.conditions()
    for key in conditions:
        gone = key.startswith("account:") and config is not None and key.split(":", 1)[1] not in config.accounts
        if key == "lock" or (key == "config" and config_loaded) or gone:
            store.clear_condition(key)
    delivery = report.delivery
    if delivery is None:
        return
    for name, reason in delivery.stopped.items():
        store.set_condition(f"account:{name}", f"account {name} stopped: {reason}", now)
    posted = {event.account for event in delivery.events if event.outcome == "posted"}
    for name in posted - set(delivery.stopped):
        if f"account:{name}" in conditions:
            store.clear_condition(f"account:{name}")


def note_locked(store: Store, now: float) -> None:
    store.set_condition("lock", "relay run could not take the lock for more than an hour: is a run stuck?", now)


def ping_start(config: Config, context: Context) -> str | None:
    """URL/start, as a run starts; a warning line when it fails."""
    if not config.alerts.ping:
        return None
    return _ping(config, context, config.alerts.ping.rstrip("/") + "/start", None)


def notify(
    config: Config, store: Store, context: Context, *, run_failed: bool, now: float, ping: bool = True
) -> list[str]:
    """After a run: ping (URL, or URL/fail with the problems), and email and direct-message
    the problems that started or ended since the last report. Warning lines for the ways
    that failed; the problems are reported again next run if every way failed."""
    alerts = config.alerts
    warnings: list[str] = []
    found = problems(config, store, now)
    if alerts.ping and ping:
        if found or run_failed:
            lines = [p.text for p in found] or ["the run failed: see its output"]
            warning = _ping(config, context, alerts.ping.rstrip("/") + "/fail", "\n".join(lines) + "\n")
        else:
            warning = _ping(config, context, alerts.ping, None)
        if warning:
            warnings.append(warning)
    before = store.alerted()
    current = {p.key: (p.severity, p.text) for p in found}
    started = {key: value for key, value in current.items() if key not in before}
    resolved = {key: value for key, value in before.items() if key not in current}
    if not started and not resolved:
        return warnings
    subject, body = _message(started, resolved)
    told = False
    ways = 0
    if alerts.email_url and alerts.email_to:
        ways += 1
        warning = _email(config, subject, body)
        told = told or warning is None
        if warning:
            warnings.append(warning)
    if alerts.dm_account and alerts.dm_to:
        ways += 1
        warning = _direct_message(config, store, context, subject, body, now)
        told = told or warning is None
        if warning:
            warnings.append(warning)
    if told or not ways:
        store.save_alerted(started, resolved, now)
    return warnings


def _message(started: dict[str, tuple[str, str]], resolved: dict[str, tuple[str, str]]) -> tuple[str, str]:
    parts = []
    if started:
        parts.append(f"{len(started)} problem{'s' if len(started) > 1 else ''}")
    if resolved:
        parts.append(f"{len(resolved)} resolved")
    subject = "relay: " + ", ".join(parts)
    lines = [f"[{severity}] {text}" for severity, text in started.values()]
    lines += [f"[resolved] {text}" for _, text in resolved.values()]
    return subject, "\n".join(lines) + "\n"


def _ping(config: Config, context: Context, url: str, body: str | None) -> str | None:
    import httpx

    try:
        with httpx.Client(timeout=PING_TIMEOUT, follow_redirects=False) as client:
            if body is None:
                response = client.get(url)
            else:
                response = client.post(
                    url, content=body.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
                )
        if response.status_code >= 400:
            return config.redact(f"alerts: ping {url}: HTTP {response.status_code}")
    except Exception as exc:  # a ping that fails, however, never fails the run
        return config.redact(f"alerts: ping {url}: {type(exc).__name__}: {exc}")
    return None


def _email(config: Config, subject: str, body: str) -> str | None:
    try:
        return _send_email(config, subject, body)
    except Exception as exc:  # an email that cannot be sent never fails the run
        return config.redact(f"alerts: email to {config.alerts.email_to}: {type(exc).__name__}: {exc}")


def _send_email(config: Config, subject: str, body: str) -> str | None:
    import smtplib
    import ssl
    from email.message import EmailMessage
    from email.utils import make_msgid
    from urllib.parse import unquote, urlsplit

    alerts = config.alerts
    parts = urlsplit(alerts.email_url)
    host, port = parts.hostname or "", parts.port
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = alerts.email_from or f"relay@{host}"
    message["To"] = alerts.email_to
    message["Message-ID"] = make_msgid(domain="relay.invalid")
    message.set_content(body)
    tls = ssl.create_default_context()
    try:
        if parts.scheme == "smtps":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=SMTP_TIMEOUT, context=tls)
        else:
            smtp = smtplib.SMTP(host, port or 587, timeout=SMTP_TIMEOUT)
        with smtp:
            if parts.scheme == "smtp":
                smtp.starttls(context=tls)  # never in clear: a server without STARTTLS is refused
            if user:
                smtp.login(user, password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        return config.redact(f"alerts: email to {alerts.email_to} via {host}: {type(exc).__name__}: {exc}")
    return None


def _direct_message(config: Config, store: Store, context: Context, subject: str, body: str, now: float) -> str | None:
    import hashlib

    from relay.targets.base import PublishError
    from relay.targets.mastodon import MastodonTarget
    from relay.text import defuse_mentions, truncate

    alerts = config.alerts
    account = config.accounts[alerts.dm_account]
    text = truncate(f"{alerts.dm_to} {defuse_mentions(subject)}\n\n{defuse_mentions(body)}", DM_GRAPHEMES)
    key = hashlib.sha256(f"{alerts.dm_to}\n{text}\n{int(now // 3600)}".encode()).hexdigest()[:32]
    try:
        target = MastodonTarget(account, store, context)
        try:
            target.direct_message(text, idempotency_key=key)
        finally:
            target.close()
    except PublishError as exc:
        return config.redact(f"alerts: direct message to {alerts.dm_to} from {account.name}: {exc}")
    except Exception as exc:  # an alert that cannot be sent never fails the run
        return config.redact(
            f"alerts: direct message to {alerts.dm_to} from {account.name}: {type(exc).__name__}: {exc}"
        )
    return None


def _duration(seconds: float) -> str:
    hours = int(seconds // 3600)
    if hours >= 48:
        return f"{hours // 24} days"
    if hours >= 1:
        return f"{hours} hour{'s' if hours > 1 else ''}"
    minutes = int(seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
