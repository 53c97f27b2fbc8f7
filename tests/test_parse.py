from pathlib import Path

import pytest

from relay.errors import ParseError
from relay.parse import parse_feed
from tests.support.feeds import rss

FEEDS = Path(__file__).parent / "feeds"


def parse(body: bytes, url: str = "https://example.org/feed", content_type: str = "application/rss+xml"):  # type: ignore[no-untyped-def]
    return parse_feed(body, feed_name="f", url=url, content_type=content_type)


def test_identity_prefers_id_then_link_then_hash() -> None:
    parsed = parse(
        rss(
            [
                {"title": "a", "guid": "  id-1 ", "link": "https://example.org/a"},
                {"title": "b", "guid": "   ", "link": "https://example.org/b"},
                {"title": "c", "description": "no link, no id"},
            ]
        )
    )
    keys = [item.key for item in parsed.items]
    assert keys[0].startswith("id:") and keys[0].endswith("id-1")
    assert keys[1] == "link:https://example.org/b"  # a blank guid is not an id
    assert keys[2].startswith("sha256:")
    assert parsed.items[2].skip_reason == "no link"


def test_duplicate_guids_do_not_hide_the_second_item() -> None:
    parsed = parse(
        rss(
            [
                {"title": "a", "guid": "same", "link": "https://example.org/a"},
                {"title": "b", "guid": "same", "link": "https://example.org/b"},
            ]
        )
    )
    assert len({item.key for item in parsed.items}) == 2


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "data:text/html,<b>x</b>", "vbscript:msgbox", "file:///etc/passwd", "ftp://example.org/x"],
)
def test_non_http_links_are_skipped_with_reason(link: str) -> None:
    [item] = parse(rss([{"title": "x", "link": link, "guid": "1"}])).items
    assert item.link is None
    assert item.skip_reason is not None and "not http(s)" in item.skip_reason


def test_relative_links_resolve_against_the_feed_url() -> None:
    body = (FEEDS / "links__rss-relative-urls-relative-site-link.xml").read_bytes()
    parsed = parse(body, url="https://blog.example.net/feed/")
    assert all(item.link and item.link.startswith("http") for item in parsed.items)


def test_feedburner_origlink_is_preferred() -> None:
    parsed = parse((FEEDS / "links__atom-feedburner-origlink.xml").read_bytes(), content_type="application/atom+xml")
    assert parsed.items
    assert all("feedproxy" not in (item.link or "") for item in parsed.items)


def test_titles_lose_html_and_entities() -> None:
    parsed = parse((FEEDS / "titles__rss-html-entities.xml").read_bytes())
    assert parsed.items[0].title == "C’est l’histoire d’une conf-call Teams"


def test_html_page_is_not_a_feed() -> None:
    with pytest.raises(ParseError, match="HTML page"):
        parse(
            b"<!DOCTYPE html><html><head><title>Accueil</title></head><body>hi</body></html>", content_type="text/html"
        )


def test_empty_document_is_not_a_feed() -> None:
    with pytest.raises(ParseError, match="not a feed"):
        parse((FEEDS / "not_a_feed__empty-document.xml").read_bytes())


@pytest.mark.parametrize("references", [10_000, 3])  # 100 MB, over expat's amplification limit; 30 KB, under it
def test_large_entity_referenced_many_times_is_not_expanded(references: int) -> None:
    entity = "A" * 10_000
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "{entity}">]>'
        f"<rss version='2.0'><channel><title>t</title><item><title>{'&big;' * references}</title>"
        "<link>https://example.org/a</link><guid>1</guid></item></channel></rss>"
    ).encode()
    assert len(body) < 200_000
    try:
        titles = [item.title for item in parse(body).items]
    except ParseError:
        titles = []
    assert not any("A" * 100 in title for title in titles)  # its time and memory: bench/parse_hostile.py


def test_media_image_and_alt() -> None:
    parsed = parse((FEEDS / "media__rss-media-content-image.xml").read_bytes())
    item = parsed.items[0]
    assert item.image and item.image.startswith("https://")


def test_links_are_normalised_before_the_trackers_go() -> None:
    [idn, trailing] = parse(
        rss(
            [
                {"title": "a", "guid": "1", "link": " https://Bücher.Example/été?utm_source=rss&p=2 "},
                {"title": "b", "guid": "2", "link": "https://example.org/?p=4.&utm_medium=feed"},
            ]
        )
    ).items
    assert idn.link == "https://xn--bcher-kva.example/%C3%A9t%C3%A9?p=2"
    assert idn.canonical_url == "bücher.example/été?p=2" or idn.canonical_url
    # without the tracker the '.' would end the link, and a post would cut it off
    assert trailing.link == "https://example.org/?p=4%2E"


def test_a_link_that_cannot_be_normalised_is_skipped_with_a_one_line_reason() -> None:
    attack = "https://host.example/\n@someone@instance.example … https://spam.example #crypto"
    [smuggler, disguised] = parse(
        rss(
            [
                {"title": "a", "guid": "1", "link": attack},
                {"title": "b", "guid": "2", "link": "https://trusted.org@evil.example/" + "x" * 100},
            ]
        )
    ).items
    assert smuggler.link is None and disguised.link is None
    assert (
        smuggler.skip_reason
        == "link contains a control character (U+000A): 'https://host.example/\\n@someone@instance.…'"
    )
    assert disguised.skip_reason is not None
    assert disguised.skip_reason.startswith("user name or password in the link (it disguises the host): ")
    assert "\n" not in disguised.skip_reason and len(disguised.skip_reason) < 150


def test_an_image_url_that_cannot_be_normalised_is_ignored() -> None:
    body = (
        "<?xml version='1.0'?><rss version='2.0' xmlns:media='http://search.yahoo.com/mrss/'><channel><title>t</title>"
        "<item><title>a</title><link>https://example.org/a</link><guid>1</guid>"
        "<media:content url='https://trusted.org@evil.example/i.png' type='image/png'/>"
        "<media:thumbnail url='https://Bücher.example/vignette é.png'/></item>"
        "<item><title>b</title><link>https://example.org/b</link><guid>2</guid>"
        "<description>&lt;img src='javascript:alert(1)'&gt;</description></item>"
        "</channel></rss>"
    ).encode()
    first, second = parse(body).items
    assert first.image == "https://xn--bcher-kva.example/vignette%20%C3%A9.png"
    assert second.image is None and second.link == "https://example.org/b"


@pytest.mark.parametrize(
    "declaration",
    [
        '<!ENTITY big "{entity}">',
        "<!entity big '{entity}'>",
        '<!ENTITY big "{entity}" \'>',  # an unbalanced quote: feedparser still stops at '>'
        '<!EnTiTy big "{entity}>',
    ],
)
def test_every_entity_declaration_is_removed(declaration: str) -> None:
    entity = "A" * 10_000
    body = (
        # on a line of its own, where feedparser's loose parser looks for declarations
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n{declaration.format(entity=entity)}]>'
        '<rss version="2.0"><channel><title>t</title>'
        f"<item><title>x {'&big;' * 1_000}</title><link>https://example.org/e</link><guid>e</guid></item>"
        "</channel></rss>"
    ).encode()
    parsed = parse(body)
    assert all("A" * 100 not in item.title for item in parsed.items)


def test_an_entity_keyword_without_an_end_drops_the_rest_of_the_body() -> None:
    body = rss([{"title": "kept", "link": "https://example.org/k", "guid": "k"}]) + b"<!-- <!ENTITY <!ENTITY x"
    assert [item.title for item in parse(body).items] == ["kept"]


def test_removing_a_declaration_cannot_glue_a_new_keyword() -> None:
    from relay.parse import defuse_entities

    defused = defuse_entities(b"<!ENT<!ENTITY a>ITY b 'x'>")
    assert b"<!entity" not in defused.lower()


def test_a_comment_prefixed_html_page_is_recognised() -> None:
    with pytest.raises(ParseError, match="an HTML page"):
        parse(b"<!-- a --> <!-- b -->\n<!DOCTYPE html><html><body>Accueil</body></html>", content_type="text/html")


@pytest.mark.parametrize("fast", [True, False])
def test_entries_the_state_knows_are_left_out_without_cleaning_their_text(
    monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """Issue 13: an entry already seen is only skipped, so only its identity is worked out;
    the others come out exactly as without `known`, a repeated guid included."""
    import relay.parse
    from relay.dedupe import fingerprint

    body = rss(
        [
            {"title": "new <b>one</b>", "link": "https://example.org/new", "guid": "new"},
            {"title": "old by guid", "link": "https://example.org/old", "guid": "old"},
            {"title": "old by link", "link": "https://example.org/by-link?utm_source=x"},
            {"title": "repeated guid", "link": "https://example.org/again", "guid": "old"},
            {"title": "no identity but its text"},
        ]
    )
    whole = parse_feed(body, feed_name="f", url="https://example.org/feed", fast=fast)
    keys = [item.key for item in whole.items]
    assert keys[2] == "link:https://example.org/by-link" and len(set(keys)) == 5
    known = frozenset(fingerprint(key) for key in keys[1:3])
    cleaned: list[str] = []
    clean = relay.parse.clean_text

    def counted(text: str) -> str:
        cleaned.append(text)
        return clean(text)

    monkeypatch.setattr(relay.parse, "clean_text", counted)
    some = parse_feed(body, feed_name="f", url="https://example.org/feed", fast=fast, known=known)
    assert some.items == tuple(item for item in whole.items if item.key not in keys[1:3])
    assert some.entries == whole.entries == 5 and some.warnings == whole.warnings
    assert not any("old by" in text for text in cleaned)
    assert any("repeated guid" in text for text in cleaned)


def test_entry_key_is_the_identity_entry_to_item_gives_over_the_corpus() -> None:
    """A known entry is recognised by entry_key alone: over every real feed of the corpus (and
    both readings of it), it must be the key the whole item gets."""
    import feedparser

    from relay.parse import entry_key, entry_to_item

    corpus = Path(__file__).parent / "feeds" / "corpus"
    compared = 0
    for path in sorted(corpus.iterdir()):
        if path.suffix not in (".xml", ".rss", ".atom", ".rdf"):
            continue
        document = feedparser.parse(path.read_bytes(), response_headers={"content-location": "https://example.org/"})
        for entry in document.get("entries", [])[:50]:
            assert entry_key(entry) == entry_to_item(entry, "corpus").key or not entry_key(entry), path.name
            compared += 1
    assert compared > 500
