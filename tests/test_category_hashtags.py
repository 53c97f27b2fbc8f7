"""category_hashtags, tag_map and max_hashtags end to end: feeds over a loopback HTTP server,
posts through `relay run` to mastodon-mock (which parses the hashtags of a status as Mastodon
does) and to the reference PDS (whose records are read back, facets and all), and what
preview shows; and their configuration errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from relay.config import load_config
from relay.errors import ConfigError
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay
from tests.support.servers import MastodonMock, Pds

NOW = datetime.now(UTC).replace(microsecond=0)
CATEGORIES = ["données de santé", "Non classé", "CNIL", "2024", "santénumérique", "Health Data Hub"]
TITLE = "Données de santé : #HDH en question 🎉"


def feed_body(categories: list[str], title: str = TITLE, summary: str = "Un résumé.") -> bytes:
    tags = "".join(f"<category>{escape(c)}</category>" for c in categories)
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Collectif</title>"
        "<link>https://example.org/</link><item>"
        f"<title>{escape(title)}</title><link>https://example.org/a</link><guid>a</guid>"
        f"<description>{escape(summary)}</description>{tags}<pubDate>{format_datetime(NOW)}</pubDate>"
        "</item></channel></rss>"
    ).encode()


FEED_KEYS = (
    '    category_hashtags: true\n    tag_map: {"non classé": "", "Health Data Hub": HDH}\n    max_hashtags: 4\n'
)


def write(tmp_path: Path, account: str, feed_url: str, extra: str = FEED_KEYS) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "defaults:\n  every: 1m\n  backfill: 5\n  hashtags: [SantéNumérique]\n"
        f"accounts:\n{account}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: f\n    url: {feed_url}\n{extra}"
    )
    return path


def preview_posts(config: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = relay("preview", "-c", str(config), "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["posts"])


def test_mastodon_posts_the_categories_as_hashtags(
    tmp_path: Path, feed_server: FeedServer, mastodon_mock: MastodonMock
) -> None:
    token = mastodon_mock.new_user("hashtags")
    account = f"  masto:\n    platform: mastodon\n    instance: {mastodon_mock.url}\n    token: ${{TOKEN}}\n"
    config = write(tmp_path, account, feed_server.feed("/f", feed_body(CATEGORIES)))
    [post] = preview_posts(config, {"TOKEN": token})
    # feeds.yaml's first; "Non classé" dropped by tag_map; CNIL kept; 2024 cannot be a
    # hashtag; santénumérique is SantéNumérique again; the cap of 4 leaves out nothing more
    assert post["text"].endswith("\n\n#SantéNumérique #DonnéesDeSanté #CNIL #HDH")
    result = relay("run", "-c", str(config), env={"TOKEN": token})
    assert result.exit_code == 0, result.output
    [status] = mastodon_mock.statuses(token)
    assert {tag["name"].casefold() for tag in status["tags"]} == {
        "hdh",
        "santénumérique",
        "donnéesdesanté",
        "cnil",
    }


@pytest.mark.bluesky
def test_bluesky_makes_every_hashtag_a_facet(tmp_path: Path, feed_server: FeedServer, pds: Pds) -> None:
    grace = pds.account("grace.test")
    account = f"  sky:\n    platform: bluesky\n    handle: grace.test\n    app_password: ${{PASSWORD}}\n    service: {pds.url}\n"
    config = write(tmp_path, account, feed_server.feed("/f", feed_body(CATEGORIES)))
    [post] = preview_posts(config, {"PASSWORD": "grace-pass"})
    result = relay("run", "-c", str(config), env={"PASSWORD": "grace-pass"})
    assert result.exit_code == 0, result.output
    [record] = pds.records(grace["did"])
    value = record["value"]
    assert value["text"] == post["text"]
    raw = value["text"].encode()
    tags = [f for f in value["facets"] if f["features"][0]["$type"] == "app.bsky.richtext.facet#tag"]
    shown = [raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode() for f in tags]
    # the one in the item's title too, found as the Bluesky app finds them; byte offsets
    # land on the '#' and the tag's end, whatever accents and emoji come before
    assert shown == ["#HDH", "#SantéNumérique", "#DonnéesDeSanté", "#CNIL", "#HDH"]
    assert [f["features"][0]["tag"] for f in tags] == [s[1:] for s in shown]

    def spans(facets: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
        return [(f["index"]["byteStart"], f["index"]["byteEnd"], f["features"][0]["$type"]) for f in facets]

    assert spans(value["facets"]) == spans(post["facets"])


def test_a_feed_with_a_hundred_categories_still_gets_its_items_posted(tmp_path: Path) -> None:
    """Without max_hashtags, categories that cannot all fit are left out, the last first;
    the hashtags written in feeds.yaml and the link stay."""
    categories = [f"catégorie numéro {n} du collectif" for n in range(100)]
    (tmp_path / "feed.xml").write_bytes(feed_body(categories))
    account = "  sky:\n    platform: bluesky\n    handle: a.example\n    app_password: ${P}\n"
    config = write(tmp_path, account, "feed.xml", "    category_hashtags: true\n")
    [post] = preview_posts(config, {"P": "x"})
    assert post["action"] == "post", post
    assert post["length"] <= 300
    assert "#SantéNumérique #CatégorieNuméro0DuCollectif" in post["text"]
    assert "example.org/a" in post["text"]


def test_without_category_hashtags_categories_stay_out(tmp_path: Path) -> None:
    (tmp_path / "feed.xml").write_bytes(feed_body(CATEGORIES))
    account = "  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${T}\n"
    config = write(tmp_path, account, "feed.xml", "")
    [post] = preview_posts(config, {"T": "x"})
    assert post["text"].endswith("\n\n#SantéNumérique")


def problems(tmp_path: Path, feed_keys: str) -> list[str]:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto: {platform: mastodon, instance: 'https://m.example', token: '${T}'}\n"
        f"feeds:\n  - name: f\n    url: feed.xml\n{feed_keys}"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"T": "x"})
    return info.value.problems


def test_configuration_errors_name_the_line_and_the_key(tmp_path: Path) -> None:
    assert problems(
        tmp_path, "    tag_map: {santé: '2024'}\n    max_hashtags: -1\n    category_hashtags: yes please\n"
    ) == [
        "feeds.yaml:8: feeds[0].category_hashtags: must be true or false",
        "feeds.yaml:6: feeds[0].tag_map: 'santé': '2024' is not a hashtag (a letter, then letters, digits and _;"
        ' "" drops the category)',
        "feeds.yaml:7: feeds[0].max_hashtags: -1 is not a whole number >= 0",
    ]
    assert problems(tmp_path, "    tag_map: [santé]\n") == [
        'feeds.yaml:6: feeds[0].tag_map: must be a mapping of category: hashtag (or "" to drop the category)'
    ]


def test_warnings_for_keys_that_do_nothing(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "accounts:\n  masto: {platform: mastodon, instance: 'https://m.example', token: '${T}'}\n"
        "feeds:\n  - name: f\n    url: feed.xml\n    tag_map: {santé: Santé}\n"
        "    hashtags: [A, B, C]\n    max_hashtags: 2\n"
    )
    config = load_config(path, environ={"T": "x"})
    assert config.warnings == (
        "feeds.yaml:6: feeds[0].tag_map: has no effect without category_hashtags: true",
        "feeds.yaml:8: feeds[0].max_hashtags: 3 hashtags written, only the first 2 are posted",
    )
