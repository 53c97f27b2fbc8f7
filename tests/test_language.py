"""A post's language (item, then the feed's own language: in feeds.yaml, then the channel's,
then defaults.language) and links relative to the site root in a feed read from disk."""

import json
from datetime import UTC, datetime
from pathlib import Path

from relay.config import load_config
from relay.parse import parse_feed
from relay.render import post_language
from tests.support.fake_mastodon import FakeMastodon
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay

FEEDS = Path(__file__).parent / "feeds"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token"}


def parse(name: str, url: str = "https://example.org/feed"):  # type: ignore[no-untyped-def]
    return parse_feed((FEEDS / name).read_bytes(), feed_name="f", url=url)


def write_config(tmp_path: Path, instance: str, feeds: str, defaults: str = "") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"defaults:\n  backfill: 10\n{defaults}"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {instance}\n    token: ${{TOKEN}}\n"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n{feeds}"
    )
    return path


def preview_posts(config: Path) -> dict[str, dict[str, str]]:
    result = relay("preview", "-c", str(config), "--format", "json", env=ENV, now=NOW)
    assert result.exit_code == 0, result.output
    posts = json.loads(result.output)["posts"]
    return {p["title"]: {"language": p["language"], "source": p["language_source"]} for p in posts}


def test_parse_reads_the_channel_and_item_languages() -> None:
    parsed = parse("language__rss-channel-de.xml")
    assert parsed.language == "de" and parsed.warnings == ()
    assert [(i.language, i.channel_language) for i in parsed.items] == [("", "de"), ("pt", "de"), ("en-US", "de")]


def test_an_atom_feed_xml_lang_is_the_channel_language_not_the_entries() -> None:
    parsed = parse("language__atom-xml-lang-en.xml")
    assert parsed.language == "en"
    # feedparser hands the feed's xml:lang down to every entry: that is not the entry's own
    assert [(i.language, i.channel_language) for i in parsed.items] == [("", "en"), ("pt", "en")]


def test_invalid_language_tags_are_dropped_with_one_warning_each() -> None:
    parsed = parse("language__rss-invalid-tags.xml")
    assert parsed.language == "" and [(i.language, i.channel_language) for i in parsed.items] == [("", "")]
    assert parsed.warnings == (
        "language 'français' is not a language tag (like fr or fr-FR): ignored",
        "language 'en US' is not a language tag (like fr or fr-FR): ignored",
    )


def test_the_resolution_order(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "https://mastodon.example",
        "  - name: own\n    url: https://a.example/feed\n    language: es\n  - name: inherited\n    url: https://b.example/feed\n",
        defaults="  language: it\n",
    )
    own, inherited = load_config(path, environ=ENV).feeds
    assert (own.language, own.language_set) == ("es", True)
    assert (inherited.language, inherited.language_set) == ("it", False)
    [plain, portuguese, _] = parse("language__rss-channel-de.xml").items
    assert post_language(portuguese, own) == ("pt", "item")
    assert post_language(plain, own) == ("es", "feed")
    assert post_language(plain, inherited) == ("de", "channel")
    [undeclared] = parse("language__rss-none-declared.xml").items
    assert post_language(undeclared, inherited) == ("it", "default")


def test_preview_shows_each_language_and_where_it_came_from(tmp_path: Path) -> None:
    feeds = "".join(
        f"  - name: {name}\n    url: {FEEDS / fixture}\n{extra}"
        for name, fixture, extra in (
            ("de", "language__rss-channel-de.xml", ""),
            ("atom", "language__atom-xml-lang-en.xml", ""),
            ("invalid", "language__rss-invalid-tags.xml", "    language: ca\n"),
        )
    )
    posts = preview_posts(write_config(tmp_path, "https://mastodon.example", feeds))
    assert posts == {
        "Ein Artikel auf Deutsch": {"language": "de", "source": "channel"},
        "Um artigo em português": {"language": "pt", "source": "item"},
        "An article with its own dc:language": {"language": "en-US", "source": "item"},
        "An entry in the feed's language": {"language": "en", "source": "channel"},
        "Uma entrada em português": {"language": "pt", "source": "item"},
        "Un article": {"language": "ca", "source": "feed"},  # invalid tags: the feed's language:
    }
    text = relay("preview", "-c", str(tmp_path / "feeds.yaml"), env=ENV, now=NOW).output
    headings = [line for line in text.splitlines() if line.startswith("-- [post]")]
    assert any("Ein Artikel auf Deutsch" in line and line.endswith("[de from channel]") for line in headings)
    assert any("Um artigo em português" in line and line.endswith("[pt from item]") for line in headings)
    assert "warning: feed invalid: language 'français' is not a language tag (like fr or fr-FR): ignored" in text


def test_preview_json_default_and_feed_sources(tmp_path: Path) -> None:
    feeds = (
        f"  - name: none\n    url: {FEEDS / 'language__rss-none-declared.xml'}\n"
        f"  - name: de\n    url: {FEEDS / 'language__rss-channel-de.xml'}\n    language: fr\n"
    )
    posts = preview_posts(write_config(tmp_path, "https://mastodon.example", feeds, defaults="  language: nl\n"))
    assert posts["Un article"] == {"language": "nl", "source": "default"}
    # language: written for the feed outranks its channel, never the item's own
    assert posts["Ein Artikel auf Deutsch"] == {"language": "fr", "source": "feed"}
    assert posts["Um artigo em português"] == {"language": "pt", "source": "item"}
    text = relay("preview", "-c", str(tmp_path / "feeds.yaml"), env=ENV, now=NOW).output
    [line] = [line for line in text.splitlines() if line.startswith("-- [post] none:")]
    assert " from " not in line  # the default is not pointed out


def test_run_posts_in_the_resolved_language(tmp_path: Path, mastodon: FakeMastodon) -> None:
    feeds = (
        f"  - name: de\n    url: {FEEDS / 'language__rss-channel-de.xml'}\n"
        f"  - name: none\n    url: {FEEDS / 'language__rss-none-declared.xml'}\n"
    )
    config = write_config(tmp_path, mastodon.url, feeds)
    result = relay("run", "-c", str(config), "--state-dir", str(tmp_path / "state"), env=ENV, now=NOW)
    assert result.exit_code == 0, result.output
    sent = {s["content"].split("\n")[0]: s["language"] for s in mastodon.statuses}
    assert sent == {
        "Ein Artikel auf Deutsch": "de",
        "Um artigo em português": "pt",
        "An article with its own dc:language": "en-US",
        "Un article": "fr",
    }


# relative links in a feed read from disk


def test_root_relative_links_from_disk_match_the_same_feed_over_http(tmp_path: Path, feed_server: FeedServer) -> None:
    site = feed_server.url("")
    body = (FEEDS / "links__rss-root-relative-with-site-link.xml").read_bytes().replace(b"SITE", site.encode())
    url = feed_server.feed("/feed.xml", body)
    local = tmp_path / "feed.xml"
    local.write_bytes(body)
    over_http = parse_feed(body, feed_name="f", url=url)
    from_disk = parse_feed(body, feed_name="f", url=local.as_uri())
    links = [item.link for item in from_disk.items]
    assert links == [f"{site}/2026/11/article", f"{site}/2026/11/autre"]
    assert links == [item.link for item in over_http.items]
    assert [item.image for item in from_disk.items] == [f"{site}/images/une.jpg", None]
    assert all(item.skip_reason is None for item in from_disk.items)
    feeds = f"  - name: disk\n    url: {local}\n  - name: http\n    url: {url}\n"
    result = relay(
        "preview", "-c", str(write_config(tmp_path, "https://mastodon.example", feeds)), "--format", "json", now=NOW
    )
    posts = json.loads(result.output)["posts"]
    assert all(p["action"] == "post" for p in posts if p["feed"] == "disk")
    # the same articles in both: the second feed's copies are skipped as duplicates
    by_feed = {name: sorted(p["link"] for p in posts if p["feed"] == name) for name in ("disk", "http")}
    assert by_feed["disk"] == by_feed["http"] == sorted(links)


def test_a_local_feed_without_an_absolute_site_link_keeps_its_links_unresolved() -> None:
    # the channel's own link is relative: nothing to resolve against, the items are skipped
    parsed = parse("links__rss-relative-urls-relative-site-link.xml", url="file:///srv/feeds/neverwinter.xml")
    assert all(item.link is None and "not http(s)" in (item.skip_reason or "") for item in parsed.items)


def test_an_item_queued_before_languages_were_read_still_renders() -> None:
    from relay.models import item_from_payload, item_payload

    [item] = parse("language__rss-none-declared.xml").items
    old = {k: v for k, v in item_payload(item).items() if k not in ("language", "channel_language")}
    restored = item_from_payload(json.dumps(old))
    assert (restored.language, restored.channel_language) == ("", "")
    assert item_from_payload(json.dumps(item_payload(item))) == item
