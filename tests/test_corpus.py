"""A sweep over the real-world corpus (copied from ../shared/corpus with its MANIFEST and
stats): no crash on any file, every entry accounted for, and what MANIFEST.md describes."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.dedupe import canonical_url
from relay.errors import ParseError
from relay.parse import parse_feed
from tests.support.fake_mastodon import FakeMastodon
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay

CORPUS = Path(__file__).parent / "feeds" / "corpus"
STATS = json.loads((CORPUS / "corpus_stats.json").read_text())
FILES = sorted(name for name in STATS)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", FILES)
def test_every_corpus_file_parses_like_its_stats_say(name: str) -> None:
    body = (CORPUS / name).read_bytes()
    expected = STATS[name]
    try:
        parsed = parse_feed(body, feed_name="corpus", url="https://example.org/feed/")
    except ParseError as exc:
        assert expected["entries"] == 0 and not expected["version"], (name, str(exc))
        return
    assert parsed.entries == expected["entries"], name
    assert len({item.key for item in parsed.items}) == len(parsed.items)  # no item hides another
    for item in parsed.items:
        assert "\n" not in item.title
        assert not re.search(r"<(b|p|a|div|span|br)\b", item.title), item.title
        assert not re.search(r"[\x00-\x08\u200b\u202e]", item.title + item.summary)
        if item.link is not None:
            assert item.link.startswith(("http://", "https://"))
        else:
            assert item.skip_reason


def items(name: str, url: str = "https://example.org/feed/"):  # type: ignore[no-untyped-def]
    return parse_feed((CORPUS / name).read_bytes(), feed_name="c", url=url).items


def test_google_alerts_links_are_posted_and_canonicalised_as_the_real_article() -> None:
    for item in items("feedjira__google_alerts_atom.xml"):
        assert item.key_link and "google.com/url" in item.key_link  # the key as earlier versions made it
        assert item.link and item.link.startswith(("http://", "https://")) and "google." not in item.link
        assert "&ct=ga" not in item.link and "usg=" not in item.link
        assert item.canonical_url and not item.canonical_url.startswith("google.com")


def test_feedburner_origlink() -> None:
    for item in items("feedjira__FeedBurnerXHTML.xml"):
        assert item.link and "feedproxy.google.com" not in item.link


def test_tracking_parameters_never_reach_the_canonical_url() -> None:
    for name in (
        "flus__lavertygrenoble.rss.xml",
        "sfp__humanite.rss.xml",
        "nodefp__mediacontent-dupes.xml",
        "flus__blog_basilesimon.atom.xml",
    ):
        for item in items(name):
            assert item.canonical_url and "utm_" not in item.canonical_url and "xtor" not in item.canonical_url
            assert item.link and "utm_" not in item.link


def test_french_titles_and_guillemets() -> None:
    [first, *_] = items("carousel__lemonde_international.rss.xml")
    assert first.title.startswith("« ") and first.title == first.title.strip()
    assert first.image and first.image.startswith("https://")


def test_encodings_decode() -> None:
    assert items("miniflux__encoding_WINDOWS-1251.xml")[0].title.startswith("Цитата")
    assert "é" in " ".join(i.title for i in items("miniflux__no_encoding_ISO-8859-1.xml"))


def test_numeric_guids_shared_by_two_feeds_are_each_feeds_own(tmp_path: Path, feed_server: FeedServer) -> None:
    """L'Humanité's guids are bare numbers (645745), unique only within the feed: another
    feed using the same numbers for other articles is neither known already nor posted
    under the first feed's idempotency keys."""
    humanite = (CORPUS / "sfp__humanite.rss.xml").read_bytes()
    assert len({item.key for item in items("sfp__humanite.rss.xml")}) == 10
    same_guids = humanite.replace(b"https://www.humanite.fr/", b"https://other.example/")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "link.j2").write_text("{{ item.link }}")  # the fake counts a URL in full
    mastodon = FakeMastodon()
    config = tmp_path / "feeds.yaml"
    text = (
        "defaults:\n  backfill: 10\n  max_age: 36500d\n  template: link\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {mastodon.url}\n    token: ${{TOKEN}}\n"
        "pacing:\n  max_per_run: 100\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: humanite\n    url: {feed_server.feed('/humanite', humanite)}\n"
    )
    try:
        config.write_text(text)
        first = relay("run", "-c", str(config), env={"TOKEN": "good-token"}, now=NOW)
        assert first.exit_code == 0, first.output
        config.write_text(text + f"  - name: other\n    url: {feed_server.feed('/other', same_guids)}\n")
        later = relay("run", "-c", str(config), env={"TOKEN": "good-token"}, now=NOW + timedelta(hours=1))
        assert later.exit_code == 0, later.output
    finally:
        mastodon.stop()
    links = [s["content"] for s in mastodon.statuses]
    assert len(links) == 20 and len({s["idempotency_key"] for s in mastodon.statuses}) == 20
    assert sum("other.example/" in link for link in links) == 10


def test_two_digit_years_parse() -> None:
    [item] = items("flus__years-in-two-digits.rss.xml")
    assert item.published is not None and item.published.year > 1990


def test_canonical_urls_do_not_collide_within_a_feed() -> None:
    for name in ("flus__framablog.rss.xml", "nnw__DaringFireball.rss", "nnw__atp.rss"):
        links = [i for i in items(name) if i.canonical_url]
        assert len({canonical_url(i.link or "") for i in links}) == len({i.link for i in links})
