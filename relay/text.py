"""Counting and cleaning text (pure): graphemes, the Mastodon length rule, Bluesky byte
offsets, HTML to text, mention defusing. No I/O, no clock."""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import regex

ELLIPSIS = "…"
MASTODON_URL_LENGTH = 23

_GRAPHEME = regex.compile(r"\X")
# Indic viramas (Indic_Conjunct_Break=Linker) and a consonant joined to one by GB9c
_LINKER = regex.compile(r"[\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D]")
# A character that can be part of one grapheme cluster with the character before or after it
# (UAX #29: CR LF, Extend and ZWJ (emoji modifiers and sequences, combining marks, viramas),
# spacing marks, regional indicators, prepended concatenation marks, Hangul jamo and
# syllables). Text without any is one cluster per code point.
_JOINING_CLASS = (
    r"\r\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=SpacingMark}"
    r"\p{Grapheme_Cluster_Break=Regional_Indicator}\p{Grapheme_Cluster_Break=Prepend}\p{Grapheme_Cluster_Break=L}"
    r"\p{Grapheme_Cluster_Break=V}\p{Grapheme_Cluster_Break=T}\p{Grapheme_Cluster_Break=LV}"
    r"\p{Grapheme_Cluster_Break=LVT}"
)
_JOINS = regex.compile(f"[{_JOINING_CLASS}]")
# Blocks without a single joining character (test_text checks them against the regex
# module's data): Latin, Greek, Cyrillic, punctuation, symbols, CJK, fullwidth forms and
# emoji other than flags and skin tones. A plain character class finds the first character
# outside them twenty times faster than the property lookup above, so most text is never
# looked at by that.
ALONE_BLOCKS = (
    "\x00-\x0c\x0e-\u02ff\u0370-\u0482\u048a-\u0590\u1e00-\u200b\u200e-\u20cf\u20f1-\u2cee\u2e00-\u3029"
    "\u309b-\ua66e\ue000-\ufb1d\ufe30-\uff9d\U0001e94b-\U0001f1e5\U0001f200-\U0001f3fa\U0001f400-\U000e001f"
)
_MAYBE_JOINS = re.compile(f"[^{ALONE_BLOCKS}]")
_ZONE = regex.compile(f"(?s).?(?:[{_JOINING_CLASS}]+.?)+")
_UNCOUNTABLE = regex.compile(r"[\p{Grapheme_Cluster_Break=Prepend}\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D]")
_CONJUNCT = regex.compile(
    r"[\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D][\p{Mn}\p{Mc}\u200D]*(?=[\u0900-\u0D7F&&\p{Lo}])", regex.V1
)
# Control characters (keep \n and \t, folded later), bidi embeddings/overrides/isolates,
# zero-width characters and other invisible format characters that feeds use to hide text.
# The joiners (U+200C, U+200D) and tag characters are not here: they are removed only where
# they join nothing (see _JOINER and _TAG).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
# Scripts in which ZWJ/ZWNJ between two letters change how they are written: the joining
# scripts (Persian "می‌خواهم" needs its ZWNJ) and the Brahmic ones (conjuncts, half forms).
_JOINING_SCRIPTS = [
    "Arabic",
    "Syriac",
    "Nko",
    "Mongolian",
    "Mandaic",
    "Manichaean",
    "Psalter_Pahlavi",
    "Hanifi_Rohingya",
    "Adlam",
    "Sogdian",
    "Phags_Pa",
    "Devanagari",
    "Bengali",
    "Gurmukhi",
    "Gujarati",
    "Oriya",
    "Tamil",
    "Telugu",
    "Kannada",
    "Malayalam",
    "Sinhala",
    "Tibetan",
    "Myanmar",
    "Khmer",
    "Tai_Tham",
    "Balinese",
    "Javanese",
    "Sundanese",
    "Grantha",
    "Brahmi",
]
_LETTER_OF = "[[\\p{{L}}\\p{{M}}]&&\\p{{scx={}}}]"
# A joiner is kept inside an emoji ZWJ sequence (👩‍👩‍👧‍👦, 🏳️‍🌈, 👩🏽‍💻) and between two
# letters of one joining script; anywhere else ("ad\u200dmin", before an '@') it only hides
# something and is removed.
_JOINER = regex.compile(
    "(?P<keep>(?<=\\p{Extended_Pictographic}[\\p{Emoji_Modifier}\\uFE0F]?)\u200d(?=\\p{Extended_Pictographic})"
    + "".join(
        f"|(?<={_LETTER_OF.format(script)})[\u200c\u200d](?={_LETTER_OF.format(script)})" for script in _JOINING_SCRIPTS
    )
    + ")|[\u200c\u200d]",
    regex.V1,
)
# Tag characters spell invisible ASCII; they are kept only in a flag tag sequence (🏴󠁧󠁢󠁳󠁣󠁴󠁿).
# (A sequence is matched forwards, not with a variable-length lookbehind: that looks back
# over the whole run of tag characters at each one, quadratic in the run.)
_TAG = regex.compile("(?P<keep>\U0001f3f4[\U000e0020-\U000e007e]*[\U000e0000-\U000e007f]?)|[\U000e0000-\U000e007f]")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
# Mastodon starts a mention at an '@' not preceded by '=', '/' or a word character, where a
# word character is Ruby's [[:word:]]: letters, marks, decimal digits and connector
# punctuation. Python's \w is wider (superscripts, vulgar fractions, ZWJ), so only an '@'
# after one of those four classes, '=' or '/' is left alone (e-mail addresses, URLs); every
# other '@' followed by anything visible is defused, whatever comes after it.
_MENTION = regex.compile(r"(?<![=/\p{L}\p{M}\p{Nd}\p{Pc}])@(?=\S)")
_TAG_START = re.compile("[\U000e0000-\U000e007f]")
# A URL as Mastodon and Bluesky clients see it: scheme, then everything up to white space,
# minus trailing punctuation that usually closes the sentence.
URL_PATTERN = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}»…"

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "figure",
        "figcaption",
        "pre",
        "hr",
        "dd",
        "dt",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
_CLOSING_TAG = {name: re.compile(rf"</{name}(?![^\t\n\r\f />])", re.IGNORECASE) for name in _SKIP_TAGS}
# After a '<': '/' and a name (end tag), a name (start tag), or '!'/'?' (declarations and
# processing instructions, group 1 is None). Names as html.parser reads them.
_TAG_NAME = re.compile(r"(?:(/?)([a-zA-Z][^\t\n\r\f />\x00]*)|[!?])")
# One attribute inside a tag: a name, then optionally '=' and a quoted or bare value. Each
# run stops at a character the next part needs, so a search over a tag is linear.
_ATTRIBUTE = re.compile(r"""([^\s/>"'=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_TAG_END = re.compile("[>\"']")
_ENTITY_REFERENCE = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)


def graphemes(text: str) -> list[str]:
    return _GRAPHEME.findall(text)


def grapheme_length(text: str) -> int:
    """Grapheme clusters, counted as Mastodon counts them. The regex module follows Unicode
    15.1+, where an Indic virama joins the next consonant into one cluster (rule GB9c);
    Mastodon (Ruby) and Mastodon.py do not, so each such join counts once more: relay may
    count an Indic post a little long, never too short for the instance's limit.

    Only the zones around characters that can join a neighbour are matched with \\X (slow:
    about 0.15 µs a character); every other character is a cluster of its own."""
    end = len(text)
    length = end
    position = 0
    while (joining := _next_joining(text, position, end)) is not None:
        zone = _zone_at(text, max(joining.start() - 1, position))
        length += _zone_length(zone.group()) - len(zone.group())
        position = zone.end()
    return length


def _next_joining(text: str, start: int, end: int) -> Any:
    """The first joining character in text[start:end], as a match; None if there is none."""
    maybe = _MAYBE_JOINS.search(text, start, end)
    return None if maybe is None else _JOINS.search(text, maybe.start(), end)


def joins_neighbours(character: str) -> bool:
    """Whether a character may be in one grapheme cluster with the one before or after it."""
    return _JOINS.match(character) is not None


def _zone_length(text: str) -> int:
    clusters = _GRAPHEME.findall(text)
    if not _LINKER.search(text):
        return len(clusters)
    return len(clusters) + sum(len(_CONJUNCT.findall(cluster)) for cluster in clusters)


def _zone_at(text: str, start: int) -> Any:
    """The zone that starts at start: the character there, then runs of joining characters
    each with the one character after it. Its ends are cluster boundaries: the characters
    just outside are not joining ones, and two such characters never form one cluster."""
    zone = _ZONE.match(text, start)
    assert zone is not None  # a joining character is at start or start + 1
    return zone


def cluster_end(text: str, count: int) -> int:
    """Where (a code point offset) the first `count` grapheme clusters of text end; the
    text's length when it has no more than `count`. Looks at the start of the text only."""
    if count <= 0:
        return 0
    length = len(text)
    position, left = 0, count
    while left > 0 and position < length:
        # a character that could join the left-th cluster to its neighbours, up to and
        # including the one just after it
        joining = _next_joining(text, position, position + left + 1)
        if joining is None:
            return min(position + left, length)
        zone_start: int = max(joining.start() - 1, position)
        left -= zone_start - position
        zone = _zone_at(text, zone_start)
        clusters: list[str] = _GRAPHEME.findall(zone.group())
        if len(clusters) >= left:
            return zone_start + sum(map(len, clusters[:left]))
        left -= len(clusters)
        position = zone.end()
    return length


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def find_urls(text: str) -> list[tuple[int, int]]:
    """Spans (code point offsets) of the http(s) URLs in text, trailing punctuation excluded."""
    spans = []
    for match in URL_PATTERN.finditer(text):
        start, end = match.span()
        while end > start and text[end - 1] in _URL_TRAILING:
            # keep a closing bracket that has its opening one inside the URL (Wikipedia links)
            if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
                break
            end -= 1
        if end - start > len("https://"):
            spans.append((start, end))
    return spans


def mastodon_length(text: str, spoiler_text: str = "") -> int:
    """Length as Mastodon counts it: grapheme clusters, every URL as 23, plus the warning."""
    parts = []
    cursor = 0
    for start, end in find_urls(text):
        parts.append(text[cursor:start])
        parts.append("x" * MASTODON_URL_LENGTH)
        cursor = end
    parts.append(text[cursor:])
    length = grapheme_length("".join(parts)) + grapheme_length(spoiler_text)
    # Mastodon counts the URLs of a few other schemes as 23 too (its twitter-text rules):
    # a short one counts more than it shows, a long one is counted whole (never too little)
    if "://" in text:
        length += sum(max(0, MASTODON_URL_LENGTH - len(m.group())) for m in _OTHER_SCHEME_URL.finditer(text))
    return length


_OTHER_SCHEME_URL = re.compile(r"(?<![\w.+-])(?:dat|dweb|ipfs|ipns|ssb|gopher|gemini)://\S+", re.IGNORECASE)


def html_to_text(value: str) -> str:
    """Strip tags and decode entities. Tolerates broken HTML and doubly escaped entities.

    A small tokenizer rather than html.parser: html.parser re-scans an unterminated start
    tag from every '<' when it is closed, so "<a <a <a …" in a feed costs quadratic time.
    Here every character is looked at a bounded number of times: a '<' starts a tag only if
    a '>' comes before the next '<'; anything else is literal text."""
    if "<" not in value and "&" not in value:
        return value
    parts: list[str] = []
    text: list[str] = []  # literal text not yet decoded

    def flush() -> None:
        if text:
            parts.append(html.unescape("".join(text)))
            text.clear()

    length = len(value)
    cursor = 0
    while cursor < length:
        start = value.find("<", cursor)
        if start == -1:
            text.append(value[cursor:])
            break
        text.append(value[cursor:start])
        if value.startswith("<!--", start):
            close = value.find("-->", start + 4)
            if close == -1:
                break  # an unclosed comment hides the rest
            cursor = close + 3
            continue
        following = value.find("<", start + 1)
        stop = length if following == -1 else following
        match = _TAG_NAME.match(value, start + 1, stop)
        close = -1 if match is None else _tag_end(value, match.end(), stop)
        if close == -1 or match is None:
            text.append("<")  # not a tag: "a < b", "<3", "<a <a <a"
            cursor = start + 1
            continue
        cursor = close + 1
        if match.group(1) is None:
            continue  # <!DOCTYPE …>, <?xml …?>, <![CDATA[…]]>: nothing to show
        name = match.group(2).lower()
        is_end = bool(match.group(1))
        if name in _BLOCK_TAGS:
            flush()
            parts.append("\n")
        elif is_end:
            continue
        elif name in _SKIP_TAGS and value[close - 1] != "/":  # <script/> hides nothing
            closing = _CLOSING_TAG[name].search(value, cursor)
            if closing is None:
                break  # unclosed script/style/…: the rest is not text
            end = value.find(">", closing.end())
            cursor = length if end == -1 else end + 1
        elif name == "img":
            alt = _image_alt(value[match.end() : close])
            if alt:
                flush()
                parts.append(f" {alt} ")
    flush()
    result = "".join(parts)
    if _ENTITY_REFERENCE.search(result):
        result = html.unescape(result)  # a second level of escaping (&amp;eacute;)
    return result


def _tag_end(value: str, position: int, stop: int) -> int:
    """The '>' that ends a tag, outside quoted attribute values (alt="a > b"), looked for
    only before stop (the next '<'), so no character is scanned for two tags. With a quote
    left open there, the first '>' (-1: none)."""
    while True:
        special = _TAG_END.search(value, position, stop)
        if special is None:
            return -1
        if special.group() == ">":
            return special.start()
        closing = value.find(special.group(), special.end(), stop)
        if closing == -1:
            return value.find(">", position, stop)
        position = closing + 1


def _image_alt(attributes: str) -> str:
    """The decoded alt attribute of an <img> tag's attribute text, or ""."""
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == "alt":
            value = match.group(2) if match.group(2) is not None else match.group(3)
            if value is None:
                value = match.group(4) or ""
            return html.unescape(value)
    return ""


def clean_text(value: str, *, keep_newlines: bool = False) -> str:
    """Untrusted feed text → plain, visible, single-spaced text with no mentions."""
    text = repair_mojibake(html_to_text(value))
    text = unicodedata.normalize("NFC", text)
    text = remove_invisible(text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(_paragraphs(text.split("\n"))) if keep_newlines else re.sub(r"\s+", " ", text)
    return defuse_mentions(text.strip())


# What a UTF-8 multi-byte sequence looks like once decoded as Windows-1252 (or Latin-1): a
# lead byte (Â … ô) followed by a continuation byte (0x80–0xBF as one of those code pages
# shows it). Correct text rarely has the pair; when it does, ftfy decides and leaves it.
_MOJIBAKE_SIGN = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
    "|\u00c3 "  # à whose second byte (a no-break space) became a space on the way
)


def repair_mojibake(text: str) -> str:
    """UTF-8 text decoded as Windows-1252 and encoded again ("cÃ©lÃ¨bre", "lâ€™Ã©tat"), as
    some newspapers' feeds are, repaired by ftfy. Only its encoding fixes run: quotes,
    full-width characters (＠ included), ligatures and line breaks stay as they are, and
    correct text that merely looks odd ("NÃO", "IRMÃ") is left alone. Linear in the text."""
    if text.isascii() or not _MOJIBAKE_SIGN.search(text):
        return text
    import ftfy  # only when there is something to repair

    return str(ftfy.fix_text(text, _ftfy_config()))


@functools.cache
def _ftfy_config() -> Any:
    import ftfy

    return ftfy.TextFixerConfig(
        unescape_html=False,  # html_to_text decoded the entities; a literal "&amp;" stays
        remove_terminal_escapes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=False,
        remove_control_chars=False,  # remove_invisible decides what is invisible
        normalization=None,  # NFC comes next
        explain=False,
    )


def remove_invisible(text: str) -> str:
    """Remove control and invisible format characters, except the joiners and tags that are
    part of what a reader sees (emoji sequences, Persian and Indic words, flags)."""
    text = _INVISIBLE.sub("", text)
    if "\u200c" in text or "\u200d" in text:
        text = _JOINER.sub(lambda match: match.group("keep") or "", text)
    if _TAG_START.search(text):
        text = _TAG.sub(lambda match: match.group("keep") or "", text)
    return text


def defuse_mentions(text: str) -> str:
    """'@handle' → '＠handle' (FULLWIDTH COMMERCIAL AT): readable, and no server or client
    turns it into a mention, so a relayed title never notifies a stranger."""
    text = _MENTION.sub("＠", text)
    if text.isascii():
        return text
    # The regex module's Unicode is newer than Mastodon's (Ruby 3.x: Unicode 15.0): U+1E5D0
    # is a letter to it and unassigned to Ruby, so "\U0001e5d0@user@host" would notify. An
    # '@' after a non-ASCII character is left alone only if that character was already a word
    # character in Unicode 3.2: Python's own database is newer than Ruby's from Python 3.13
    # (Unicode 15.1: U+2EBF0 is a letter there), so it cannot be the judge.
    pieces = []
    cursor = 0
    at = text.find("@", 1)
    while at != -1:
        before = text[at - 1]
        after = text[at + 1 : at + 2]
        if not before.isascii() and not _is_word_everywhere(before) and after and not after.isspace():
            pieces.append(text[cursor:at])
            pieces.append("＠")
            cursor = at + 1
        at = text.find("@", at + 1)
    pieces.append(text[cursor:])
    return "".join(pieces)


def _is_word_everywhere(character: str) -> bool:
    """A word character to every Unicode a server may use: in this Python's database, and
    already in Unicode 3.2 (the oldest Python keeps), so never a letter newer than Ruby's."""
    for database in (unicodedata, unicodedata.ucd_3_2_0):
        category = database.category(character)
        if not (category[0] in "LM" or category in ("Nd", "Pc")):
            return False
    return True


def _paragraphs(lines: list[str]) -> list[str]:
    """Stripped lines, with every run of blank lines made one blank line."""
    kept: list[str] = []
    for line in lines:
        line = line.strip()
        if line or (kept and kept[-1]):
            kept.append(line)
    return kept


def truncate(text: str, max_graphemes: int) -> str:
    """Cut at a grapheme boundary, preferring a word boundary, and mark the cut with '…'.
    Only the start of the text is looked at."""
    if max_graphemes <= 0:
        return ""
    if len(text) <= max_graphemes or cluster_end(text, max_graphemes) >= len(text):
        return text
    kept = text[: cluster_end(text, max_graphemes - 1)].rstrip()
    space = kept.rfind(" ")
    if space > len(kept) * 2 // 3:
        kept = kept[:space].rstrip(" ,;:-–—")
    return kept + ELLIPSIS


class Cuts:
    """truncate(text, n) for many n from one look at the start of the text: the offsets where
    its first `most` grapheme clusters end, found once (prefix sums). Each cut comes with the
    number of clusters it keeps, so that its length needs no counting. `exact` is False
    where that number would be wrong: a prepended concatenation mark (it joins the ellipsis)
    or an Indic virama (counted specially) in the part looked at."""

    def __init__(self, text: str, most: int) -> None:
        self.text = text
        ends = [0]
        exact = True
        length = len(text)
        position = 0
        while len(ends) <= most and position < length:
            wanted = most + 1 - len(ends)
            joining = _next_joining(text, position, position + wanted + 1)
            if joining is None:
                stop = min(position + wanted, length)
                ends.extend(range(position + 1, stop + 1))
                position = stop
                break
            zone_start = max(joining.start() - 1, position)
            ends.extend(range(position + 1, zone_start + 1))
            zone = _zone_at(text, zone_start).group()
            if _UNCOUNTABLE.search(zone):
                exact = False
            for cluster in _GRAPHEME.findall(zone):
                zone_start += len(cluster)
                ends.append(zone_start)
            position = zone_start
        self.ends = ends[: most + 1]
        self.exact = exact
        self.whole = self.ends[-1] >= length  # every cluster is known: there are len(ends) - 1

    @property
    def known(self) -> int:
        """How many clusters were looked at."""
        return len(self.ends) - 1

    def cut(self, max_graphemes: int) -> tuple[str, int]:
        """truncate(text, max_graphemes), and how many clusters of the text it keeps (the
        ellipsis not included). max_graphemes may be at most `known`; below it when whole."""
        if max_graphemes <= 0:
            return "", 0
        if self.whole and max_graphemes >= self.known:
            return self.text, self.known
        if max_graphemes > self.known:
            raise ValueError("cut beyond the clusters looked at")
        kept = self.text[: self.ends[max_graphemes - 1]].rstrip()
        space = kept.rfind(" ")
        if space > len(kept) * 2 // 3:
            kept = kept[:space].rstrip(" ,;:-–—")
        clusters = bisect.bisect_left(self.ends, len(kept))
        return kept + ELLIPSIS, clusters

    def prefix(self, clusters: int) -> str:
        return self.text[: self.ends[clusters]]


def shorten_url_for_display(url: str, max_graphemes: int = 32) -> str:
    """'https://www.example.org/2024/very/long/path' → 'example.org/2024/very/lo…'; the facet
    keeps the full URL."""
    display = re.sub(r"^https?://(www\.)?", "", url, flags=re.IGNORECASE)
    if grapheme_length(display) > max_graphemes:
        display = "".join(graphemes(display)[: max_graphemes - 1]) + ELLIPSIS
    return display


@dataclass(frozen=True)
class Span:
    start: int  # UTF-8 byte offset, inclusive
    end: int  # UTF-8 byte offset, exclusive


def byte_span(text: str, start: int, end: int) -> Span:
    """Code point offsets → UTF-8 byte offsets into text."""
    prefix = len(text[:start].encode("utf-8"))
    return Span(prefix, prefix + len(text[start:end].encode("utf-8")))
