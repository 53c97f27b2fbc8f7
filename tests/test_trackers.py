"""Tracking parameters and redirects leave the posted link by the ClearURLs rules (shipped in
unalix-rev) plus relay's few providers; every other parameter stays, so the link still works."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay import trackers
from relay.errors import ParseError
from relay.parse import parse_feed
from relay.trackers import clean_link
from tests.support.fake_mastodon import FakeMastodon
from tests.support.feedserver import FeedServer
from tests.support.relayrun import relay

FEEDS = Path(__file__).parent / "feeds"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"TOKEN": "good-token"}


def google_news_id(url: str) -> str:
    """An article ID of Google News' older kind: base64 of a protobuf holding the URL."""
    raw = url.encode()
    length = bytes([len(raw)]) if len(raw) < 0x80 else bytes([(len(raw) & 0x7F) | 0x80, len(raw) >> 7])
    return base64.urlsafe_b64encode(b"\x08\x13\x22" + length + raw + b"\xd2\x01\x00").decode().rstrip("=")


LONG_ARTICLE = "https://www.liberation.fr/societe/sante/" + "donnees-de-sante-" * 8 + "hdh_42/"

CLEANED = {
    # the list: utm_*, fbclid, gclid, mc_cid/mc_eid, xtor, at_medium, NYT partner/emc
    "https://www.nytimes.com/2026/11/02/world/europe/france-health-data.html?partner=rss&emc=rss": (
        "https://www.nytimes.com/2026/11/02/world/europe/france-health-data.html"
    ),
    "https://example.org/a?utm_source=rss&utm_medium=feed&utm_campaign=hdh&p=24275": "https://example.org/a?p=24275",
    "https://example.org/a?fbclid=IwAR0abc&gclid=Cj0K&mc_cid=5e1&mc_eid=9f2&id=3": "https://example.org/a?id=3",
    "https://www.lemonde.fr/sante/article/2026/11/02/hdh_6012.html?xtor=RSS-3208": (
        "https://www.lemonde.fr/sante/article/2026/11/02/hdh_6012.html"
    ),
    "https://www.francetvinfo.fr/sante/hdh.html#xtor=RSS-3-[lestitres]": "https://www.francetvinfo.fr/sante/hdh.html",
    "https://www.bbc.co.uk/news/world-123?at_medium=RSS&at_campaign=KARANGA": "https://www.bbc.co.uk/news/world-123",
    # Google Alerts and Google News send readers through Google first
    "https://www.google.com/url?rct=j&sa=t&url=https://www.laquadrature.net/2026/11/hdh/&ct=ga&cd=CAIyGjk&usg=AOvVaw1": (
        "https://www.laquadrature.net/2026/11/hdh/"
    ),
    "https://www.google.fr/url?rct=j&sa=t&url=https%3A%2F%2Fsantenathon.org%2Fpetition%3Fid%3D7&ct=ga": (
        "https://santenathon.org/petition?id=7"
    ),
    "https://news.google.com/news/url?sa=t&fd=R&ct2=fr&usg=AFQjCNE&url=https://www.liberation.fr/sante/hdh/": (
        "https://www.liberation.fr/sante/hdh/"
    ),
    f"https://news.google.com/rss/articles/{google_news_id('https://www.example.fr/article/donnees-de-sante')}?oc=5": (
        "https://www.example.fr/article/donnees-de-sante"
    ),
    f"https://news.google.com/rss/articles/{google_news_id(LONG_ARTICLE)}?oc=5": LONG_ARTICLE,
    # a redirect to a tracked link: both go
    "https://www.google.com/url?q=https%3A%2F%2Fexample.org%2Fb%3Futm_source%3Dalert%26x%3D1": "https://example.org/b?x=1",
    # site rules apply to their site
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&feature=youtu.be&si=AbC": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://x.com/collectif/status/1?s=20&t=abc": "https://x.com/collectif/status/1",
    "https://www.change.org/p/stop-hdh?source_location=petitions_browse&psf_variant=combo": (
        "https://www.change.org/p/stop-hdh"
    ),
}

KEPT = [
    "https://example.org/wp/?p=42",  # WordPress' post id
    "https://example.org/page?hl=fr&lang=fr&id=7&page=2",
    "https://example.org/search?s=hdh&t=1",  # x.com's s/t rules are x.com's only
    "https://x-com.fr/recherche?s=hdh&t=1",  # x.com's pattern is not this host
    "https://twitter.company.example/a?s=1",
    "https://github.com/santenathon/relay/releases?ref=main",  # a ClearURLs exception
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    "https://example.org/article#section-2",
    # newer Google News IDs are opaque: only Google can resolve them, and relay does not ask
    "https://news.google.com/rss/articles/CBMiqwFBVV95cUxNMTRqUndCYk5Q?oc=5&hl=fr&gl=FR&ceid=FR:fr",
    # a redirect whose target is not http(s) is not followed
    "https://www.google.com/url?q=javascript:alert(1)",
    "https://www.google.com/url?q=ftp://example.org/file",
]


@pytest.mark.parametrize(("link", "expected"), sorted(CLEANED.items()))
def test_tracking_parameters_and_redirects_are_removed(link: str, expected: str) -> None:
    assert clean_link(link) == expected


@pytest.mark.parametrize("link", KEPT)
def test_a_parameter_no_rule_names_stays(link: str) -> None:
    assert clean_link(link) == link


def test_a_garbled_google_news_id_leaves_the_link_as_it_is() -> None:
    truncated = google_news_id("https://www.example.fr/article")[:-6]
    for link in (
        f"https://news.google.com/rss/articles/{truncated}",
        "https://news.google.com/rss/articles/!!notbase64!!",
        "https://news.google.com/rss/articles/" + base64.urlsafe_b64encode(b"\x22\x10https://a b/c d/e f").decode(),
    ):
        assert clean_link(link) == link


def test_every_provider_of_the_catalogue_compiles() -> None:
    providers = trackers._providers()
    assert len(providers) > 150  # the whole ClearURLs catalogue, not a stub
    broken = [p.name for p in providers if trackers._compiled(p) is None]
    assert broken == []


def corpus_links() -> list[str]:
    links = []
    for path in sorted((FEEDS / "corpus").iterdir()):
        if path.suffix in (".json", ".md"):
            continue
        try:
            parsed = parse_feed(path.read_bytes(), feed_name="corpus", url="https://example.org/feed/")
        except ParseError:  # files that are not feeds have no links to clean
            continue
        links += [item.key_link for item in parsed.items if item.key_link]
    return links


def test_the_host_prefilter_never_changes_a_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap host-word test only skips providers that could not have matched: every link
    of the corpus and of this file is cleaned the same with and without it."""
    links = corpus_links() + list(CLEANED) + KEPT
    assert len(links) > 500
    fast = [clean_link(link) for link in links]
    unhinted = tuple(trackers._Provider(p.name, "", p.spec) for p in trackers._providers())
    monkeypatch.setattr(trackers, "_providers", lambda: unhinted)
    trackers._candidates.cache_clear()
    try:
        assert [clean_link(link) for link in links] == fast
    finally:
        trackers._candidates.cache_clear()


def test_a_guidless_item_keeps_the_key_earlier_versions_gave_it() -> None:
    """State written before the ClearURLs rules keys a guid-less item by its link minus the old
    list; a key made from the new cleaner would post the item again after an upgrade."""
    body = (
        b'<rss version="2.0"><channel><title>t</title><link>https://www.nytimes.com/</link><item>'
        b"<title>Health data</title>"
        b"<link>https://www.nytimes.com/2026/11/02/hdh.html?partner=rss&amp;emc=rss&amp;utm_source=x</link>"
        b"</item></channel></rss>"
    )
    (item,) = parse_feed(body, feed_name="f", url="https://www.nytimes.com/rss").items
    assert item.link == "https://www.nytimes.com/2026/11/02/hdh.html"
    assert item.key == "link:https://www.nytimes.com/2026/11/02/hdh.html?partner=rss&emc=rss"
    assert item.canonical_url == "nytimes.com/2026/11/02/hdh.html?emc=rss&partner=rss"


TRACKED_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Revue de presse</title><link>https://news.example/</link>
<item><title>Le Health Data Hub reste chez Microsoft</title><guid>1</guid>
<link>https://www.lemonde.fr/sante/article/2026/11/02/hdh_6012.html?xtor=RSS-3208&amp;utm_source=rss</link></item>
<item><title>Alerte : la CNIL saisie</title><guid>2</guid>
<link>https://www.google.com/url?rct=j&amp;sa=t&amp;url=https://www.laquadrature.net/2026/11/cnil/&amp;ct=ga&amp;usg=AOv</link></item>
<item><title>Health data stays on Microsoft's cloud</title><guid>3</guid>
<link>https://www.nytimes.com/2026/11/02/world/europe/hdh.html?partner=rss&amp;emc=rss</link></item>
</channel></rss>"""

EXPECTED_LINKS = {
    "https://www.lemonde.fr/sante/article/2026/11/02/hdh_6012.html",
    "https://www.laquadrature.net/2026/11/cnil/",
    "https://www.nytimes.com/2026/11/02/world/europe/hdh.html",
}


def write_config(tmp_path: Path, instance: str, url: str, bluesky: bool = True) -> Path:
    path = tmp_path / "feeds.yaml"
    sky = (
        "  sky:\n    platform: bluesky\n    handle: collectif.example\n    app_password: ${TOKEN}\n" if bluesky else ""
    )
    path.write_text(
        "defaults:\n  backfill: 10\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {instance}\n    token: ${{TOKEN}}\n{sky}"
        "pacing:\n  max_per_run: 10\n  min_interval: 0s\n  max_per_day: 1000\n"
        f"feeds:\n  - name: presse\n    url: {url}\n"
    )
    return path


def test_preview_and_run_post_the_cleaned_links(
    tmp_path: Path, feed_server: FeedServer, mastodon: FakeMastodon
) -> None:
    url = feed_server.feed("/presse.xml", TRACKED_FEED.encode())
    config = write_config(tmp_path, mastodon.url, url)
    result = relay("preview", "-c", str(config), "--format", "json", env=ENV, now=NOW)
    assert result.exit_code == 0, result.output
    posts = json.loads(result.output)["posts"]
    for platform in ("mastodon", "bluesky"):
        shown = [p for p in posts if p["platform"] == platform]
        assert {p["link"] for p in shown} == EXPECTED_LINKS
        for post in shown:
            assert "xtor" not in post["text"] and "partner=" not in post["text"] and "google.com" not in post["text"]
    for post in (p for p in posts if p["platform"] == "bluesky"):
        assert post["embed"]["external"]["uri"] == post["link"]
        assert {f["features"][0]["uri"] for f in post["facets"]} == {post["link"]}
    config = write_config(tmp_path, mastodon.url, url, bluesky=False)
    result = relay("run", "-c", str(config), "--state-dir", str(tmp_path / "state"), env=ENV, now=NOW)
    assert result.exit_code == 0, result.output
    sent = {word for status in mastodon.statuses for word in status["content"].split() if word.startswith("https://")}
    assert sent == EXPECTED_LINKS
