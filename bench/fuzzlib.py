"""The hostile-feed fuzzer shared by tests/test_fuzz.py (a bounded run in CI) and
bench/fuzz.py (as long as asked): Hypothesis strategies that build RSS 2.0 and Atom documents
full of hostile strings, a runner that previews one document with `relay preview --all
--format json` as a real process, and the checks every previewed post must pass.

Imports relay and Hypothesis only, never tests/, so bench/ stands alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import regex
from hypothesis import strategies as st

from relay.links import normalise_link
from relay.text import find_urls, grapheme_length, mastodon_length, utf8_length

ROOT = Path(__file__).resolve().parent.parent

# Mastodon's mention pattern (app/models/account.rb, MENTION_RE), ported to `regex`.
# STRICT uses Ruby's [[:word:]] exactly (letters, marks, decimal digits, connector
# punctuation); POSIX uses `regex`'s own [[:word:]], which also counts ZWJ/ZWNJ as word
# characters and so finds fewer mentions. A text passes when neither finds one.
MASTODON_MENTION_STRICT = regex.compile(
    r"(?<![=/\p{L}\p{M}\p{Nd}\p{Pc}])@(([a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?)(?:@[\p{L}\p{M}\p{Nd}\p{Pc}.-]+[\p{L}\p{M}\p{Nd}\p{Pc}]+)?)",
    regex.IGNORECASE | regex.V1,
)
MASTODON_MENTION_POSIX = regex.compile(
    r"(?<![=/[:word:]])@(([a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?)(?:@[[:word:].-]+[[:word:]]+)?)",
    regex.IGNORECASE | regex.V1,
)
BLUESKY_MAX_GRAPHEMES = 300
BLUESKY_MAX_BYTES = 3000
_UNSAFE_IN_LINK = regex.compile(r"[\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}]")
# in URLs written in feed text, joiners and flag tags may stay (a URL glued to a Persian
# word or to a flag emoji: clean_text keeps those where they join something)
_UNSAFE_IN_TEXT_URL = regex.compile(r"[\s\p{Cc}\p{Zl}\p{Zp}[\p{Cf}--[\u200c\u200d\U000e0020-\U000e007f]]]", regex.V1)
_XML_ILLEGAL = regex.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def live_mentions(text: str) -> list[str]:
    """The mentions Mastodon would find in text (either port of its pattern)."""
    found = [m.group(0) for m in MASTODON_MENTION_STRICT.finditer(text)]
    return found + [m.group(0) for m in MASTODON_MENTION_POSIX.finditer(text)]


# Hostile strings


MENTIONS = [
    "@user",
    "@user@instance.example",
    "@@user@instance",
    "＠@user",
    "²@user",
    "½@user",
    "³@a@b.example",
    "\u200d@user",
    "x\u200d@user",
    "\u200c@user",
    "e\u0301@user",
    "@_user_",
    "@Ünïcode",
    "&#64;entity",
    "&#x40;hex",
    "&amp;#64;double",
    "a@b.org",
    "contact@laquadrature.net",
    "=@user",
    "/@user",
    "_@user",
    "٣@user",
    "Ⅻ@user",
    "@user.",
    "@",
    "@ ",
    " @\n@user",
    "https://mastodon.social/@user",
]
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u2069",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u061c",
    "\U000e0041",
    "\U000e007f",
    "\x07",
    "\x1b[31m",
]
SCRIPTS = [
    "👩\u200d👩\u200d👧\u200d👦",
    "🏳\ufe0f\u200d🌈",
    "👩🏽\u200d💻",
    "🇫🇷🇪🇺",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "می\u200cخواهم",
    "क्\u200dष",
    "नमस्ते",
    "السلام عليكم",
    "שלום",
    "Привет",
    "你好世界",
    "e\u0301\u0302\u0303",
    "Z\u0351\u0352\u0353\u0354\u0355\u0356",
    "¹²³½¾",
    "#hashtag",
    "#crypto https://spam.example",
    "http://example.org/path?x=1",
    "  \n\n\t ",
]
HTML = [
    "<b>gras</b>",
    "<p>para</p><p>graphe</p>",
    "<script>alert(1)</script>",
    "<a href='https://evil.example/'>@user</a>",
    "<img src='https://example.org/i.png' alt='@alt'>",
    "&amp;",
    "&lt;b&gt;",
    "&amp;lt;i&amp;gt;",
    "&eacute;&rsquo;",
    "&#8238;",
    "<!-- comment -->",
    "]]>",
    "<![CDATA[x]]>",
]
_WORDISH = st.characters(
    categories=("Lu", "Ll", "Lo", "Lm", "Mn", "Mc", "Nd", "No", "Nl", "Pc", "Cf", "Zs", "Po"),
    codec="utf-8",
    include_characters="@＠ \n\u200c\u200d²½",
)
_PIECE = st.one_of(
    st.sampled_from(MENTIONS),
    st.sampled_from(INVISIBLE),
    st.sampled_from(SCRIPTS),
    st.sampled_from(HTML),
    st.text(_WORDISH, max_size=12),
)
hostile_text = st.lists(_PIECE, max_size=10).map("".join)
huge_text = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["👩\u200d👩\u200d👧\u200d👦", "é", "mot ", "می\u200c", "@a ", "x\u200b", "\u0301"]),
    st.integers(min_value=1000, max_value=4000),
)

_HOSTS = [
    "example.org",
    "EXAMPLE.org",
    "Bücher.example",
    "例え.jp",
    "xn--bcher-kva.example",
    "example.org:8443",
    "example.org:99999",
    "127.0.0.1",
    "[::1]",
    "2130706433",
    "trusted.org@evil.example",
    "user:pass@example.org",
    "exa mple.org",
    "ex\u202eample.org",
    "",
]
_PATH_CHARACTERS = st.characters(
    codec="utf-8",
    categories=("Ll", "Nd", "Lo", "Po", "Ps", "Pe", "Sm", "Zs", "So"),
    include_characters="/%@.,;:!?'\"()[]{}<>#&= \t\n\\|^`~é€",
)
_ODD_LINKS = [
    "https://host.example/\n@someone@instance.example https://spam.example #crypto",
    "javascript:alert(1)",
    "data:text/html,<b>x</b>",
    "/relative/path",
    "relative",
    "",
    "   https://example.org/padded   ",
    "https://example.org/" + "a" * 5000,
    "https://example.org/" + "é" * 1500,
    "http://a",
    "https:example.org",
    "https://example.org/article.",
    "https://example.org/x)",
    "https://example.org/?utm_source=rss&id=4.",
    "https://fr.wikipedia.org/wiki/Cloud_(informatique)",
    "https://example.org/a,@user",
]
odd_link = st.one_of(
    st.sampled_from(_ODD_LINKS),
    st.builds(
        lambda scheme, host, path, query: f"{scheme}://{host}/{path}{query}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript"]),
        st.sampled_from(_HOSTS),
        st.text(_PATH_CHARACTERS, max_size=30),
        st.one_of(st.just(""), st.text(_PATH_CHARACTERS, max_size=20).map(lambda q: "?" + q)),
    ),
)


@dataclass(frozen=True)
class Entry:
    title: str
    link: str
    summary: str
    guid: str
    cdata: bool
    html_title: bool


@dataclass(frozen=True)
class Document:
    kind: str  # "rss" or "atom"
    title: str
    entries: tuple[Entry, ...]

    def to_bytes(self) -> bytes:
        return (render_rss(self) if self.kind == "rss" else render_atom(self)).encode("utf-8")


entries = st.builds(
    Entry,
    title=st.one_of(hostile_text, hostile_text, huge_text),
    link=st.one_of(odd_link, st.sampled_from(["https://example.org/ok", "https://Bücher.example/é?q=a b"])),
    summary=st.one_of(hostile_text, hostile_text, huge_text),
    guid=st.one_of(st.text(min_size=1, max_size=8, alphabet="abc123"), st.just("")),
    cdata=st.booleans(),
    html_title=st.booleans(),
)
documents = st.builds(
    Document,
    kind=st.sampled_from(["rss", "atom"]),
    title=hostile_text,
    entries=st.lists(entries, min_size=2, max_size=6).map(tuple),
)


def _xml_text(value: str, cdata: bool) -> str:
    value = _XML_ILLEGAL.sub("", value)
    if cdata:
        return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    return escape(value)


def _xml_attribute(value: str) -> str:
    value = _XML_ILLEGAL.sub("", value)
    # character references, so the parser keeps newlines and tabs instead of folding them
    return '"' + escape(value, {'"': "&quot;", "\n": "&#10;", "\t": "&#9;", "\r": "&#13;"}) + '"'


def render_rss(document: Document) -> str:
    parts = [
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>",
        f"<title>{_xml_text(document.title, False)}</title><link>https://example.org/</link>",
    ]
    for entry in document.entries:
        parts.append("<item>")
        parts.append(f"<title>{_xml_text(entry.title, entry.cdata)}</title>")
        parts.append(f"<link>{_xml_text(entry.link, entry.cdata)}</link>")
        parts.append(f"<description>{_xml_text(entry.summary, entry.cdata)}</description>")
        if entry.guid:
            parts.append(f"<guid isPermaLink='false'>{_xml_text(entry.guid, False)}</guid>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts)


def render_atom(document: Document) -> str:
    parts = [
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>",
        f"<title>{_xml_text(document.title, False)}</title><id>urn:fuzz</id><updated>2026-11-30T00:00:00Z</updated>",
    ]
    for number, entry in enumerate(document.entries):
        kind = "html" if entry.html_title else "text"
        parts.append("<entry>")
        parts.append(f"<title type='{kind}'>{_xml_text(entry.title, entry.cdata)}</title>")
        parts.append(f"<link rel='alternate' href={_xml_attribute(entry.link)}/>")
        parts.append(f"<id>{_xml_text(entry.guid or f'urn:entry:{number}', False)}</id>")
        parts.append("<updated>2026-11-29T00:00:00Z</updated>")
        parts.append(f"<summary type='html'>{_xml_text(entry.summary, entry.cdata)}</summary>")
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts)


# Running relay


CONFIG = """\
accounts:
  masto:
    platform: mastodon
    instance: https://mastodon.example
    token: ${RELAY_FUZZ_UNSET_TOKEN}
  sky:
    platform: bluesky
    handle: collectif.bsky.social
    app_password: ${RELAY_FUZZ_UNSET_PASSWORD}
feeds:
  - name: fuzz
    url: URL
    to: [masto, sky]
"""


def write_config(directory: Path, url: str = "./feed.xml") -> Path:
    """A feeds.yaml with one Mastodon and one Bluesky account (no secrets: preview needs none)."""
    path = directory / "feeds.yaml"
    path.write_text(CONFIG.replace("URL", url), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Preview:
    returncode: int
    stdout: str
    stderr: str


def run_preview(config: Path, state_dir: Path, timeout: float = 120) -> Preview:
    """`relay preview --all --format json` as a real process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "preview",
            "--all",
            "--format",
            "json",
            "-c",
            str(config),
            "--state-dir",
            str(state_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=timeout,
        check=False,
    )
    return Preview(result.returncode, result.stdout, result.stderr)


# Checks


@dataclass
class Outcome:
    posts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def check_preview(preview: Preview) -> Outcome:
    """Every property a previewed post must have; failures as one line each."""
    outcome = Outcome()
    fail = outcome.failures.append
    if preview.returncode not in (0, 1):
        fail(f"exit code {preview.returncode}: {preview.stderr[-500:]!r}")
    if "Traceback" in preview.stderr:
        fail(f"traceback: {preview.stderr[-2000:]!r}")
    try:
        output = json.loads(preview.stdout)
    except ValueError:
        fail(f"stdout is not JSON: {preview.stdout[:300]!r}")
        return outcome
    outcome.posts = output.get("posts", [])
    for post in outcome.posts:
        for problem in check_post(post):
            fail(f"{post.get('account')} {post.get('key', '')[:40]!r}: {problem}")
    return outcome


def check_post(post: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    link = post.get("link")
    reason = post.get("reason") or ""
    if "\n" in reason or "\r" in reason or len(reason) > 300:
        problems.append(f"reason is not one short line: {reason[:300]!r}")
    if link is not None:
        problems += check_link(link)
        if post.get("text") is None:
            problems.append(f"an item with a link was not rendered: {reason!r}")
    text = post.get("text")
    if text is None:
        return problems
    if link is None:
        problems.append("a post without a link")
        return problems
    if post["platform"] == "mastodon":
        problems += check_mastodon(text, link, post.get("spoiler_text", ""), post["limit"])
    else:
        problems += check_bluesky(text, link, post.get("facets", []), post.get("embed"))
    return problems


def check_link(link: str) -> list[str]:
    problems = []
    if not link.startswith(("http://", "https://")):
        problems.append(f"link is not http(s): {link[:100]!r}")
    if _UNSAFE_IN_LINK.search(link):
        problems.append(f"link holds white space or control characters: {link[:100]!r}")
    try:
        if normalise_link(link) != link:
            problems.append(f"link is not normalised: {link[:100]!r}")
    except ValueError as exc:
        problems.append(f"link does not normalise ({exc}): {link[:100]!r}")
    return problems


def check_mastodon(text: str, link: str, spoiler_text: str, limit: int) -> list[str]:
    problems = []
    length = mastodon_length(text, spoiler_text)
    if length > limit:
        problems.append(f"{length} characters over the limit of {limit}")
    if not any(text[start:end] == link for start, end in find_urls(text)):
        problems.append(f"the link is not intact in the text: {link[:100]!r}")
    mentions = live_mentions(text) + live_mentions(spoiler_text)
    if mentions:
        problems.append(f"live mention {mentions[0]!r}")
    return problems


def check_bluesky(text: str, link: str, facets: list[dict[str, Any]], embed: dict[str, Any] | None) -> list[str]:
    problems = []
    if grapheme_length(text) > BLUESKY_MAX_GRAPHEMES:
        problems.append(f"{grapheme_length(text)} graphemes over {BLUESKY_MAX_GRAPHEMES}")
    if utf8_length(text) > BLUESKY_MAX_BYTES:
        problems.append(f"{utf8_length(text)} bytes over {BLUESKY_MAX_BYTES}")
    encoded = text.encode("utf-8")
    link_facets = []
    for facet in facets:
        start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
        if not 0 <= start < end <= len(encoded):
            problems.append(f"facet {start}..{end} outside the text ({len(encoded)} bytes)")
            continue
        try:
            encoded[:start].decode("utf-8")
            encoded[start:end].decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"facet {start}..{end} is not on character boundaries")
        for feature in facet["features"]:
            kind = feature.get("$type", "")
            if kind.endswith("#mention"):
                problems.append(f"a mention facet from feed text: {feature!r}")
            elif kind.endswith("#link"):
                uri = str(feature.get("uri", ""))
                link_facets.append(uri)
                # URLs written in feed text are linked as written; none may hold white space
                if not uri.startswith(("http://", "https://")) or _UNSAFE_IN_TEXT_URL.search(uri):
                    problems.append(f"link facet to {uri[:100]!r}")
    if link not in link_facets:
        problems.append(f"no link facet for {link[:100]!r} (facets: {link_facets!r})")
    uri = ((embed or {}).get("external") or {}).get("uri")
    if uri != link:
        problems.append(f"card URI {str(uri)[:100]!r} is not the link {link[:100]!r}")
    return problems
