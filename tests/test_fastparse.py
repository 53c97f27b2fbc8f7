"""The fast parser path (relay.fastparse, feedparser-rs) gives the same feeds and Items as
feedparser, field by field, over the real-world corpus, the feeds in tests/feeds, the hostile
bodies and the fuzzer's documents; a body it cannot read as feedparser would goes to
feedparser; RELAY_PARSER=feedparser and an install without feedparser-rs read every feed with
feedparser alone."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import feedparser.urls
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.fuzzlib import _XML_ILLEGAL, HTML, Document, documents, hostile_text, odd_link
from relay import fastparse
from relay.errors import ParseError
from relay.models import ParsedFeed
from relay.parse import parse_feed
from tests.support import feedserver as fs
from tests.support.feeds import numbered
from tests.test_parse_hostile import HOSTILE

feedparser_rs = pytest.importorskip("feedparser_rs")  # the test extra installs it

FEEDS = Path(__file__).parent / "feeds"
CORPUS = FEEDS / "corpus"
BODIES = sorted(
    [path for path in CORPUS.iterdir() if path.suffix not in (".md", ".json")] + list(FEEDS.glob("*.xml")),
    key=lambda path: path.name,
)
URL = "https://example.org/feed/"


def _parse(body: bytes, url: str = URL, content_type: str = "", fast: bool = True) -> ParsedFeed | str:
    try:
        return parse_feed(body, feed_name="f", url=url, content_type=content_type, fast=fast)
    except ParseError as exc:
        return f"ParseError: {exc}"


def _with_feedparser(monkeypatch: pytest.MonkeyPatch, body: bytes, url: str = URL, content_type: str = "") -> Any:
    return _parse(body, url, content_type, fast=False)


def _fast(body: bytes, url: str = URL, content_type: str = "") -> dict[str, Any] | None:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    return fastparse.read(body, headers)


def _assert_same(expected: ParsedFeed | str, found: ParsedFeed | str, name: str) -> None:
    """Field by field, so that a failure names the field."""
    assert type(expected) is type(found), (name, expected, found)
    if isinstance(expected, str) or isinstance(found, str):
        assert expected == found, name
        return
    for field in ("title", "entries", "warnings", "language"):
        assert getattr(found, field) == getattr(expected, field), (name, field)
    assert len(found.items) == len(expected.items), name
    for index, (slow, fast) in enumerate(zip(expected.items, found.items, strict=True)):
        for field in slow.__dataclass_fields__:
            assert getattr(fast, field) == getattr(slow, field), (name, index, field)
    assert found == expected, name


@pytest.mark.parametrize("content_type", ["", "application/rss+xml", "text/xml; charset=utf-8"])
@pytest.mark.parametrize("path", BODIES, ids=lambda path: path.name)
def test_every_corpus_and_test_feed_is_read_as_feedparser_reads_it(
    monkeypatch: pytest.MonkeyPatch, path: Path, content_type: str
) -> None:
    body = path.read_bytes()
    _assert_same(
        _with_feedparser(monkeypatch, body, content_type=content_type),
        _parse(body, content_type=content_type),
        path.name,
    )


@pytest.mark.parametrize("path", sorted(FEEDS.glob("links__*.xml")), ids=lambda path: path.name)
def test_a_feed_read_from_disk_resolves_its_links_as_with_feedparser(
    monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    url = path.as_uri()  # no web address: links resolve against the site the feed declares
    body = path.read_bytes()
    _assert_same(_with_feedparser(monkeypatch, body, url), _parse(body, url), path.name)


@pytest.mark.parametrize(
    "body",
    [
        b"<feed xmlns='http://www.w3.org/2005/Atom'><id>urn:f</id><link href='https://host.example/&#10;@x@spam.example https://spam.example'/><entry><id>a1</id><link rel='self' href='/s'/></entry></feed>",
        b"<feed xmlns='http://www.w3.org/2005/Atom'><link href='https:///none'/><entry><id>/e/2</id><link rel='related' type='text/html' href='/r'/></entry></feed>",
        b"<feed xmlns='http://www.w3.org/2005/Atom'><id>https://site.example/</id><entry><id>/e/3</id></entry></feed>",
        b"<rss version='2.0'><channel><link>https://site.example/a?x=1&amp;y=2</link><item><guid>/g/1</guid></item></channel></rss>",
    ],
)
def test_a_feed_read_from_disk_finds_its_site_as_feedparser_does(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    url = "file:///tmp/feed.xml"  # its links resolve against the site link it declares
    _assert_same(_with_feedparser(monkeypatch, body, url), _parse(body, url), "from disk")


def test_the_fast_path_reads_most_of_the_corpus() -> None:
    # the equality above is not vacuous: most feeds do take the fast path
    fast = [path.name for path in BODIES if _fast(path.read_bytes()) is not None]
    assert len(fast) >= 25, fast
    assert _fast(numbered(20)) is not None


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_are_read_as_feedparser_reads_them(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    body = HOSTILE[name]
    _assert_same(_with_feedparser(monkeypatch, body), _parse(body), name)


def _rss(description: bytes) -> bytes:
    return (
        b"<rss version='2.0'><channel><title>t</title><item><title>t</title><link>https://a.example/</link>"
        b"<description>" + description + b"</description></item></channel></rss>"
    )


# Bodies aimed at the adapter's own scans: each is read in time linear in its size (the
# failure mode is the timeout: a quadratic scan of these takes minutes), and the same.
ADAPTER_HOSTILE = {
    "lang= in text, 1.8 MB": _rss(b" lang=" * 300_000),
    "unclosed tags in HTML": _rss(b"&lt;a " * 20_000),
    "attributes in one tag, 1.6 MB": _rss(b"&lt;a" + b" x=&quot;1&quot;" * 100_000 + b"&gt;"),
    "images": _rss(b"&lt;img src=&quot;/i.png&quot;&gt;" * 20_000),
    "atom links": b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id>"
    + b"<link href='/x'/>" * 20_000
    + b"</entry></feed>",
    "empty links": b"<rss version='2.0'><channel>"
    + b"<item><title>t</title><link></link></item>" * 5_000
    + b"</channel></rss>",
    "unclosed images in CDATA": _rss(b"<![CDATA[" + b"<image " * 50_000 + b"]]>"),
    "a long element name in CDATA": _rss(b"<![CDATA[<" + b"date" * 50_000 + b"]]>"),
    "titles": b"<feed xmlns='http://www.w3.org/2005/Atom'>"
    + b"<entry><title>a &amp; b</title><title>c</title></entry>" * 5_000
    + b"</feed>",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ADAPTER_HOSTILE)
def test_bodies_aimed_at_the_adapter_are_read_in_linear_time_and_the_same(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    body = ADAPTER_HOSTILE[name]
    _assert_same(_with_feedparser(monkeypatch, body), _parse(body), name)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_a_declared_entity_goes_to_feedparser_and_is_never_expanded(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    body = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<!DOCTYPE rss [\n<!ENTITY lol "' + "A" * 5_000 + "\" '>]>\n"
        '<rss version="2.0"><channel><title>e</title><item><title>' + "&lol;" * 100 + "</title>"
        "<link>https://evil.example/e</link><guid>e1</guid></item></channel></rss>"
    ).encode(encoding)
    assert _fast(body) is None
    parsed = _parse(body)
    _assert_same(_with_feedparser(monkeypatch, body), parsed, encoding)
    assert "A" * 100 not in repr(parsed)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        (
            "broken link",
            b"<rss version='2.0'><channel><item><title>t</title><link>https://a.example/\n@x@spam.example</link></item></channel></rss>",
        ),
        ("relative guid", b"<rss version='2.0'><channel><item><title>t</title><guid>42</guid></item></channel></rss>"),
        (
            "not a permalink",
            b"<rss version='2.0'><channel><item><title>t</title><guid isPermaLink='false'>42</guid></item></channel></rss>",
        ),
        (
            "atom id",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>t3_x</id><title>t</title><link href=''/></entry></feed>",
        ),
        (
            "entities in hrefs",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id><title>t</title><link href='https://a.example/?a=1&amp;b=2&#10;c'/></entry></feed>",
        ),
        (
            "rss title html",
            b"<rss version='2.0'><channel><item><title>C&amp;rsquo;est &lt;b&gt;gras&lt;/b&gt; &amp;amp; fin</title><link>/a</link></item></channel></rss>",
        ),
        (
            "rss title text",
            b"<rss version='2.0'><channel><item><title>a &lt; b &amp;amp; c</title><link>/a</link></item></channel></rss>",
        ),
        (
            "relative image",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><description>&lt;p&gt;x &lt;img src='../i.png?a=1&amp;amp;b=2' alt='A'&gt;&lt;/p&gt;</description></item></channel></rss>",
        ),
        (
            "script",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><description>&lt;script&gt;alert(1)&lt;/script&gt;x</description></item></channel></rss>",
        ),
        (
            "c1 controls",
            "<rss version='2.0'><channel><item><title>l\x92\x85 Ã©tat</title><link>/a</link></item></channel></rss>".encode(),
        ),
        (
            "comments",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><description>a&lt;!-- &lt;img src='/x.png'&gt; --&gt;b &lt;!-- c -- &gt; d --&gt;e</description></item></channel></rss>",
        ),
        (
            "closed comment",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><description>a&lt;!-- c --&gt;b&lt;img src='/y.png'&gt;</description></item></channel></rss>",
        ),
        (
            "underscore language",
            b"<rss version='2.0'><channel><language>en_US</language><item><title>t</title><link>/a</link></item></channel></rss>",
        ),
        (
            "xml:lang",
            b"<feed xmlns='http://www.w3.org/2005/Atom' xml:lang='en_GB'><title>T</title><entry xml:lang='fr'><id>a</id><title>t</title><summary xml:lang='de_DE'>s</summary></entry></feed>",
        ),
        (
            "media description",
            b"<rss version='2.0' xmlns:media='http://search.yahoo.com/mrss/'><channel><item><title>t</title><link>/a</link><media:content url='/i.jpg' medium='image'><media:description type='plain'>Alt &amp; text</media:description><media:credit>AFP</media:credit></media:content></item></channel></rss>",
        ),
        (
            "media credit",
            b"<rss version='2.0' xmlns:media='http://search.yahoo.com/mrss/'><channel><item><title>t</title><link>/a</link><description>d</description><media:content url='/i.jpg' medium='image'><media:credit role='photographer'>AFP</media:credit></media:content><media:thumbnail url='/t.jpg'/></item></channel></rss>",
        ),
        (
            "enclosure",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><enclosure url='/p.png' type='image/png' length='1'/></item><item><title>u</title><link>/b</link><enclosure url='https://a.example/p.png?a=1&amp;b=2' type='image/png' length='1'/></item></channel></rss>",
        ),
        (
            "guid as link",
            b"<rss version='2.0'><channel><item><title>t</title><guid>https://a.example/p/1</guid></item><item><title>u</title><guid>/p/2</guid></item></channel></rss>",
        ),
        (
            "atom links",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>urn:a</id><title>t</title><link rel='alternate' type='application/pdf' href='/a.pdf'/><link href='/a'/><link rel='alternate' href='/b'/><link rel='self' href='/self'/></entry></feed>",
        ),
        (
            "authors",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>urn:a</id><title>t</title><link href='/a'/><author><name>Ana</name><email>ana@a.example</email><uri>https://a.example/</uri></author></entry></feed>",
        ),
        (
            "rss author",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><author>ana@a.example (Ana B)</author><comments>/c</comments></item></channel></rss>",
        ),
        (
            "dates",
            b"<rss version='2.0' xmlns:dc='http://purl.org/dc/elements/1.1/'><channel><item><title>t</title><link>/a</link><dc:date>2024-03-01T10:00:00+01:00</dc:date></item><item><title>u</title><link>/b</link><pubDate>mar., 13 sept. 2022 16:41:30 +0000</pubDate><dc:date>2024-03-01T10:00:00Z</dc:date></item></channel></rss>",
        ),
        (
            "atom dates",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>urn:a</id><title>t</title><link href='/a'/><updated>2024-03-01T10:00:00Z</updated></entry><entry><id>urn:b</id><title>u</title><link href='/b'/><published>2024-13-01</published><updated>2024-03-02T10:00:00Z</updated></entry></feed>",
        ),
        (
            "rdf",
            b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' xmlns='http://purl.org/rss/1.0/'><channel rdf:about='https://a.example/'><title>T</title><link>https://a.example/</link></channel><item rdf:about='/p/1'><title>t</title><link>/p/1</link></item><item rdf:about='https://a.example/p/2#x'><title>u</title><link>https://a.example/p/2</link></item></rdf:RDF>",
        ),
        (
            "no identifiers",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><title>t</title><link href='/a'/></entry></feed>",
        ),
        (
            "no guid",
            b"<rss version='2.0'><channel><item><title>t</title><link>https://a.example/p?</link></item><item><description>d</description></item></channel></rss>",
        ),
        (
            "links feedparser-rs cannot read",
            "<rss version='2.0'><channel><item><title>u</title><link>http://[::1]/ƥ]=ǫ?*</link></item><item><title>v</title><link><![CDATA[https://a.example/c]]></link></item></channel></rss>".encode(),
        ),
        (
            "markup for the sanitizer",
            b"<rss version='2.0'><channel><item><title>t</title><link>/a</link><description>&lt;iframe src='x'&gt;i&lt;/iframe&gt;a &lt;3 b &lt;img src='/i.png' alt='&amp;lt;b&amp;gt;'&gt;</description></item></channel></rss>",
        ),
        (
            "elements written twice",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id><title>a &amp; b</title><title>c</title></entry></feed>",
        ),
        (
            "rss elements written twice",
            b"<rss version='2.0'><channel><item><title>a</title><title>b</title><description>d</description><description>e</description><link>/x</link><link>/y</link></item></channel></rss>",
        ),
        (
            "an item's image",
            b"<rss version='2.0'><channel><item><title>a</title><link>/x</link><image><url>/i.png</url><title>i</title><link>/i</link></image></item></channel></rss>",
        ),
        (
            "dates feedparser-rs does not read",
            b"<rss version='2.0' xmlns:dcterms='http://purl.org/dc/terms/' xmlns:atom='http://www.w3.org/2005/Atom'><channel><item><title>t</title><link>/1</link><dcterms:created>2024-01-02T00:00:00Z</dcterms:created></item><item><title>u</title><link>/2</link><atom:updated>2024-01-03T00:00:00Z</atom:updated></item><item><title>v</title><link>/3</link><lastBuildDate>Mon, 30 Nov 2026 10:00:00 +0000</lastBuildDate></item></channel></rss>",
        ),
        (
            "dates both leave alone",
            b"<rss version='2.0' xmlns:dc='http://purl.org/dc/elements/1.1/'><channel><item><title>t</title><link>/1</link><dc:created>2024-01-02T00:00:00Z</dc:created><dc:modified>2024-01-02T00:00:00Z</dc:modified></item></channel></rss>",
        ),
        (
            "categories",
            b"<rss version='2.0'><channel><item><title>t</title><link>/1</link><category domain='d'>A</category><category domain='d'></category><category>A</category><category>B</category><category domain='e'>B</category><category>A</category></item></channel></rss>",
        ),
        (
            "atom categories",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id><category term='A'/><category term='A'/><category term='B' scheme='s'/><category label='L'/><category term=''/></entry></feed>",
        ),
        (
            "a link that resolves to nothing",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><title>t</title><link rel='alternate' href='https://[::1/x'/><id>c</id></entry><entry><title>u</title><id>d</id><link href='http://[::1/y'/></entry></feed>",
        ),
        (
            "an empty plain summary beside HTML content",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id><link href='/a'/><summary></summary><content type='html'>&lt;p&gt;para&lt;/p&gt;&lt;img src='' alt='x'&gt;&lt;br/&gt;&lt;b class=g&gt;gras&lt;/b&gt;</content></entry></feed>",
        ),
        (
            "json feed",
            b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "1", "url": "https://a.example/"}]}',
        ),
        (
            "latin-1",
            "<?xml version='1.0' encoding='iso-8859-1'?><rss version='2.0'><channel><item><title>été</title><link>/a</link></item></channel></rss>".encode(
                "latin-1"
            ),
        ),
    ],
)
def test_cases_where_the_parsers_differ_come_out_the_same(
    monkeypatch: pytest.MonkeyPatch, name: str, body: bytes
) -> None:
    for content_type in ("", "text/xml", "application/xml; charset=windows-1252"):
        _assert_same(
            _with_feedparser(monkeypatch, body, content_type=content_type),
            _parse(body, content_type=content_type),
            name,
        )


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(document=documents)
def test_generated_hostile_documents_are_read_as_feedparser_reads_them(
    monkeypatch: pytest.MonkeyPatch, document: Document
) -> None:
    body = document.to_bytes()
    _assert_same(_with_feedparser(monkeypatch, body), _parse(body), document.kind)


# A richer generator than the fuzzer's: the elements and attributes where the two parsers
# were found to differ (ids, links, guids, types, authors, categories, dates, enclosures,
# media, languages, HTML with images, comments, references and markup for the sanitizer).
_LINKS = st.one_of(
    odd_link,
    st.sampled_from(
        ["/rel/a", "rel/b?x=1&y=2", "https://a.example/p?q=1&amp;r=2", "HTTPS://A.example/P", "//cdn.example/x", ""]
    ),
)
_HTML = st.lists(
    st.one_of(
        st.sampled_from(HTML),
        hostile_text,
        st.builds(lambda src, alt: f"<img src={quoteattr(src)} alt={quoteattr(alt)}>", _LINKS, hostile_text),
        st.sampled_from(
            [
                "<p>para</p>",
                "<!-- c -->",
                "<!-- <img src='/c.png'> -->",
                "<br/>",
                "<a href='/x?a=1&amp;b=2'>lien</a>",
                "&nbsp;",
                "&amp;amp;",
                "<iframe src='x'>i</iframe>",
                "<div class='d'><span>s</span></div>",
                "a < b",
                "<3",
                "&#64;user",
            ]
        ),
    ),
    max_size=6,
).map("".join)
_DATES = st.sampled_from(["Mon, 30 Nov 2026 10:00:00 +0000", "2026-11-30T10:00:00Z", "2026-11-30", "garbage", ""])
_LANGUAGES = st.sampled_from(["", "fr", "en_US", "de-DE", "x", "français"])


@st.composite
def _rss_item(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        title = draw(st.one_of(hostile_text, _HTML))
        cdata = "<![CDATA[" + title.replace("]]>", "") + "]]>"
        parts.append(f"<title>{escape(title) if draw(st.booleans()) else cdata}</title>")
    if draw(st.booleans()):
        parts.append(f"<link>{escape(draw(_LINKS))}</link>")
    guid = draw(st.one_of(st.none(), st.sampled_from(["g1", "/g/2", "https://a.example/g/3", "urn:x:4"])))
    if guid is not None:
        permalink = draw(st.sampled_from(["", " isPermaLink='false'", " isPermaLink='true'"]))
        parts.append(f"<guid{permalink}>{escape(guid)}</guid>")
    if draw(st.booleans()):
        parts.append(f"<description>{escape(draw(_HTML))}</description>")
    if draw(st.booleans()):
        parts.append(f"<content:encoded><![CDATA[{draw(_HTML).replace(']]>', '')}]]></content:encoded>")
    for element in ("pubDate", "dc:date"):
        if draw(st.booleans()):
            parts.append(f"<{element}>{escape(draw(_DATES))}</{element}>")
    parts += [f"<category>{escape(draw(hostile_text))}</category>" for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        parts.append(f"<dc:creator>{escape(draw(hostile_text))}</dc:creator>")
    if draw(st.booleans()):
        parts.append(f"<author>{escape(draw(st.sampled_from(['a@b.example (A B)', 'Ana', ''])))}</author>")
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["image/png", "audio/mpeg", ""]))
        parts.append(f"<enclosure url={quoteattr(draw(_LINKS))} type={quoteattr(kind)} length='1'/>")
    if draw(st.booleans()):
        medium = draw(st.sampled_from(["image", "video", ""]))
        parts.append(f"<media:content url={quoteattr(draw(_LINKS))} medium={quoteattr(medium)}/>")
    if draw(st.booleans()):
        parts.append(f"<media:thumbnail url={quoteattr(draw(_LINKS))}/>")
    return "<item>" + "".join(parts) + "</item>"


@st.composite
def _atom_entry(draw: st.DrawFn) -> str:
    language = draw(_LANGUAGES)
    parts = []
    if draw(st.booleans()):
        parts.append(f"<id>{escape(draw(st.sampled_from(['a1', 'urn:x:1', 'https://a.example/e/1', '/e/2'])))}</id>")
    for element in ("title", "summary", "content"):
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["text", "html", None]))
            typed = f" type={quoteattr(kind)}" if kind else ""
            parts.append(f"<{element}{typed}>{escape(draw(st.one_of(hostile_text, _HTML)))}</{element}>")
    for _ in range(draw(st.integers(0, 3))):
        rel = draw(st.sampled_from(["", " rel='alternate'", " rel='self'", " rel='related'"]))
        kind = draw(st.sampled_from(["", " type='text/html'", " type='application/pdf'"]))
        parts.append(f"<link{rel}{kind} href={quoteattr(draw(_LINKS))}/>")
    for element in ("published", "updated"):
        if draw(st.booleans()):
            parts.append(f"<{element}>{escape(draw(_DATES))}</{element}>")
    parts += [f"<category term={quoteattr(draw(hostile_text))}/>" for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        email = "<email>a@b.example</email>" if draw(st.booleans()) else ""
        parts.append(f"<author><name>{escape(draw(hostile_text))}</name>{email}</author>")
    declared = f" xml:lang={quoteattr(language)}" if language and draw(st.booleans()) else ""
    return f"<entry{declared}>" + "".join(parts) + "</entry>"


@st.composite
def _feeds(draw: st.DrawFn) -> bytes:
    language = draw(_LANGUAGES)
    title = escape(draw(hostile_text))
    if draw(st.booleans()):
        head = (
            "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'"
            " xmlns:content='http://purl.org/rss/1.0/modules/content/'"
            " xmlns:dc='http://purl.org/dc/elements/1.1/' xmlns:media='http://search.yahoo.com/mrss/'><channel>"
            f"<title>{title}</title><link>{escape(draw(_LINKS))}</link>"
            + (f"<language>{escape(language)}</language>" if language else "")
        )
        body = head + "".join(draw(st.lists(_rss_item(), min_size=1, max_size=4))) + "</channel></rss>"
    else:
        declared = f" xml:lang={quoteattr(language)}" if language else ""
        head = (
            f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'{declared}>"
            f"<title>{title}</title>"
        )
        body = head + "".join(draw(st.lists(_atom_entry(), min_size=1, max_size=4))) + "</feed>"
    return _XML_ILLEGAL.sub("", body).encode()


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(body=_feeds(), url=st.sampled_from([URL, "file:///tmp/feed.xml"]))
def test_generated_feeds_with_every_element_are_read_as_feedparser_reads_them(
    monkeypatch: pytest.MonkeyPatch, body: bytes, url: str
) -> None:
    _assert_same(_with_feedparser(monkeypatch, body, url), _parse(body, url), "generated")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    uri=st.from_regex(fastparse._PLAIN_ABSOLUTE, fullmatch=True),
    base=st.sampled_from([URL, "http://a.example/x/", "file://tmp/f.xml", ""]),
)
def test_a_plain_absolute_url_is_what_feedparser_would_resolve_it_to(uri: str, base: str) -> None:
    assert fastparse._resolve(base, uri) == feedparser.urls._urljoin(base, uri)


# Falling back


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """The sources feedparser-rs is asked to parse."""
    seen: list[object] = []
    real = feedparser_rs.parse_with_limits

    def spy(source: object, *args: Any, **kwargs: Any) -> Any:
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(feedparser_rs, "parse_with_limits", spy)
    yield seen


def test_the_fast_parser_gets_bytes_never_a_url_to_fetch(calls: list[object]) -> None:
    assert _fast(b"https://example.org/feed.xml") is None
    assert _fast(numbered(3)) is not None
    assert calls and all(isinstance(source, bytes) for source in calls)


def test_relay_parser_feedparser_never_calls_the_fast_parser(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, calls: list[object]
) -> None:
    """RELAY_PARSER is read once, at the edge, into the context the run passes down."""
    from relay.config import load_config
    from relay.edge import context

    (tmp_path / "feeds.yaml").write_text("feeds:\n  - name: a\n    url: https://example.org/feed\n")
    config = load_config(tmp_path / "feeds.yaml", environ={})
    monkeypatch.delenv("RELAY_PARSER", raising=False)
    assert context(config).fast_parser
    monkeypatch.setenv("RELAY_PARSER", "feedparser")
    assert not context(config).fast_parser
    body = numbered(5)
    fast = _parse(body)
    assert len(calls) == 1
    assert _parse(body, fast=context(config).fast_parser) == fast
    assert len(calls) == 1


def test_parse_feed_can_be_told_which_parser_to_use(calls: list[object]) -> None:
    body = numbered(5)
    slow = parse_feed(body, feed_name="f", url=URL, fast=False)
    assert calls == []
    assert parse_feed(body, feed_name="f", url=URL, fast=True) == slow
    assert len(calls) == 1


def test_without_feedparser_rs_every_feed_is_read_by_feedparser_as_before(
    monkeypatch: pytest.MonkeyPatch, calls: list[object]
) -> None:
    samples = [path.read_bytes() for path in BODIES[::4]] + [numbered(20)]
    expected = [_with_feedparser(monkeypatch, body) for body in samples]
    monkeypatch.setitem(sys.modules, "feedparser_rs", None)  # as if it were not installed
    assert not fastparse.available()
    assert _fast(numbered(3)) is None
    for body, before in zip(samples, expected, strict=True):
        _assert_same(before, _parse(body), "without feedparser-rs")
        _assert_same(before, _parse(body, fast=True), "asked, not installed")
    assert calls == []


def test_an_entry_the_fast_parser_misses_sends_the_feed_to_feedparser(monkeypatch: pytest.MonkeyPatch) -> None:
    real = feedparser_rs.parse_with_limits

    class OneEntryShort:
        def __init__(self, result: Any) -> None:
            self.result = result
            self.entries = result.entries[:-1]

        def __getattr__(self, name: str) -> Any:
            return getattr(self.result, name)

    def one_entry_short(source: object, *args: Any, **kwargs: Any) -> Any:
        return OneEntryShort(real(source, *args, **kwargs))

    monkeypatch.setattr(feedparser_rs, "parse_with_limits", one_entry_short)
    body = numbered(4)
    assert _fast(body) is None
    parsed = _parse(body)
    assert isinstance(parsed, ParsedFeed) and len(parsed.items) == 4


def test_a_fast_parser_failure_sends_the_feed_to_feedparser(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: object, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(feedparser_rs, "parse_with_limits", broken)
    parsed = _parse(numbered(3))
    assert isinstance(parsed, ParsedFeed) and [item.title for item in parsed.items] == ["item 2", "item 1", "item 0"]


@pytest.mark.parametrize(
    "body",
    [
        b"<rss version='2.0'><channel><item><title>a &nbsp; b</title></item></channel></rss>",  # not well-formed
        b"<rss version='2.0'><channel><item><title>t</title><source url='https://a.example/'>s</source></item></channel></rss>",
        b"<feed xmlns='http://www.w3.org/2005/Atom' xml:base='https://a.example/'><entry><id>a</id></entry></feed>",
        b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><id>a</id><link base='https://b.example/' href='x'/></entry></feed>",
        b"<rss version='2.0'><channel><item lang='fr'><title>t</title></item></channel></rss>",
        "<rss version='2.0'><channel><item><title>\ufffd</title></item></channel></rss>".encode("utf-16"),
    ],
)
def test_what_the_fast_path_might_read_otherwise_goes_to_feedparser(body: bytes) -> None:
    assert _fast(body) is None


# End to end: relay preview as a real process, its feeds parsed in worker processes


def _preview_json(tmp_path: Path, feeds: dict[str, str], parser: str | None) -> Any:
    lines = [
        "defaults:\n  backfill: 50\naccounts:\n  masto:\n    platform: mastodon\n"
        "    instance: https://m.example\n    token: ${T}\nfeeds:"
    ]
    lines += [f"  - name: {name}\n    url: {url}" for name, url in feeds.items()]
    (tmp_path / "feeds.yaml").write_text("\n".join(lines) + "\n")
    environment = {key: value for key, value in os.environ.items() if key != "RELAY_PARSER"}
    if parser:
        environment["RELAY_PARSER"] = parser
    config, state = str(tmp_path / "feeds.yaml"), str(tmp_path / f"state-{parser}")
    result = subprocess.run(
        [sys.executable, "-m", "relay", "preview", "--all", "--format", "json", "-c", config, "--state-dir", state],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_relay_preview_shows_the_same_posts_with_either_parser(tmp_path: Path, feed_server: fs.FeedServer) -> None:
    names = ["flus__commitstrip.rss.xml", "feedjira__google_alerts_atom.xml", "miniflux__large_rss.xml", "nnw__atp.rss"]
    feeds = {name.split(".")[0]: feed_server.feed(f"/{name}", (CORPUS / name).read_bytes()) for name in names}
    feeds["numbered"] = feed_server.feed("/numbered", numbered(5))
    fast = _preview_json(tmp_path, feeds, None)
    assert fast["posts"]
    assert _preview_json(tmp_path, feeds, "feedparser") == fast


@pytest.mark.parametrize(
    "declaration",
    [b"<?xml " + b"encoding='x' " * 2_000, b"<?xml encoding='utf-8' " + b"'" * 20_000],
)
def test_a_declaration_that_feedparser_reads_slowly_is_not_read_twice(calls: list[object], declaration: bytes) -> None:
    # feedparser's encoding pattern goes back over such a first line once per encoding= or
    # quote (37 s at 26 KB): feedparser alone reads the feed, the fast path does not first
    body = declaration + b"\n<rss version='2.0'><channel><item><title>t</title></item></channel></rss>"
    assert _fast(body) is None
    assert calls == []


def test_a_feed_on_one_line_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    items = b"<item><title>x</title><link>https://a.example/</link></item>" * 900
    body = (
        b"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>t</title>"
        + items
        + b"</channel></rss>"
    )
    assert _fast(body) is not None
    _assert_same(_with_feedparser(monkeypatch, body), _parse(body), "one line")


# Elements of an entry, some read alike by both parsers and some not (the attacker review's
# vocabulary): whatever an entry holds, a feed moving between the parsers keeps its keys,
# links, titles and summaries, so no item is posted again.
_NAMESPACES = (
    ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
    ' xmlns:x="urn:x" xmlns:media="http://search.yahoo.com/mrss/"'
)
RSS_ELEMENTS = [
    "<title>T1</title>",
    "<link>https://a.example/1</link>",
    "<link>/rel</link>",
    "<link> https://a.example/2 </link>",
    "<guid>g1</guid>",
    '<guid isPermaLink="false">g2</guid>',
    '<guid isPermaLink="true">https://a.example/g</guid>',
    '<guid isPermaLink="True">https://a.example/g3</guid>',
    '<guid isPermaLink="1">/g4</guid>',
    "<dc:identifier>di</dc:identifier>",
    "<a:id>aid</a:id>",
    '<a:link href="https://a.example/al"/>',
    "<a:title>AT</a:title>",
    "<a:summary>AS</a:summary>",
    "<a:content>AC</a:content>",
    "<x:guid>xg</x:guid>",
    "<x:link>https://x/</x:link>",
    "<description>D @a@b.c</description>",
    "<content:encoded>&lt;p&gt;CE&lt;/p&gt;</content:encoded>",
    "<dc:title>DT</dc:title>",
    "<dc:description>DD</dc:description>",
    "<comments>https://c/</comments>",
    "<x:title>XT</x:title>",
    "<x:id>xid</x:id>",
    "<media:title>MT</media:title>",
    '<media:content url="https://m/i.png" type="image/png"/>',
    '<media:thumbnail url="javascript:x"/>',
    '<enclosure url="https://e/i.jpg" type="image/jpeg" length="1"/>',
    "<author>a@b.c (A)</author>",
    "<dc:creator>DC</dc:creator>",
    "<category>c</category>",
    "<pubDate>Mon, 30 Nov 2026 08:00:00 GMT</pubDate>",
    "<dc:date>2026-11-30T08:00:00Z</dc:date>",
    "<a:updated>2026-11-30T08:00:00Z</a:updated>",
    "<url>https://u/</url>",
    "<id>rid</id>",
    "<summary>S</summary>",
    "<published>2026-11-30T08:00:00Z</published>",
    "<permalink>https://p/</permalink>",
    '<wfw:commentRss xmlns:wfw="http://wellformedweb.org/CommentAPI/">https://w/</wfw:commentRss>',
    "<dc:relation>https://r/</dc:relation>",
    '<a:link rel="alternate" href="https://a.example/al2"/>',
]
ATOM_ELEMENTS = [
    "<title>T</title>",
    '<title type="text">T &amp;lt;b&amp;gt;</title>',
    "<id>urn:1</id>",
    "<id>/rel</id>",
    '<link href="https://a.example/1"/>',
    '<link rel="alternate" type="text/html" href="https://a.example/2"/>',
    '<link rel="related" href="https://a.example/r"/>',
    '<link rel="self" href="https://a.example/s"/>',
    '<link type="application/pdf" href="https://a.example/p"/>',
    "<guid>g</guid>",
    "<dc:identifier>di</dc:identifier>",
    "<summary>S @x@y.z</summary>",
    '<content type="html">&lt;p&gt;C&lt;/p&gt;</content>',
    '<content src="https://a.example/c"/>',
    "<x:id>xid</x:id>",
    '<x:link href="https://x/"/>',
    "<dc:title>DT</dc:title>",
    "<description>D</description>",
    "<updated>2026-11-30T08:00:00Z</updated>",
    "<published>2026-11-30T08:00:00Z</published>",
    "<author><name>N</name></author>",
    '<category term="c"/>',
    '<media:thumbnail url="https://m/t.png"/>',
    "<pubDate>Mon, 30 Nov 2026 08:00:00 GMT</pubDate>",
    '<link href="javascript:alert(1)"/>',
    '<link rel="ALTERNATE" href="https://a.example/up"/>',
    '<link rel="alternate" type="text/HTML" href="https://a.example/th"/>',
    '<link rel="alternate" type="application/xhtml+xml" href="https://a.example/xh"/>',
    '<link rel="alternate" type="" href="https://a.example/et"/>',
    '<a:id xmlns:a="http://www.w3.org/2005/Atom">nsid</a:id>',
    '<rss:link xmlns:rss="http://purl.org/rss/1.0/">https://rl/</rss:link>',
    "<link>https://text-link/</link>",
    "<id></id>",
    "<id> </id>",
]


def _document(atom: bool, entries: list[str]) -> bytes:
    tag = "entry" if atom else "item"
    inside = "".join(f"<{tag}>{entry}</{tag}>" for entry in entries)
    if atom:
        return (
            f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"'
            f"{_NAMESPACES}><title>t</title><id>urn:f</id>{inside}</feed>"
        ).encode()
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"{_NAMESPACES}'
        ' xmlns:a="http://www.w3.org/2005/Atom"><channel><title>t</title>'
        f"<link>https://site.example/</link>{inside}</channel></rss>"
    ).encode()


def _identities(body: bytes, fast: bool) -> list[tuple[str, str | None, str, str]]:
    parsed = parse_feed(body, feed_name="f", url="https://f.example/f", fast=fast)
    return [(item.key, item.link, item.title, item.summary) for item in parsed.items]


@pytest.mark.parametrize("placement", ["after", "before", "alone"])
@pytest.mark.parametrize(
    ("atom", "element"),
    [(False, element) for element in RSS_ELEMENTS] + [(True, element) for element in ATOM_ELEMENTS],
)
def test_one_element_of_either_vocabulary_keeps_keys_links_titles_and_summaries(
    atom: bool, element: str, placement: str
) -> None:
    # feedparser-rs read <dc:identifier>, <id>, a:id, isPermaLink="1", rel="ALTERNATE",
    # type="" ... otherwise than feedparser: moving between the parsers reposted items
    common = '<title>T</title><link href="https://a.example/base"/>' if atom else "<title>T</title>"
    if not atom:
        common += "<link>https://a.example/base</link>"
    entry = {"after": common + element, "before": element + common, "alone": element}[placement]
    body = _document(atom, [entry])
    assert _identities(body, fast=True) == _identities(body, fast=False), entry


def test_entries_mixing_both_vocabularies_keep_their_keys_and_links() -> None:
    generator = random.Random(13)
    fast_path = 0
    for _ in range(300):
        atom = generator.random() < 0.5
        vocabulary = ATOM_ELEMENTS if atom else RSS_ELEMENTS
        entries = [
            "".join(generator.sample(vocabulary, generator.randint(1, 6))) for _ in range(generator.randint(1, 2))
        ]
        body = _document(atom, entries)
        fast_path += _fast(body, "https://f.example/f") is not None
        fast = [(key, link) for key, link, _, _ in _identities(body, fast=True)]
        assert fast == [(key, link) for key, link, _, _ in _identities(body, fast=False)], entries
    assert fast_path >= 10  # not vacuous: some of them take the fast path


def test_above_a_thousand_entries_the_fast_parser_is_not_called(calls: list[object]) -> None:
    # feedparser-rs's objects cost about seven times feedparser's memory (2.7 GB for
    # 350,000 items in a 10 MB body): relay reads 500 entries, feedparser reads such a feed
    item = b"<item><title>x</title><link>https://a.example/</link></item>"
    head = b"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>t</title>"
    assert _fast(head + item * 1_000 + b"</channel></rss>") is not None
    assert len(calls) == 1
    body = head + item * 1_001 + b"</channel></rss>"
    assert _fast(body) is None
    assert len(calls) == 1
    assert len(parse_feed(body, feed_name="f", url=URL, fast=True).items) > 0
    assert len(calls) == 1
