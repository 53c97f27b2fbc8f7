"""Alerts (issue 11, part 4), against real servers on loopback: an HTTP server that records
pings (tests/support/feedserver), an SMTP server from aiosmtpd that records messages (over
STARTTLS, with a trustme certificate), and mastodon-mock for the direct message. Each problem
is told once when it starts and once when it ends; `relay status --check` reads them."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from relay.store import Store, run_lock
from tests.support.feeds import numbered
from tests.support.feedserver import FeedServer, Request, Response
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock, free_port

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class Pings:
    """The requests a ping URL received: (path, body)."""

    def __init__(self, feed_server: FeedServer) -> None:
        self.seen: list[tuple[str, str]] = []
        tag = uuid.uuid4().hex[:8]
        self.url = feed_server.url(f"/ping/{tag}")
        for suffix in ("", "/start", "/fail"):
            feed_server.add(f"/ping/{tag}{suffix}", self._handler(suffix or "/"))

    def _handler(self, name: str) -> Any:
        def handler(request: Request) -> Response:
            self.seen.append((name, request.body.decode() if request.body else ""))
            return Response(200, b"OK", {"Content-Type": "text/plain"})

        return handler


class Smtp:
    """aiosmtpd on loopback, STARTTLS required, a login required: the messages it took."""

    def __init__(self, tmp_path: Path) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self.ca_file = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        self.messages: list[Any] = []
        messages = self.messages

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"s3cret-smtp-pass")
            return AuthResult(success=ok)

        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=free_port(),
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )
        self.controller.start()
        self.port = self.controller.port

    @property
    def url(self) -> str:
        return f"smtp://relay:s3cret-smtp-pass@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Smtp]:
    server = Smtp(tmp_path)
    yield server
    server.stop()


def broken_feed(feed_server: FeedServer) -> str:
    return feed_server.add(f"/broken-{uuid.uuid4().hex[:6]}.rss", lambda request: Response(503, b"down", {}))


def write(tmp_path: Path, accounts: str, feeds: str, alerts: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 2\n"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 100\n"
        f"accounts:\n{accounts}feeds:\n{feeds}alerts:\n{alerts}"
    )
    return path


def masto(mock: MastodonMock) -> str:
    return f"  masto:\n    platform: mastodon\n    instance: {mock.url}\n    token: ${{TOKEN}}\n"


@pytest.mark.mastodon
def test_ping_start_then_ok_then_fail_with_the_problems(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user(f"ping{uuid.uuid4().hex[:8]}")
    pings = Pings(feed_server)
    good = feed_server.feed(f"/good-{uuid.uuid4().hex[:6]}.rss", numbered(1, now=NOW))
    feeds = f"  - name: good\n    url: {good}\n"
    config = write(tmp_path, masto(mastodon_mock), feeds, f"  ping: {pings.url}\n  feed_failing_after: 30m\n")
    env = {"TOKEN": token}
    assert relay("run", "-c", str(config), env=env, now=NOW).exit_code == 0
    assert [name for name, _ in pings.seen] == ["/start", "/"]
    # a feed that fails: no problem before 30 minutes, then /fail with it, at every run
    config = write(
        tmp_path,
        masto(mastodon_mock),
        feeds + f"  - name: broken\n    url: {broken_feed(feed_server)}\n",
        f"  ping: {pings.url}\n  feed_failing_after: 30m\n",
    )
    pings.seen.clear()
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    assert [name for name, _ in pings.seen] == ["/start", "/fail"]  # the run itself failed (exit 1)
    pings.seen.clear()
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(hours=2))
    name, body = pings.seen[-1]
    assert name == "/fail" and "feed broken failing for" in body and "HTTP 503" in body
    check = relay("status", "--check", "-c", str(config), env=env, now=NOW + timedelta(hours=2))
    assert check.exit_code == 2 and check.output.startswith("CRITICAL: 1 problem: feed broken failing for 1 hour (")


@pytest.mark.mastodon
def test_email_once_when_a_problem_starts_and_once_when_it_ends(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))  # relay trusts the test server's authority
    token = mastodon_mock.new_user(f"mail{uuid.uuid4().hex[:8]}")
    broken_path = f"/flaky-{uuid.uuid4().hex[:6]}.rss"
    feed_server.add(broken_path, lambda request: Response(503, b"down", {}))
    feeds = f"  - name: santenathon\n    url: {feed_server.url(broken_path)}\n"
    alerts = "  email:\n    url: ${RELAY_SMTP_URL}\n    to: owner@example.org\n  feed_failing_after: 1h\n"
    config = write(tmp_path, masto(mastodon_mock), feeds, alerts)
    env = {"TOKEN": token, "RELAY_SMTP_URL": smtp.url}
    for minutes in (0, 30, 90, 120, 180):
        result = relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=minutes))
        assert "warning: alerts" not in result.output, result.output
        assert "s3cret-smtp-pass" not in result.output
    [started] = smtp.messages
    assert started["Subject"] == "relay: 1 problem" and started["To"] == "owner@example.org"
    assert "[critical] feed santenathon failing for" in started.get_payload()
    # the feed answers again: one message says so
    feed_server.feed(broken_path, numbered(1, now=NOW))
    for minutes in (240, 300):
        relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=minutes))
    assert len(smtp.messages) == 2
    assert smtp.messages[1]["Subject"] == "relay: 1 resolved"
    assert "[resolved] feed santenathon failing" in smtp.messages[1].get_payload()


@pytest.mark.mastodon
def test_a_failing_email_is_a_warning_and_is_tried_again(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, smtp: Smtp
) -> None:
    # no SSL_CERT_FILE: the server's certificate is not trusted, so STARTTLS fails
    token = mastodon_mock.new_user(f"mailko{uuid.uuid4().hex[:8]}")
    feeds = f"  - name: broken\n    url: {broken_feed(feed_server)}\n"
    alerts = "  email:\n    url: ${RELAY_SMTP_URL}\n    to: owner@example.org\n  feed_failing_after: 1m\n"
    config = write(tmp_path, masto(mastodon_mock), feeds, alerts)
    env = {"TOKEN": token, "RELAY_SMTP_URL": smtp.url}
    relay("run", "-c", str(config), env=env, now=NOW)
    result = relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    assert result.exit_code == 1  # the feed, not the alert
    assert "warning: alerts: email to owner@example.org via 127.0.0.1: SSLCertVerificationError" in result.output
    assert "s3cret-smtp-pass" not in result.output and smtp.messages == []
    store = Store.open(tmp_path / "state")
    assert store.alerted() == {}  # told nobody: tried again next run
    store.close()


@pytest.mark.mastodon
def test_a_direct_message_to_the_owner_when_an_account_stops(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    suffix = uuid.uuid4().hex[:8]
    owner, relayer = mastodon_mock.new_user(f"owner{suffix}"), mastodon_mock.new_user(f"relais{suffix}")
    good = feed_server.feed(f"/dm-{suffix}.rss", numbered(2, now=NOW))
    accounts = (
        masto(mastodon_mock)
        + f"  broken:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{BAD_TOKEN}}\n"
    )
    feeds = f"  - name: news\n    url: {good}\n"
    alerts = f'  mastodon_dm:\n    account: masto\n    to: "@owner{suffix}"\n'
    config = write(tmp_path, accounts, feeds, alerts)
    env = {"TOKEN": relayer, "BAD_TOKEN": "not-a-valid-token"}
    result = relay("run", "-c", str(config), env=env, now=NOW)
    assert result.exit_code == 1
    direct = [s for s in mastodon_mock.statuses(relayer) if s["visibility"] == "direct"]
    assert len(direct) == 1
    assert f"@owner{suffix}" in direct[0]["content"] and "account broken stopped" in direct[0]["content"]
    assert [m["username"] for m in direct[0]["mentions"]] == [f"owner{suffix}"]
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    assert len([s for s in mastodon_mock.statuses(relayer) if s["visibility"] == "direct"]) == 1  # once
    check = relay("status", "--check", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    assert check.exit_code == 2 and "account broken stopped" in check.output
    del owner


def test_status_check_levels_and_the_lock_held_for_an_hour(tmp_path: Path, feed_server: FeedServer) -> None:
    config = write(
        tmp_path,
        "  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n",
        f"  - name: news\n    url: {broken_feed(feed_server)}\n",
        "  feed_failing_after: 2h\n",
    )
    env = {"TOKEN": "x"}
    relay("run", "-c", str(config), env=env, now=NOW)
    check = relay("status", "--check", "-c", str(config), env=env, now=NOW + timedelta(minutes=30))
    assert (check.exit_code, check.output) == (0, "OK: 1 feeds, nothing failing\n")
    store = Store.open(tmp_path / "state")
    store.db.execute(
        "INSERT INTO items (feed, key_hash, title, link, first_seen_at, payload) VALUES ('news', x'01', 't', NULL, 0, '{}')"
    )
    store.insert_delivery(1, "masto", "held", "k", None, NOW.timestamp())
    store.close()
    check = relay("status", "--check", "-c", str(config), env=env, now=NOW + timedelta(minutes=30))
    assert check.exit_code == 1 and check.output.startswith("WARNING: 1 problem: 1 item of feed news held by the flood")
    # another run holds the lock: nothing at first, critical after an hour
    with run_lock(tmp_path / "state"):
        assert relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=40)).exit_code == 3
        assert relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=110)).exit_code == 3
    check = relay("status", "--check", "-c", str(config), "--format", "text", env=env, now=NOW + timedelta(minutes=110))
    assert check.exit_code == 2 and "could not take the lock for more than an hour" in check.output
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=115))
    check = relay("status", "--check", "-c", str(config), env=env, now=NOW + timedelta(minutes=115))
    assert "lock" not in check.output


def test_alerts_keys_are_checked(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n"
        "  sky:\n    platform: bluesky\n    handle: sky.bsky.social\n    app_password: ${P}\n",
        "  - name: news\n    url: https://news.example/feed\n",
        "  ping: ftp://hc.example/x\n  email:\n    url: smtp://u:p@mail.example\n    to: owner\n"
        '  mastodon_dm:\n    account: sky\n    to: "owner"\n  feed_failing_after: soon\n  digest: true\n',
    )
    result = relay("check", "-c", str(config), env={"TOKEN": "x", "P": "y"})
    assert result.exit_code == 2
    for expected in (
        "alerts.digest: unknown key",
        "alerts.feed_failing_after: 'soon' is not a duration",
        "alerts.ping: 'ftp://hc.example/x' is not an http(s) URL",
        "alerts.email.url: must be one ${VARIABLE} holding the whole URL",
        "alerts.mastodon_dm.account: 'sky' is not a Mastodon account",
        "alerts.mastodon_dm.to: 'owner' is not a Mastodon handle",
    ):
        assert expected in result.output, (expected, result.output)


def test_an_alert_that_cannot_be_sent_never_fails_the_run(tmp_path: Path, feed_server: FeedServer) -> None:
    good = feed_server.feed(f"/ok-{uuid.uuid4().hex[:6]}.rss", numbered(1, now=NOW))
    config = write(
        tmp_path,
        "  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n",
        f"  - name: news\n    url: {good}\n    backfill: 0\n",
        "  ping: http://hc.example:abc/ping\n  email:\n    url: ${RELAY_SMTP_URL}\n    to: owner@example.org\n"
        "  feed_failing_after: 1m\n",
    )
    env = {"TOKEN": "x", "RELAY_SMTP_URL": "smtps://relay:s3cret-smtp-pass@127.0.0.1:1"}
    result = relay("run", "-c", str(config), env=env, now=NOW)
    assert result.exit_code == 0, result.output
    assert "warning: alerts: ping http://hc.example:abc/ping/start: InvalidURL" in result.output
    assert "s3cret-smtp-pass" not in result.output
    # a URL that does not parse (a "/" in the password) is refused when feeds.yaml is read
    env["RELAY_SMTP_URL"] = "smtps://relay:s3cret/smtp@mail.example"
    checked = relay("check", "-c", str(config), env=env)
    assert checked.exit_code == 2 and "percent-encoded (/ as %2F" in checked.output
    assert "s3cret" not in checked.output


def test_status_check_is_one_line_when_the_configuration_or_the_state_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: [\n")
    result = relay("status", "--check", "-c", str(config))
    assert result.exit_code == 2 and result.output.startswith("CRITICAL: feeds.yaml does not load:")
    assert len(result.output.strip().splitlines()) == 1
    config.write_text("feeds: []\n")
    result = relay("status", "--check", "-c", str(config))  # relay has not run yet
    assert result.exit_code == 1 and result.output.startswith("WARNING: no state yet in ")
    assert len(result.output.strip().splitlines()) == 1
    result = relay("status", "--check", "-c", str(tmp_path / "elsewhere.yaml"))
    assert result.exit_code == 2 and result.output.startswith("CRITICAL: ") and "no such file" in result.output
