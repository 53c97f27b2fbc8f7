"""The fast parser path (pure): feedparser-rs, a Rust feed parser, when it is installed.

Its result is turned into the document relay.parse reads from feedparser (plain dicts with
feedparser's names; only the fields relay.parse reads), with feedparser's own steps where
the two parsers differ: the body is decoded by feedparser's encoding rules and stripped of
its DOCTYPE as feedparser does, links and ids are resolved with feedparser's function,
dates are read by feedparser's date parser, HTML that is not plain goes through
feedparser's resolver and sanitizer, and text gets the last touches feedparser gives it.

A body goes to feedparser instead (read returns None) whenever the two could read it
differently: feedparser would not use its strict XML parser on it (not well-formed for
expat, an encoding it cannot decode), it holds what feedparser-rs does not read as
feedparser does (entities, xml:base, FeedBurner original links, Media RSS descriptions,
XHTML, ...), feedparser-rs reports a problem or a format relay does not read (JSON Feed),
its counts of entries, tags, authors, links or media differ from counts of the tags in
the body, or it emptied a link it could not read. RELAY_PARSER=feedparser turns it off."""

from __future__ import annotations

import contextlib
import html
import importlib.util
import re
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any

import feedparser
import feedparser.datetimes
import feedparser.encodings
import feedparser.html
import feedparser.mixin
import feedparser.sanitizer
import feedparser.urls

# What feedparser-rs does not read, or reads otherwise than feedparser: declared entities,
# a base URL, languages of entries (dc:language), FeedBurner's original links, Media RSS
# beyond content, thumbnails and credits (feedparser reads a media:description as the
# entry's description, a media:title as its title), keywords and subjects (tags), sources,
# XHTML content, enclosures as Atom links, iTunes authors (a second author), and the
# attributes base= and lang= (see _BASE_OR_LANG), which feedparser takes for xml:base and
# xml:lang.
_READ_OTHERWISE = re.compile(
    rb"<!entity|xml:base|origlink|<[\w.-]+:(?:language|keywords|subject|source|group)\b|<source\b"
    rb"|<media:(?!content\b|thumbnail\b|credit\b)|<itunes:author|type\s*=\s*[\"']xhtml|rel\s*=\s*[\"']enclosure",
    re.IGNORECASE,
)
# a base= or lang= attribute, when it is inside a start tag (text may say lang="fr")
_BASE_OR_LANG = re.compile(rb"\s(?:base|lang)\s*=", re.IGNORECASE)
# every match of _READ_OTHERWISE holds one of these
_MARKERS = (
    b"<!entity",
    b"xml:base",
    b"origlink",
    b":language",
    b":keywords",
    b":subject",
    b":source",
    b":group",
    b"<source",
    b"<media:",
    b"<itunes:author",
    b"xhtml",
    b"enclosure",
)
# the start tags the adapter counts, with or without a namespace prefix
_ENTRY_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")
_CATEGORY_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?category[\s/>]")
_AUTHOR_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:author|creator|managingEditor)[\s/>]")
_ENCLOSURE_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?enclosure[\s/>]")
_MEDIA_CONTENT_TAG = re.compile(rb"<media:content[\s/>]")
_MEDIA_THUMBNAIL_TAG = re.compile(rb"<media:thumbnail[\s/>]")
_LANGUAGE_TAG = re.compile(rb"<language[\s/>]")
_LINK_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?link[\s/>]")
_PREFIXED_LINK_TAG = re.compile(rb"<[A-Za-z_][\w.-]*:link[\s/>]")
_EMPTY_HREF = re.compile(rb"\shref\s*=\s*(?:\"\"|'')")
# an Atom title's or summary's start tag, and a type attribute in it
_TEXT_TAGS = {
    name: re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?" + name.encode() + rb"(?=[\s/>])[^<>]*>")
    for name in ("title", "summary")
}
_TYPE_ATTRIBUTE = re.compile(rb"\stype\s*=")
# the date elements of an entry, and those feedparser-rs reads as feedparser does
# (every element's name, the words looked for in Python: a pattern with the words inside
# would go back over a long name once for each, quadratic in a CDATA section)
_ELEMENT_NAME = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?[A-Za-z_][\w.-]*)[\s/>]")
_DATE_WORDS = (b"date", b"updated", b"published", b"modified", b"created", b"issued")
_RSS_DATES = frozenset({b"pubdate", b"expirationdate"})
_ATOM_DATES = frozenset({b"published", b"updated"})
# with their prefixes bound as usual: dc:date read alike, the others left alone by both
_DUBLIN_CORE = re.compile(rb"xmlns:dc\s*=\s*[\"']http://purl\.org/dc/elements/1\.1/[\"']")
_DUBLIN_CORE_DATES = frozenset({b"dc:date", b"dc:created", b"dc:modified"})
_PRISM = re.compile(
    rb"xmlns:prism\s*=\s*[\"'](?:http://prismstandard\.org/namespaces/|http://purl\.org/rss/1\.0/modules/prism/)"
)
_PRISM_DATES = frozenset({b"prism:publicationdate"})
_IMAGE_START = re.compile(rb"<image[\s>]")
# the elements of an entry that relay reads: written twice, the parsers keep different ones
_READ_ELEMENT = re.compile(
    rb"<((?:atom:)?(?:title|link|description|summary|content|guid|id|pubDate|published|updated|created|issued|modified)"
    rb"|content:encoded|dc:date|dcterms:created|dcterms:modified)[\s/>]"
)
_LINK_WITH_TEXT = re.compile(rb"<link(?:\s[^<>]*)?>\s*(?:<!\[CDATA\[\s*)?[^\s<\]]")
_NOT_A_PERMALINK = re.compile(rb"ispermalink\s*=\s*[\"']\s*false", re.IGNORECASE)
# an absolute URL that urllib's split and join give back unchanged: lower-case http(s), a
# host right after "//", RFC 3986 characters, a query that is not empty, no fragment
_PLAIN_ABSOLUTE = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]+)?"
)
_LINK_ENTITY = re.compile(r"&([A-Za-z0-9_]+);")
_CP1252 = str.maketrans(feedparser.html._cp1252)
# relay.parse's MAX_SHORT_FIELD_CHARS and MAX_FIELD_CHARS (not imported: parse imports this)
_MAX_TITLE_CHARS = 2_000
_MAX_TEXT_CHARS = 20_000
_CHEAP_LINE = 4_096  # a first line feedparser's encoding pattern reads quickly, whatever it holds
_MAX_ENTRIES = 1_000_000  # no silent cut: the count checks see every entry
# Markup that feedparser's sanitizer passes through with its text unchanged: tags it keeps,
# written plainly (attributes hold no '<', '>' or reference but &amp;: feedparser writes
# them decoded, and a '<' or '>' decoded inside a tag changes what relay reads as text),
# and closed comments. Other HTML (a bare '<', CDATA, a script) goes through feedparser's
# own sanitizer.
_PLAIN_ELEMENTS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "big",
        "blockquote",
        "br",
        "caption",
        "center",
        "cite",
        "code",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "font",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "time",
        "tr",
        "tt",
        "u",
        "ul",
        "var",
        "article",
        "aside",
        "section",
    }
) & frozenset(feedparser.sanitizer._HTMLSanitizer.acceptable_elements)
_TAG = re.compile(
    r"</?([A-Za-z][A-Za-z0-9]*)"
    r"(?:\s+[^\s\"'<>/=&]+(?:\s*=\s*(?:\"(?:[^\"<>&]|&amp;)*\"|'(?:[^'<>&]|&amp;)*'|(?:[^\s\"'<>=`&]|&amp;)+))?)*\s*/?>"
)
_IMG_TAG = re.compile(r"<img\b[^<>]*>", re.IGNORECASE)
IMAGE_TAGS_READ = 16  # relay.parse reads no further (4 x MAX_IMAGES)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
# The whitelist: an entry takes the fast path only when every element in it, and every
# attribute on them, is one the equality tests show both parsers read alike (relay's
# promise is never a double post: an element read otherwise changes an item's key or link
# when a feed moves from one parser to the other). Names with their exact prefixes, the
# prefixes bound in the feed's head to their usual namespaces; anything else, feedparser.
_NAMESPACES = {
    b"dc": b"http://purl.org/dc/elements/1.1/",
    b"content": b"http://purl.org/rss/1.0/modules/content/",
    b"media": b"http://search.yahoo.com/mrss/",
    b"rdf": b"http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    b"xml": b"http://www.w3.org/XML/1998/namespace",  # bound by XML itself, never declared
}
_ATOM_NAMESPACE = b"http://www.w3.org/2005/Atom"
_RSS_DEFAULT_NAMESPACES = (
    None,
    b"http://purl.org/rss/1.0/",
    b"http://my.netscape.com/rdf/simple/0.9/",
    b"http://backend.userland.com/rss2",
)
_XML_LANG = {b"xml:lang": None}  # any value: the adapter reads languages as feedparser does
_LINK_RELATIONS = frozenset({b"alternate", b"self", b"related", b"via", b"replies"})
_MEDIA_TYPE = re.compile(rb"[a-z]+/[a-z0-9][a-z0-9.+-]*")
_TEXT_TYPES = frozenset({b"text", b"html"})
_MEDIA_THUMBNAIL: dict[bytes, Any] = {b"url": None, b"width": None, b"height": None}
# attributes allowed on an element: name -> None (any value) or a test of the value
_Rule = dict[bytes, Any]
_RSS_ELEMENTS: dict[bytes, _Rule] = {
    b"title": {},
    b"link": {},
    b"description": {},
    b"guid": {b"isPermaLink": frozenset({b"true", b"false"}).__contains__},
    b"pubDate": {},
    b"category": {b"domain": None},
    b"author": {},
    b"comments": {},
    b"enclosure": {b"url": None, b"type": None, b"length": None},
    b"content:encoded": {},
    b"dc:creator": {},
    b"dc:date": {},
    b"media:content": {
        b"url": None,
        b"type": None,
        b"medium": None,
        b"width": None,
        b"height": None,
        b"fileSize": None,
        b"duration": None,
    },
    b"media:thumbnail": _MEDIA_THUMBNAIL,
}
_ATOM_ELEMENTS: dict[bytes, _Rule] = {
    b"id": {},
    b"title": {b"type": _TEXT_TYPES.__contains__, **_XML_LANG},
    b"summary": {b"type": _TEXT_TYPES.__contains__, **_XML_LANG},
    b"content": {b"type": _TEXT_TYPES.__contains__, **_XML_LANG},
    b"link": {
        b"href": None,
        b"rel": _LINK_RELATIONS.__contains__,
        b"type": lambda value: _MEDIA_TYPE.fullmatch(value) is not None,
        b"title": None,
        b"hreflang": None,
        b"length": None,
    },
    b"published": {},
    b"updated": {},
    b"author": {},
    b"category": {b"term": None, b"scheme": None, b"label": None},
    b"media:thumbnail": _MEDIA_THUMBNAIL,
}
_ATOM_AUTHOR_ELEMENTS: dict[bytes, _Rule] = {b"name": {}, b"email": {}, b"uri": {}}
# what the scan skips (none holds an element) and what it reads: every tag, start or end
_NOT_MARKUP = re.compile(rb"<!\[CDATA\[.*?\]\]>|<!--.*?-->|<\?.*?\?>", re.DOTALL)
_ANY_TAG = re.compile(
    rb"<(/?)([A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>"
)
_ATTRIBUTE = re.compile(rb"([A-Za-z_][\w.:-]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_DECLARATION = re.compile(rb"\sxmlns(?::([A-Za-z_][\w.-]*))?\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
# above this many entries (relay reads 500) feedparser reads the feed: feedparser-rs's
# Python objects cost about seven times feedparser's memory (2.7 GB for 350,000 items)
_MAX_FAST_ENTRIES = 1_000


@dataclass(frozen=True)
class _Reading:
    """What the adapter knows of the whole document while it converts an entry."""

    base: str  # the URL feedparser resolves against
    atom: bool
    permalinks: bool  # whether feedparser resolves the entries' ids

    def attribute(self, value: object) -> str:
        """An attribute's value: feedparser-rs gives Atom attributes as written, RSS ones read."""
        return _attribute(value) if self.atom else str(value or "")


class _Otherwise(Exception):
    """This body is read by feedparser."""


class _NotPlain(Exception):
    """HTML that feedparser's sanitizer may change beyond what relay reads as the same."""


def available() -> bool:
    """Whether feedparser-rs is installed (`pip install 'relay[fast]'`)."""
    return importlib.util.find_spec("feedparser_rs") is not None


def read(body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
    """The feedparser-shaped document of body read by feedparser-rs, or None when this
    body must be read by feedparser. headers are those feedparser would get
    (content-location is the base URL, content-type its media type and charset)."""
    try:
        return _read(body, headers)
    except Exception:  # whatever goes wrong here (_Otherwise included), feedparser reads the feed
        return None


def _read(body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
    import feedparser_rs

    if _read_otherwise(body):
        return None  # found before decoding, the cheapest refusal
    if not _declaration_is_cheap(body):
        return None  # feedparser alone pays for it, not twice
    result: dict[str, Any] = {}
    # feedparser's own decoding: the same text, re-encoded as UTF-8, for both parsers
    data = feedparser.encodings.convert_to_utf8(headers, body, result)
    if not result.get("encoding"):
        return None  # feedparser would use its loose parser
    if _read_otherwise(data):
        return None
    _, data, _ = feedparser.sanitizer.replace_doctype(data)
    if _too_many_entries(data):
        return None
    if not _well_formed(data):
        return None  # feedparser's strict parser would fail and its loose parser take over
    limits = feedparser_rs.ParserLimits(
        max_feed_size_bytes=max(len(data) * 2, 1024),
        max_entries=_MAX_ENTRIES,
        max_links_per_feed=_MAX_ENTRIES,
        max_links_per_entry=_MAX_ENTRIES,
        max_authors=_MAX_ENTRIES,
        max_contributors=_MAX_ENTRIES,
        max_tags=_MAX_ENTRIES,
        max_content_blocks=_MAX_ENTRIES,
        max_enclosures=_MAX_ENTRIES,
    )
    # bytes, never str: feedparser-rs fetches a str that looks like a URL. Its sanitizer is
    # off: the HTML it reads is checked to be plain, which feedparser's sanitizer keeps.
    parsed = feedparser_rs.parse_with_limits(
        bytes(data), limits=limits, sanitize_html=False, resolve_relative_uris=False
    )
    version = str(parsed.version or "")
    if parsed.bozo or version not in (
        "rss090",
        "rss091u",
        "rss091n",
        "rss092",
        "rss093",
        "rss094",
        "rss20",
        "rss10",
        "atom10",
    ):
        return None
    entries = parsed.entries
    feed = parsed.feed
    counts = (
        (_ENTRY_TAG, len(entries)),
        (_CATEGORY_TAG, len(feed.tags or ()) + sum(len(entry.tags or ()) for entry in entries)),
        (_AUTHOR_TAG, _authors(feed) + sum(_authors(entry) for entry in entries)),
        (_ENCLOSURE_TAG, sum(len(entry.enclosures or ()) for entry in entries)),
        (_MEDIA_CONTENT_TAG, sum(len(entry.media_content or ()) for entry in entries)),
        (_MEDIA_THUMBNAIL_TAG, sum(len(entry.media_thumbnail or ()) for entry in entries)),
    )
    if len(_LANGUAGE_TAG.findall(data)) > (1 if feed.get("language") else 0):
        raise _Otherwise("<language> beyond the channel's")
    for pattern, count in counts:
        if len(pattern.findall(data)) != count:
            raise _Otherwise(f"{count} where the body has {len(pattern.findall(data))} {pattern.pattern!r}")
    atom = version.startswith("atom")
    if atom:
        if len(_LINK_TAG.findall(data)) != len(feed.links or ()) + sum(len(entry.links or ()) for entry in entries):
            raise _Otherwise("links feedparser-rs did not read")
        empty = sum(1 for entry in [feed, *entries] for link in entry.links or () if not link.href)
        if empty != len(_EMPTY_HREF.findall(data)):
            raise _Otherwise("links feedparser-rs emptied")  # it empties an href it cannot read
    elif _PREFIXED_LINK_TAG.search(data, max(data.find(b"<item"), 0)):
        raise _Otherwise("an Atom link in an RSS item")
    # each entry's part of the body: from its start tag to the next one
    starts = [match.start() for match in _ENTRY_TAG.finditer(data)] + [len(data)]
    parts = [(starts[index], starts[index + 1]) for index in range(len(entries))]
    if not atom:
        # feedparser-rs empties a <link> it cannot read as a URL: such an item's link is
        # empty where its start tag is followed, before the next item, by a link with text
        for index, entry in enumerate(entries):
            if not entry.get("link") and _LINK_WITH_TEXT.search(data, starts[index], starts[index + 1]):
                raise _Otherwise("a link feedparser-rs emptied")
    if feed.authors and any(entry.authors for entry in entries):
        return None  # feedparser-rs hands the feed's author down to entries, feedparser does not
    for entry in entries:
        media = [*(entry.media_content or ()), *(entry.media_thumbnail or ()), *(entry.enclosures or ())]
        if not all(getattr(item, "url", None) or getattr(item, "href", None) for item in media):
            raise _Otherwise("a media address feedparser-rs emptied")
    declared = _declarations(data[: starts[0]])
    if not _usual_default(declared, atom):
        return None
    for start, end in parts:
        if not _entry_vetted(data[start:end], atom, declared):
            raise _Otherwise("an element or attribute not vetted to be read alike")
    reading = _Reading(
        base=_base(headers),
        atom=atom,
        # feedparser resolves an Atom id and an RSS guid that is a permalink, not an rdf:about
        permalinks=atom or (version != "rss10" and not _NOT_A_PERMALINK.search(data)),
    )
    known_dates = _ATOM_DATES if atom else _RSS_DATES
    if not atom and _DUBLIN_CORE.search(data):
        known_dates |= _DUBLIN_CORE_DATES
    if not atom and _PRISM.search(data):
        known_dates |= _PRISM_DATES
    for start, end in parts:
        own = _without_images(data[start:end])  # an image's title and link are its own
        names = [name for name in _READ_ELEMENT.findall(own) if not (atom and name.endswith(b"link"))]
        if len(names) != len(set(names)):
            raise _Otherwise("an element written twice in an entry")
        names_read = (name.lower() for name in _ELEMENT_NAME.findall(own))
        dates = {name for name in names_read if any(word in name for word in _DATE_WORDS)}
        if not dates <= known_dates:
            raise _Otherwise("a date element feedparser-rs does not read")
    converted = [_entry(entry, reading, data[start:end]) for entry, (start, end) in zip(entries, parts, strict=True)]
    return {"version": version, "feed": _feed(feed, data, reading, data[: starts[0]]), "entries": converted}


def _too_many_entries(data: bytes) -> bool:
    """Whether data holds more entry start tags than the fast path reads (counted up to one
    beyond the cap, not to the end)."""
    return any(count > _MAX_FAST_ENTRIES for count, _ in enumerate(_ENTRY_TAG.finditer(data), start=1))


def _declarations(head: bytes) -> dict[bytes | None, list[bytes]]:
    """The namespaces the feed's head declares, by prefix (None: the default), each as often
    as it is declared (text that looks like a declaration only adds to a list, which the
    whitelist then refuses)."""
    declared: dict[bytes | None, list[bytes]] = {}
    for match in _DECLARATION.finditer(head):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        declared.setdefault(match.group(1), []).append(value)
    return declared


def _usual_default(declared: dict[bytes | None, list[bytes]], atom: bool) -> bool:
    """Whether the default namespace is the one the format's elements are read in."""
    default = declared.get(None)
    if atom:
        return default == [_ATOM_NAMESPACE]
    return default is None or (len(default) == 1 and default[0] in _RSS_DEFAULT_NAMESPACES)


def _bound_as_usual(name: bytes, declared: dict[bytes | None, list[bytes]]) -> bool:
    """Whether a prefixed name's prefix is bound, once, to its usual namespace."""
    if b":" not in name:
        return True
    prefix = name.split(b":", 1)[0]
    if prefix == b"xml":
        return True  # bound by XML itself
    usual = _NAMESPACES.get(prefix)
    return usual is not None and declared.get(prefix) == [usual]


def _attributes_vetted(attributes: bytes, rule: _Rule, declared: dict[bytes | None, list[bytes]]) -> bool:
    for attribute in _ATTRIBUTE.finditer(attributes):
        name = attribute.group(1)
        value = attribute.group(2) if attribute.group(2) is not None else attribute.group(3)
        if name not in rule or not _bound_as_usual(name, declared):
            return False
        test = rule[name]
        if test is not None and not test(value):
            return False
    return True


def _entry_vetted(part: bytes, atom: bool, declared: dict[bytes | None, list[bytes]]) -> bool:
    """Whether the entry that starts this part of the body holds only vetted elements and
    attributes (the body is well-formed: every '<' left once CDATA sections, comments and
    processing instructions are gone starts a tag)."""
    text = _NOT_MARKUP.sub(b"", part)
    elements = _ATOM_ELEMENTS if atom else _RSS_ELEMENTS
    entry_name, entry_rule = (b"entry", _XML_LANG) if atom else (b"item", {b"rdf:about": None})
    stack: list[bytes] = []
    cursor = text.find(b"<")
    while cursor != -1:
        tag = _ANY_TAG.match(text, cursor)
        if tag is None:
            return False
        closing, name, attributes, empty = tag.groups()
        if closing:
            if not stack or stack.pop() != name:
                return False
            if not stack:
                return True
        else:
            if not stack:
                rule: _Rule | None = entry_rule if name == entry_name else None
            elif len(stack) == 1:
                rule = elements.get(name)
            elif atom and len(stack) == 2 and stack[1] == b"author":
                rule = _ATOM_AUTHOR_ELEMENTS.get(name)
            else:
                rule = None
            if rule is None or not _bound_as_usual(name, declared):
                return False
            if not _attributes_vetted(attributes, rule, declared):
                return False
            if empty and not stack:
                return True
            if not empty:
                stack.append(name)
        cursor = text.find(b"<", tag.end())
    return False


def _read_otherwise(data: bytes) -> bool:
    """Whether data holds something feedparser-rs does not read as feedparser does. Plain
    substring tests first (fast), the pattern only when one of them finds something."""
    lowered = data.lower()
    if any(marker in lowered for marker in _MARKERS) and _READ_OTHERWISE.search(data) is not None:
        return True
    if b"base" not in lowered and b"lang" not in lowered:
        return False
    # inside a start tag: the last '<' before it comes after the last '>' (each stretch of
    # the body looked at once, so that many candidates cost no more than one scan)
    inside, position = False, 0
    for match in _BASE_OR_LANG.finditer(data):
        opening, closing = data.rfind(b"<", position, match.start()), data.rfind(b">", position, match.start())
        if opening != -1 or closing != -1:
            inside = opening > closing
        if inside:
            return True
        position = match.start()
    return False


def _declaration_is_cheap(body: bytes) -> bool:
    """Whether feedparser's search for the declared encoding (a pattern over the first line,
    `^<\\?.*encoding=['"](.*?)['"].*\\?>`, which the fast path runs too) is quick on body. It
    goes back over the line for each encoding= and each quote after one when the line does
    not end the way it expects: 37 s for a 26 KB line. Quick when the line is short, or has
    no encoding=, or one whose value's closing quote a '?>' follows. A body in UTF-16 or
    UTF-32 is not looked into."""
    if b"\x00" in body[:4]:
        return False
    line = body[: body.find(b"\n")] if b"\n" in body else body
    if len(line) <= _CHEAP_LINE:
        return True
    count = line.count(b"encoding=")
    if count != 1:
        return count == 0
    value = line.find(b"encoding=") + len(b"encoding=")
    if line[value : value + 1] not in (b"'", b'"'):
        return True  # the pattern fails without trying the quotes
    quotes = [index for index in (line.find(b"'", value + 1), line.find(b'"', value + 1)) if index != -1]
    return not quotes or b"?>" in line[min(quotes) + 1 :]


def _without_images(part: bytes) -> bytes:
    """part without its <image>…</image> blocks (one pass: an unclosed one stays)."""
    pieces, cursor = [], 0
    while (image := _IMAGE_START.search(part, cursor)) is not None:
        close = part.find(b"</image>", image.end())
        if close == -1:
            break
        pieces.append(part[cursor : image.start()])
        cursor = close + len(b"</image>")
    pieces.append(part[cursor:])
    return b"".join(pieces)


def _authors(node: Any) -> int:
    """How many authors feedparser-rs read: an RSS <author> is an author, not in the list."""
    return max(len(node.authors or ()), 1 if node.get("author") else 0)


def _well_formed(data: bytes) -> bool:
    """Whether expat, which feedparser's strict parser runs on, reads data without error
    (namespaces on, as feedparser sets them)."""
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError:
        return False
    return True


def _base(headers: dict[str, str]) -> str:
    """The base URL feedparser resolves against: the feed's address, joined to itself as
    feedparser does at every element (which folds "file:///x" into "file://x")."""
    location = str(feedparser.urls.make_safe_absolute_uri(headers.get("content-location", "")) or "")
    return str(feedparser.urls.make_safe_absolute_uri(location, location) or location)


def _text(value: object) -> str:
    """The last touches feedparser gives every element's text: UTF-8 read as Latin-1 is
    read again, and C1 controls become the Windows-1252 characters they stand for."""
    text = str(value or "")
    if text.isascii():
        return text
    if "\ufffd" in text:
        raise _Otherwise("a replacement character")  # what feedparser-rs could not read, maybe
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_CP1252)


def _attribute(value: object) -> str:
    """An attribute's value as an XML parser reports it: feedparser-rs gives it as written,
    with white space unnormalised and references undecoded (the body is well-formed, so
    every '&' starts a reference)."""
    text = str(value or "")
    if "\ufffd" in text:
        raise _Otherwise("a replacement character")
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return html.unescape(text) if "&" in text else text


def _resolve(base: str, uri: str) -> str:
    """uri resolved against base as feedparser resolves it; an absolute http(s) URL made of
    plain characters only, which feedparser's join leaves as it is, skips the join."""
    if _PLAIN_ABSOLUTE.fullmatch(uri):
        return uri
    return str(feedparser.urls._urljoin(base, uri))


def _html(value: str, kind: str, base: str, limit: int, *, exact: bool = False) -> str:
    """HTML as feedparser gives it to relay. Plain markup that relay reads whole, as HTML,
    is read as written (_markup); other markup, or markup relay reads as plain text (exact),
    goes through feedparser's own steps for it, link resolution then its sanitizer, which is
    what it costs in feedparser too."""
    if not exact and ("<" not in value or len(value) <= limit):
        with contextlib.suppress(_NotPlain):
            return _markup(value, base)
    resolved = feedparser.urls.resolve_relative_uris(value, base, "utf-8", kind)
    return str(feedparser.sanitizer._sanitize_html(resolved, "utf-8", kind))


def _markup(value: str, base: str) -> str:
    """Plain HTML as feedparser leaves it for relay (else _NotPlain): its first
    IMAGE_TAGS_READ image tags (where relay looks for images) resolved and sanitized by
    feedparser itself. The other tags' attributes are never read, and their text is the same."""
    cursor = value.find("<")
    while cursor != -1:
        if value.startswith("<!--", cursor):
            # a comment, which both feedparser and relay drop, up to the first "--", which
            # must close it ("-- >" closes it for feedparser's tokenizer, not for relay's)
            close = value.find("--", cursor + 4)
            if close == -1 or not value.startswith("-->", close) or "<img" in value[cursor:close].lower():
                raise _NotPlain
            cursor = value.find("<", close + 3)
            continue
        tag = _TAG.match(value, cursor)
        if tag is None or tag.group(1) is None or tag.group(1).lower() not in _PLAIN_ELEMENTS:
            raise _NotPlain
        cursor = value.find("<", tag.end())
    pieces = []
    cursor = 0
    for count, image in enumerate(_IMG_TAG.finditer(value)):
        if count == IMAGE_TAGS_READ:
            break
        resolved = feedparser.urls.resolve_relative_uris(image.group(0), base, "utf-8", "text/html")
        sanitized = str(feedparser.sanitizer._sanitize_html(resolved, "utf-8", "text/html"))
        if not sanitized.startswith("<img"):
            raise _NotPlain
        pieces += [value[cursor : image.start()], sanitized]
        cursor = image.end()
    return "".join(pieces) + value[cursor:]


def _typed(part: bytes, name: str) -> bool | None:
    """Whether the Atom element name in this part of the body declares its type; None when
    the part does not hold exactly one such start tag."""
    tags = _TEXT_TAGS[name].findall(part)
    return _TYPE_ATTRIBUTE.search(tags[0]) is not None if len(tags) == 1 else None


def _detail(
    detail: Any, reading: _Reading, *, title: bool = False, typed: bool | None = True, exact: bool = False
) -> tuple[str, dict[str, Any]]:
    """A text construct's value and detail as feedparser gives them. typed: whether its Atom
    element declares its type (feedparser-rs says HTML for one that does not, feedparser
    plain text, as Atom says); None when that is not known."""
    if detail is None:
        return "", {}
    value = str(detail.value or "")
    kind = str(detail.type or "text/plain")
    rss_title = title and not reading.atom
    if kind == "text/html" and reading.atom and not typed:
        if typed is None and ("<" in value or "&" in value):
            raise _Otherwise("an Atom text whose type is not known")
        kind = "text/plain"  # (typed None: no tag, or a feed title beside an image's title)
    if rss_title:
        # feedparser reads an RSS title as plain text unless it looks like HTML
        # (without a '<' or an '&' it cannot)
        looks_like_html = ("<" in value or "&" in value) and feedparser.mixin._FeedParserMixin.looks_like_html(value)
        kind = "text/html" if looks_like_html else "text/plain"
    if kind in _HTML_TYPES:
        # beyond the length relay reads, it cuts the HTML as feedparser's sanitizer wrote it
        value = _html(value, kind, reading.base, _MAX_TITLE_CHARS if title else _MAX_TEXT_CHARS, exact=exact)
    elif kind != "text/plain":
        raise _Otherwise
    value = _text(value)
    return value, {"type": kind, "language": _language(detail.language), "value": value, "base": reading.base}


def _language(tag: str | None) -> str | None:
    """An xml:lang as feedparser hands it to text: en_US is en-US."""
    return tag.replace("_", "-") if tag else tag


def _feed(feed: Any, data: bytes, reading: _Reading, head: bytes) -> dict[str, Any]:
    language = _text(feed.get("language"))
    if "_" in language and b"xml:lang" in data:
        # feedparser writes en_US as en-US when it comes from xml:lang, not from <language>
        raise _Otherwise("a language tag with an underscore")
    title, detail = _detail(feed.get("title_detail"), reading, title=True, typed=_typed(head, "title"))
    if reading.atom:
        # as for an entry: the last alternate link to a page, else the id
        links = [_link(item, reading) for item in feed.get("links") or []]
        alternates = [item["href"] for item in links if item["rel"] == "alternate" and item["type"] in _HTML_TYPES]
        identity = _text(feed.get("id")).strip()
        link = alternates[-1] if alternates else _resolve(reading.base, identity) if identity else ""
    else:
        link = _text(feed.get("link")).strip()
        link = _LINK_ENTITY.sub(r"&\g<1>", _resolve(reading.base, link)) if link else ""
    return {
        "title": title,
        "title_detail": detail,
        "link": link,
        "language": language or None,
    }


def _author(entry: Any, atom: bool) -> str:
    """The author as feedparser writes it: an Atom author is "name (email)", or either."""
    detail = entry.get("author_detail")
    if not atom or detail is None:
        return _text(entry.get("author"))
    name, email = _text(detail.name).strip(), _text(detail.email).strip()
    return f"{name} ({email})" if name and email else name or email


def _tags(categories: list[Any], atom: bool) -> list[dict[str, Any]]:
    """The tags as feedparser builds them, category by category: the start tag's term,
    scheme (or RSS domain) and label are added unless all empty or already there; then the
    element's text (RSS) names the last tag if it has no term, else is added unless there."""
    tags: list[dict[str, Any]] = []

    def add(term: str | None, scheme: str | None, label: str | None) -> None:
        value = {"term": term, "scheme": scheme, "label": label}
        if (term or scheme or label) and value not in tags:
            tags.append(value)

    for category in categories:
        if atom:
            add(
                _attribute(category.term) or None,
                _attribute(category.scheme) or None,
                _attribute(category.label) or None,
            )
            continue
        add(None, _text(category.scheme) or None, None)
        text = _text(category.term).strip()
        if text and tags and not tags[-1]["term"]:
            tags[-1]["term"] = text
        elif text:
            add(text, None, None)
    return tags


def _link(link: Any, reading: _Reading) -> dict[str, Any]:
    """An Atom link as feedparser gives it: an href resolved even when empty."""
    rel = reading.attribute(link.rel) or "alternate"
    kind = reading.attribute(link.type) or ("application/atom+xml" if rel == "self" else "text/html")
    return {
        "rel": rel,
        "type": feedparser.mixin._FeedParserMixin.map_content_type(kind),
        "href": _resolve(reading.base, reading.attribute(link.href)),
    }


def _dates(entry: Any) -> dict[str, Any]:
    """Dates read by feedparser's date parser, up to the first that reads: relay reads
    published, else updated, else created."""
    dates: dict[str, Any] = {}
    for name in ("published", "updated", "created"):
        raw = entry.get(name)
        dates[f"{name}_parsed"] = parsed = feedparser.datetimes._parse_date(str(raw)) if raw else None
        if parsed:
            break
    return dates


def _entry(entry: Any, reading: _Reading, part: bytes) -> dict[str, Any]:
    base, atom = reading.base, reading.atom
    identity = _text(entry.get("id")).strip()
    if identity:
        resolved = _resolve(base, identity)
        if resolved != identity and not reading.permalinks:
            raise _Otherwise("an identifier feedparser may leave unresolved")
        identity = resolved
    links = [_link(item, reading) for item in entry.get("links") or []]
    if atom:
        # feedparser's entry link: the last alternate link to an HTML page
        alternates = [item["href"] for item in links if item["rel"] == "alternate" and item["type"] in _HTML_TYPES]
        # feedparser reads an Atom id as a permalink guid: without such a link (even one
        # whose address resolves to nothing), the id is the link
        link = alternates[-1] if alternates else identity
    else:
        # feedparser's repair of query strings in an RSS <link>
        link = _text(entry.get("link")).strip()
        link = _LINK_ENTITY.sub(r"&\g<1>", link.replace("&amp;", "&"))
        link = _resolve(base, link) if link else ""
        links = [{"rel": "alternate", "type": "text/html", **({"href": link} if link else {})}]
    title, title_detail = _detail(entry.get("title_detail"), reading, title=True, typed=_typed(part, "title"))
    contents = entry.get("content") or []
    if atom and not _TEXT_TAGS["summary"].search(part):
        # feedparser copies an Atom entry's first content to its summary, without a detail
        summary, summary_detail = (_detail(contents[0], reading)[0] if contents else ""), None
    else:
        summary, summary_detail = _detail(entry.get("summary_detail"), reading, typed=_typed(part, "summary"))
    # relay reads the first content's language, and its text only when there is no summary:
    # the others, and the text of a content it does not read, are not worth converting. It
    # reads that text as plain when the (empty) summary is plain: then it must be exact.
    exact = (summary_detail or {}).get("type") == "text/plain"
    content = [
        _detail(item, reading, exact=exact)[1] if not summary else {"language": _language(item.language), "value": ""}
        for item in contents[:1]
    ]
    document: dict[str, Any] = {
        "id": identity,
        "link": link,
        "links": links,
        "title": title,
        "title_detail": title_detail,
        "summary": summary,
        "summary_detail": summary_detail,
        "content": content,
        **_dates(entry),
        "tags": _tags(entry.get("tags") or [], atom),
        "author": _author(entry, atom),
        # as in feedparser: media and enclosure addresses are attributes it leaves unresolved
        "media_content": [
            {
                "url": reading.attribute(item.url),
                "type": reading.attribute(item.type),
                "medium": reading.attribute(item.medium),
            }
            for item in entry.get("media_content") or []
        ],
        "media_thumbnail": [{"url": reading.attribute(item.url)} for item in entry.get("media_thumbnail") or []],
        "enclosures": [
            {"href": reading.attribute(item.href), "type": reading.attribute(item.type)}
            for item in entry.get("enclosures") or []
        ],
    }
    return document
