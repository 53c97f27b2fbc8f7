"""The Mastodon target against mastodon-mock (PyPI) running as a real HTTP server on
loopback, with Mastodon.py talking HTTP to it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relay.text import mastodon_length
from tests.support.feeds import numbered, rss
from tests.support.feedserver import FeedServer, Response
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock

pytestmark = pytest.mark.mastodon
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def account(mastodon_mock: MastodonMock) -> Iterator[str]:
    """A fresh account (token) per test: statuses and idempotency keys start empty, and no
    fault injected by a test outlives it."""
    yield mastodon_mock.new_user(f"u{uuid.uuid4().hex[:10]}")
    mastodon_mock.clear_faults()


def write(
    tmp_path: Path,
    mastodon_mock: MastodonMock,
    feed_url: str,
    *,
    extra: str = "",
    accounts: str = "",
    allow_private: bool = False,
) -> Path:
    """allow_private: the test serves the item's image from loopback, which the default
    network policy refuses."""
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n  hashtags: [SantéNumérique]\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN}}\n"
        f"    visibility: unlisted\n{accounts}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n"
        + ("network:\n  allow_private: true\n" if allow_private else "")
        + f"feeds:\n  - name: f\n    url: {feed_url}\n{extra}"
    )
    return path


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_post_and_read_back(tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str) -> None:
    image = feed_server.add("/img.png", lambda r: Response(200, png(), {"Content-Type": "image/png"}))
    body = rss(
        [
            {
                "title": "Données de santé : @cnil répond",
                "link": "https://example.org/a?utm_source=rss",
                "guid": "a",
                "description": f'<p>Un résumé.</p><img src="{image}" alt="une image">',
                "published": NOW,
            }
        ]
    )
    feed = feed_server.feed("/f", body)
    config = write(
        tmp_path,
        mastodon_mock,
        feed,
        extra="    content_warning: Santé\n    images: true\n    language: fr\n    visibility: private\n",
        allow_private=True,
    )
    result = relay("run", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(account)
    assert "https://example.org/a" in status["content"] and "utm_source" not in status["content"]
    assert "@cnil" not in status["content"]
    assert status["visibility"] == "private"  # the feed's, over the account's unlisted
    assert status["language"] == "fr"
    assert status["spoiler_text"] == "Santé" and status["sensitive"] is True
    [media] = status["media_attachments"]
    assert media["type"] == "image" and media["description"] == "une image"
    history = json.loads(relay("history", "--format", "json").output)
    assert history[0]["remote_id"] == status["id"]


def test_instance_limits_are_read_and_cached(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)))
    result = relay("check", "--online", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    assert "account masto: @" in result.output and "characters" in result.output
    status = json.loads(relay("status", "--format", "json").output)
    assert status["accounts"][0]["name"] == "masto"


def test_check_online_reports_a_bad_token(tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock) -> None:
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)))
    result = relay("check", "--online", "-c", str(config), env={"TOKEN": "wrong"})
    assert result.exit_code == 1 and "refused the token" in result.output


def test_429_then_503_retried_in_later_runs_exactly_one_status(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    # the mock's X-RateLimit-Reset is real time + 5 minutes: these runs use the real clock
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=datetime.now(UTC))))
    env = {"TOKEN": account}
    mastodon_mock.fault(match={"methods": ["POST"], "path": "/api/v1/statuses"}, effect={"type": "ratelimit"}, count=1)
    first = relay("run", "-c", str(config), env=env)
    assert first.exit_code == 1 and "rate limited" in first.output and "waiting until" in first.output, first.output
    early = relay("run", "-c", str(config), env=env, now=datetime.now(UTC) + timedelta(minutes=2))
    assert early.exit_code == 0 and early.output == ""  # the server's reset is not reached yet: nothing sent
    mastodon_mock.fault(
        match={"methods": ["POST"], "path": "/api/v1/statuses"}, effect={"type": "status", "status": 503}, count=1
    )
    later = datetime.now(UTC) + timedelta(minutes=6)
    second = relay("run", "-c", str(config), env=env, now=later)
    assert second.exit_code == 1 and "503" in second.output, second.output
    third = relay("run", "-c", str(config), env=env, now=later + timedelta(minutes=4))
    assert third.exit_code == 0, third.output
    assert len(mastodon_mock.statuses(account)) == 1


def test_422_is_failed_with_the_server_message(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)))
    mastodon_mock.fault(
        match={"methods": ["POST"], "path": "/api/v1/statuses"},
        effect={
            "type": "status",
            "status": 422,
            "body": {"error": "Validation failed: Text character limit of 500 exceeded"},
        },
        count=1,
    )
    result = relay("run", "-c", str(config), env={"TOKEN": account}, now=NOW)
    assert result.exit_code == 1 and "character limit of 500 exceeded" in result.output
    relay("run", "-c", str(config), env={"TOKEN": account}, now=NOW + timedelta(hours=2))
    assert mastodon_mock.statuses(account) == []
    [failed] = json.loads(relay("queue", "list", "--state", "failed", "--format", "json").output)
    assert "422" in failed["last_error"]


def test_bad_token_stops_that_account_and_the_other_posts(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    second = f"  other:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN2}}\n"
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)), accounts=second)
    result = relay("run", "-c", str(config), env={"TOKEN": "not-a-token", "TOKEN2": account}, now=NOW)
    assert result.exit_code == 1 and "account masto:" in result.output and "refused the token" in result.output
    assert len(mastodon_mock.statuses(account)) == 1


def test_timeout_after_the_server_accepted_then_one_status(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)))
    env = {"TOKEN": account}
    original = requests.Session.send

    def accepted_then_timeout(self: Any, request: Any, **kwargs: Any) -> Any:
        response = original(self, request, **kwargs)  # the server creates the status…
        if request.method == "POST" and request.url.endswith("/api/v1/statuses"):
            raise requests.exceptions.ReadTimeout("read timed out")  # …and relay never hears it
        return response

    monkeypatch.setattr(requests.Session, "send", accepted_then_timeout)
    first = relay("run", "-c", str(config), env=env, now=NOW)
    assert first.exit_code == 1 and "network error" in first.output and "will be retried" in first.output
    assert len(mastodon_mock.statuses(account)) == 1
    monkeypatch.setattr(requests.Session, "send", original)
    relay("run", "-c", str(config), env=env, now=NOW + timedelta(minutes=5))
    assert len(mastodon_mock.statuses(account)) == 1
    assert json.loads(relay("status", "--format", "json").output)["accounts"][0]["outbox"] == {"posted": 1}


@pytest.mark.parametrize(
    ("when", "part"), [("before", "/api/v2/instance"), ("before", "/api/v1/statuses"), ("after", "/api/v1/statuses")]
)
def test_sigkill_at_each_stage_then_exactly_once(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str, when: str, part: str
) -> None:
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(3, now=NOW)))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.killpoint", when, part, "--", "run", "-c", str(config)],
        env={**_env(), "TOKEN": account},
        capture_output=True,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    result = relay("run", "-c", str(config), env={"TOKEN": account})  # the real clock, like the killed run
    assert result.exit_code == 0, result.output
    contents = sorted(s["content"].split("<")[0] for s in mastodon_mock.statuses(account))
    assert len(mastodon_mock.statuses(account)) == 3, contents


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


URL = st.builds(
    lambda path: f"https://example.org/{path}", st.text(st.sampled_from("abcdefghij0123456789-_/"), max_size=80)
)
WORDS = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12),
        URL,
        st.sampled_from(["👩‍👩‍👧‍👦", "é", "e\u0301", "🇫🇷", "#Santé"]),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(words=WORDS, spoiler=st.text(max_size=20))
def test_own_counter_agrees_with_mastodon_py(words: list[str], spoiler: Any) -> None:
    """Mastodon.py counts with the `grapheme` package, whose Unicode data is older than
    Python's, and Python's is older than the regex module's: a mark one of them does not know
    (Telugu's nukta, new in Unicode 14; a Kannada sign of 15.0) is a cluster of its own
    there, and not in Mastodon's Ruby. Such text is no test of relay."""
    from grapheme.grapheme_property_group import GraphemePropertyGroup, get_group
    from mastodon import Mastodon

    text = " ".join(words)
    assume(
        not any(
            unicodedata.category(c) == "Cn"  # unassigned for Python 3.11, not for regex
            or (unicodedata.category(c).startswith("M") and get_group(c) == GraphemePropertyGroup.OTHER)
            for c in text + spoiler
        )
    )
    ours, theirs = mastodon_length(text, spoiler), Mastodon.get_status_length(text, spoiler)
    # never fewer (a post relay fits is within the instance's limit); more only where the
    # regex module splits a rare emoji ZWJ sequence the grapheme package joins
    assert theirs <= ours <= theirs + (text + spoiler).count("\u200d")


def test_an_indic_conjunct_counts_as_mastodon_counts_it() -> None:
    """The regex module joins a virama and the next consonant into one cluster (Unicode
    15.1); Mastodon does not, so relay counts them apart and never under-counts a post."""
    from mastodon import Mastodon

    for text in ("्क", "क्ष", "ঞ্ॻ", "नमस्ते दुनिया"):
        assert mastodon_length(text) == Mastodon.get_status_length(text)


def test_unreadable_instance_limits_fall_back_with_a_warning(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", numbered(1, now=NOW)))
    for path in ("/api/v2/instance", "/api/v2/instance/"):
        mastodon_mock.fault(match={"methods": ["GET"], "path": path}, effect={"type": "status", "status": 503}, count=1)
    result = relay("run", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    assert "cannot read the instance's limits" in result.output and "using 500 characters, 23 per URL" in result.output
    assert len(mastodon_mock.statuses(account)) == 1


def test_unreachable_image_posts_without_it_and_names_the_item(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    body = rss(
        [
            {
                "title": "Sans image",
                "link": "https://example.org/no-image",
                "guid": "n",
                "published": NOW,
                "description": f'<img src="{feed_server.url("/gone.png")}" alt="x">',
            }
        ]
    )
    config = write(
        tmp_path, mastodon_mock, feed_server.feed("/f", body), extra="    images: true\n", allow_private=True
    )
    result = relay("run", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    assert "https://example.org/no-image: posted without its image (image: HTTP 404)" in result.output
    [status] = mastodon_mock.statuses(account)
    assert status["media_attachments"] == []


def _image_items(*images: str) -> bytes:
    return rss(
        [
            {
                "title": f"Article {n}",
                "link": f"https://example.org/article-{n}",
                "guid": f"i{n}",
                "published": NOW - timedelta(minutes=n),
                "description": f'<p>Résumé {n}.</p><img src="{image}" alt="x">',
            }
            for n, image in enumerate(images)
        ]
    )


def test_loopback_image_is_not_fetched_under_the_default_policy(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    image = feed_server.add("/secret.png", lambda r: Response(200, png(), {"Content-Type": "image/png"}))
    config = write(tmp_path, mastodon_mock, feed_server.feed("/f", _image_items(image)), extra="    images: true\n")
    result = relay("run", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "posted without its image" in line]
    assert "https://example.org/article-0" in warning and "private or local address" in warning
    assert feed_server.hits.get("/secret.png", 0) == 0
    [status] = mastodon_mock.statuses(account)
    assert status["media_attachments"] == []


def test_an_image_bomb_does_not_wedge_the_account(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    """A tiny PNG declaring 10001 × 10001 pixels: that post goes out without it, and the
    delivery behind it is posted too."""
    from bench.images import png_declared

    bomb = feed_server.add(
        "/bomb.png", lambda r: Response(200, png_declared(10001, 10001), {"Content-Type": "image/png"})
    )
    fine = feed_server.add("/fine.png", lambda r: Response(200, png(), {"Content-Type": "image/png"}))
    config = write(
        tmp_path,
        mastodon_mock,
        feed_server.feed("/f", _image_items(bomb, fine)),
        extra="    images: true\n",
        allow_private=True,
    )
    result = relay("run", "-c", str(config), env={"TOKEN": account})
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "posted without its image" in line]
    assert "https://example.org/article-0" in warning and "pixels" in warning
    statuses = mastodon_mock.statuses(account)
    assert len(statuses) == 2
    assert sorted(len(s["media_attachments"]) for s in statuses) == [0, 1]


def test_a_dripping_image_server_does_not_hold_the_post(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock, account: str
) -> None:
    from tests.test_netguard import DripServer

    server = DripServer("headers", png(), "image/png")
    try:
        config = write(
            tmp_path,
            mastodon_mock,
            feed_server.feed("/f", _image_items(server.url("/slow.png"))),
            extra="    images: true\n",
            allow_private=True,
        )
        result = relay("run", "-c", str(config), env={"TOKEN": account, "RELAY_REQUEST_TIMEOUT": "2"})
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert "posted without its image (image: timed out: no complete answer within 2s)" in result.output
    [status] = mastodon_mock.statuses(account)
    assert status["media_attachments"] == []


def test_a_stalled_upload_stops_the_account_without_touching_other_feeds_deliveries(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """The instance holds an image upload past the deadline: the account stops for this run,
    the ally's deliveries behind it keep their attempts, and all go out in the next run."""
    from tests.support.fake_mastodon import FakeMastodon

    mastodon = FakeMastodon()
    try:
        now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
        image = feed_server.add("/evil.png", lambda r: Response(200, png(), {"Content-Type": "image/png"}))
        evil = rss(
            [
                {
                    "title": "evil item",
                    "link": "https://evil.example/1",
                    "guid": "e1",
                    "description": f'<p>Texte.</p><img src="{image}" alt="une image">',
                    "published": now - timedelta(hours=3),
                }
            ]
        )
        config = tmp_path / "feeds.yaml"
        config.write_text(
            "defaults:\n  every: 1m\n  backfill: 5\n"
            f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n    token: ${{TOKEN}}\n"
            "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
            "network:\n  allow_private: true\n"
            f"feeds:\n  - name: evil\n    url: {feed_server.feed('/evil', evil)}\n    images: true\n"
            f"  - name: friend\n    url: {feed_server.feed('/ally', numbered(2, now=now, prefix='ally'))}\n"
        )
        mastodon.fault(path="/api/v2/media", hang_before=8)
        env = {"TOKEN": "good-token", "RELAY_REQUEST_TIMEOUT": "3"}
        first = relay("run", "-c", str(config), env=env, now=now)
        assert first.exit_code == 1, first.output
        assert "timed out" in first.output and "waiting until" in first.output, first.output
        assert mastodon.statuses == []
        queue = json.loads(relay("queue", "list", "--format", "json").output)
        assert sorted((d["feed"], d["attempts"]) for d in queue) == [("evil", 1), ("friend", 0), ("friend", 0)]
        assert not [line for line in first.output.splitlines() if "friend" in line and "retried" in line]
        second = relay("run", "-c", str(config), env=env, now=now + timedelta(minutes=2))
        assert second.exit_code == 0, second.output
        texts = sorted(s["content"].split("\n")[0] for s in mastodon.statuses)
        assert texts == ["ally 0", "ally 1", "evil item"]
        [evil_status] = [s for s in mastodon.statuses if s["content"].startswith("evil item")]
        assert evil_status["media_ids"]  # retried with its image, once the pause was over
    finally:
        mastodon.stop()
