"""The Bluesky link card's OpenGraph reading (relay.fetch.open_graph) against a
hostile article page served from loopback: only the page's first 64 KB up to </head> is
read, each value is cut before it is cleaned, and HTML that breaks the parser leaves the card
to the item instead of failing the post. (The whole post through the reference PDS:
tests/test_bluesky.py.)"""

from __future__ import annotations

from relay.fetch import OPEN_GRAPH_MAX_BYTES, OPEN_GRAPH_MAX_CHARS, open_graph
from tests.support.feedserver import FeedServer, Response


def page(feed_server: FeedServer, path: str, html: str) -> str:
    body = html.encode()
    return feed_server.add(path, lambda r: Response(200, body, {"Content-Type": "text/html; charset=utf-8"}))


def test_a_huge_og_value_is_cut_before_it_is_cleaned(feed_server: FeedServer) -> None:
    url = page(
        feed_server,
        "/long",
        '<html><head><meta property="og:title" content="' + "mot " * 10_000 + '"></head></html>',
    )
    found, why = open_graph(url, allow_private=True)
    assert why == ""
    assert found["og:title"].startswith("mot mot")
    assert len(found["og:title"]) <= OPEN_GRAPH_MAX_CHARS


def test_escaped_markup_repeated_in_a_value_is_read_quickly_and_safely(feed_server: FeedServer) -> None:
    """The attacker's page: og:description holding '&lt;a ' 40,000 times (240 KB)."""
    url = page(
        feed_server,
        "/tags",
        '<html><head><meta property="og:title" content="Titre">'
        '<meta property="og:description" content="' + "&lt;a " * 40_000 + '"></head></html>',
    )
    found, why = open_graph(url, allow_private=True)
    assert why == ""
    assert found.get("og:title") == "Titre"
    assert len(found.get("og:description", "")) <= OPEN_GRAPH_MAX_CHARS


def test_only_the_head_within_the_first_64_kb_is_read(feed_server: FeedServer) -> None:
    late = page(
        feed_server,
        "/late",
        "<html><head><!-- "
        + "x" * OPEN_GRAPH_MAX_BYTES
        + ' --><meta property="og:title" content="Late"></head></html>',
    )
    assert open_graph(late, allow_private=True) == ({}, "")
    body = page(
        feed_server,
        "/body",
        '<html><head><meta property="og:title" content="Head"></head>'
        '<body><meta property="og:description" content="From the body"></body></html>',
    )
    assert open_graph(body, allow_private=True) == ({"og:title": "Head"}, "")


def test_html_that_breaks_the_parser_gives_no_open_graph_and_a_reason(feed_server: FeedServer) -> None:
    """html.parser raises AssertionError on an unknown marked section ('<![foo[')."""
    url = page(
        feed_server,
        "/marked",
        '<html><head><meta property="og:title" content="Titre"><![foo[ x ]]></head></html>',
    )
    found, why = open_graph(url, allow_private=True)
    assert found == {}
    assert why == "the page's HTML could not be read: AssertionError"


def test_markup_inside_a_value_never_escapes(feed_server: FeedServer) -> None:
    """The same section, escaped inside an og: value, reaches the text cleaner."""
    url = page(
        feed_server,
        "/marked-value",
        '<html><head><meta property="og:title" content="Titre"><meta property="og:description" content="&lt;![foo[ x">'
        "</head></html>",
    )
    found, why = open_graph(url, allow_private=True)
    assert (found, why) == ({}, "the page's HTML could not be read: AssertionError") or found["og:title"] == "Titre"
