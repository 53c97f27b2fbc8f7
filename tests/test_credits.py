"""credit: (issue 10, part 3) end to end: a feed's posts credit the ally named in feeds.yaml
with a live mention, on mastodon-mock (which resolves mentions of its own accounts) and on
the reference PDS (a mention facet with the DID from resolveHandle, kept in the state); a
handle that cannot be resolved is posted as plain text with a warning; and feed text that
spells the same handles never mentions anyone."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from relay.config import Credit, load_config
from relay.errors import ConfigError
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock, Pds

NOW = datetime.now(UTC).replace(microsecond=0)


def feed_body(title: str, summary: str, guid: str = "a") -> bytes:
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Collectif</title>"
        f"<link>https://example.org/</link><item><title>{escape(title)}</title>"
        f"<link>https://example.org/{guid}</link><guid>{guid}</guid><description>{escape(summary)}</description>"
        f"<pubDate>{format_datetime(NOW)}</pubDate></item></channel></rss>"
    ).encode()


def write(tmp_path: Path, account: str, feed_url: str, credit: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n"
        f"accounts:\n{account}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: f\n    url: {feed_url}\n    credit: {credit}\n"
    )
    return path


def test_mastodon_mentions_the_credited_ally_and_no_one_else(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    suffix = uuid.uuid4().hex[:8]
    token = mastodon_mock.new_user(f"relais{suffix}")
    ally, stranger = f"ally{suffix}", f"stranger{suffix}"
    mastodon_mock.new_user(ally)
    mastodon_mock.new_user(stranger)
    body = feed_body(f"Merci @{stranger} et @{ally}", f"Relayé par @{ally} et &#64;{stranger}.")
    account = f"  masto:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN}}\n"
    config = write(tmp_path, account, feed_server.feed("/f", body), f'{{mastodon: "@{ally}"}}')
    result = relay("run", "-c", str(config), env={"TOKEN": token})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(token)
    assert [mention["username"] for mention in status["mentions"]] == [ally]
    assert f"via @{ally}" in status["content"]


@pytest.mark.bluesky
def test_bluesky_mentions_the_credit_by_its_did_and_keeps_it(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    heidi, alice = pds.account("heidi.test"), pds.account("alice.test")
    account = f"  sky:\n    platform: bluesky\n    handle: heidi.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
    # the title spells the credit too: read from the feed, it stays defused
    url = feed_server.feed("/f", feed_body("Réponse à @alice.test", "Un résumé."))
    config = write(tmp_path, account, url, "{bluesky: alice.test}")
    preview = json.loads(relay("preview", "-c", str(config), "--format", "json", env={"PASSWORD": "x"}).stdout)
    [post] = preview["posts"]
    assert "via @alice.test" in post["text"] and "＠alice.test" in post["text"]
    result = relay("run", "-c", str(config), env={"PASSWORD": "heidi-pass"})
    assert result.exit_code == 0, result.output
    [record] = pds.records(heidi["did"])
    value = record["value"]
    raw = value["text"].encode()
    mentions = [f for f in value["facets"] if f["features"][0]["$type"] == "app.bsky.richtext.facet#mention"]
    assert [raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode() for f in mentions] == ["@alice.test"]
    assert mentions[0]["features"][0]["did"] == alice["did"]
    state = sqlite3.connect(tmp_path / "state" / "relay.db")
    assert state.execute("SELECT handle, did FROM handles").fetchall() == [("alice.test", alice["did"])]


@pytest.mark.bluesky
def test_a_credit_that_cannot_be_resolved_is_plain_text_with_a_warning(
    tmp_path: Path, feed_server: FeedServer, pds: Pds
) -> None:
    heidi = pds.account("heidi.test")
    before = len(pds.records(heidi["did"]))
    account = f"  sky:\n    platform: bluesky\n    handle: heidi.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
    url = feed_server.feed("/g", feed_body("Une publication", "Un résumé.", guid="g"))
    config = write(tmp_path, account, url, "{bluesky: nobody.test}")
    result = relay("run", "-c", str(config), env={"PASSWORD": "heidi-pass"})
    assert result.exit_code == 0, result.output
    assert "credit @nobody.test could not be resolved" in result.output
    mine = pds.records(heidi["did"])
    assert len(mine) == before + 1
    newest = next(r for r in mine if "nobody.test" in r["value"]["text"])
    assert "via @nobody.test" in newest["value"]["text"]
    assert not any(f["features"][0]["$type"].endswith("#mention") for f in newest["value"].get("facets") or [])


def load(tmp_path: Path, credit: str) -> Any:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto: {platform: mastodon, instance: 'https://m.example', token: '${T}'}\n"
        f"feeds:\n  - name: f\n    url: feed.xml\n    credit: {credit}\n"
    )
    return load_config(path, environ={"T": "x"})


@pytest.mark.parametrize(
    ("written", "credit"),
    [
        ('{mastodon: "@collectif@framapiaf.org"}', Credit(mastodon="@collectif@framapiaf.org")),
        ("{mastodon: collectif@framapiaf.org}", Credit(mastodon="@collectif@framapiaf.org")),
        ('{mastodon: "@collectif"}', Credit(mastodon="@collectif")),
        ('{bluesky: "@santenathon.bsky.social"}', Credit(bluesky="santenathon.bsky.social")),
        ("{}", Credit()),
    ],
)
def test_credit_is_read(tmp_path: Path, written: str, credit: Credit) -> None:
    assert load(tmp_path, written).feeds[0].credit == credit


def test_credit_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '{mastodon: "collectif@@x", bluesky: "not a handle", threads: x}')
    assert info.value.problems == [
        "feeds.yaml:6: feeds[0].credit: 'threads' is not a platform (mastodon, bluesky)",
        "feeds.yaml:6: feeds[0].credit: mastodon: 'collectif@@x' is not a Mastodon account (like @collectif@instance.org)",
        "feeds.yaml:6: feeds[0].credit: bluesky: 'not a handle' is not a Bluesky handle (like collectif.bsky.social)",
    ]


def test_feed_text_that_spells_the_credit_after_a_letter_is_no_mention() -> None:
    """Feed text keeps an '@' after a letter, '=' or '/' (an address, a URL), which no
    platform reads as a mention: on Bluesky it is not made one either."""
    from relay.targets.bluesky import _mention_facets

    text = "écrire à contact@collectif.bsky.social\nvia @collectif.bsky.social\n(@collectif.bsky.social)"
    facets = _mention_facets(text, "@collectif.bsky.social", [])
    raw = text.encode()
    starts = [raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode() for f in facets]
    assert starts == ["@collectif.bsky.social", "@collectif.bsky.social"]
    assert [f["index"]["byteStart"] for f in facets] == [raw.index(b"via @") + 4, raw.index(b"(@") + 1]
