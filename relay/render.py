"""Templates → post text that fits (pure). Jinja2 sandbox, StrictUndefined, autoescape off;
feed text is only ever a variable. The link and hashtags are never cut: the summary shrinks
first, then the title, on grapheme boundaries with an ellipsis, until the platform's rules
(PostRules, one per platform in relay.targets) say the text fits; the rules then finish the
post (facets, card, the final defusing of mentions on Mastodon, where a filter such as
striptags could have brought one back). A post is rendered at most three times (fit_once:
the template's own text measured once from a render with markers, each cut of a field
measured from its grapheme clusters, found once); a template or text that does not allow it
goes through fit, the search that renders every try.

Where a post's card is made from the first link in its text (Mastodon), the URLs in feed
text (title, summary, author, tags, the feed's title) are removed before the template sees
them, the words around them kept: only the item's own link is a URL that comes from the
feed, whatever the template's order. An item without a title gets a headline from the
start of its summary, and a card title from the summary's first sentence or the site's
name."""

from __future__ import annotations

import bisect
import dataclasses
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2.filters import do_striptags
from jinja2.sandbox import SandboxedEnvironment

from relay import catalog
from relay.catalog import BUILTIN_TEMPLATES
from relay.config import Account, Config, Feed
from relay.errors import RenderError
from relay.hashtags import item_hashtags
from relay.models import Item, Post
from relay.social import platform_of
from relay.text import (
    ELLIPSIS,
    Cuts,
    cluster_end,
    defuse_mentions,
    find_urls,
    grapheme_length,
    joins_neighbours,
    truncate,
    utf8_length,
)

HEADLINE_GRAPHEMES = 200  # an untitled item's headline: the start of its summary
CARD_TITLE_GRAPHEMES = 120  # an untitled item's Bluesky card title: the summary's first sentence


# Control characters a post must not carry (a NUL Mastodon would keep; a CR the platforms and
# the preview page show as a line break): none comes from feed text (relay.text.clean_text),
# and these keep a template's own text and a call's --var values from bringing one.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_RETURNS = re.compile("\r\n?")


def _no_controls(text: str) -> str:
    return _CONTROLS.sub("", _RETURNS.sub("\n", text)) if _CONTROLS.search(text) or "\r" in text else text


class _CleanLoader(jinja2.BaseLoader):
    """Templates' sources without control characters."""

    def __init__(self, inner: jinja2.BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Any]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        return _no_controls(source), filename, uptodate

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


def _finalize(value: Any) -> Any:
    return _no_controls(value) if isinstance(value, str) else value


def make_environment(template_dirs: Sequence[Path]) -> SandboxedEnvironment:
    # The user's folders come first for every name; the built-ins answer as "builtin/…",
    # so a user's news.j2 beats the built-in news.mastodon.j2 and can extend it.
    loader = jinja2.ChoiceLoader(
        [
            jinja2.FileSystemLoader([str(d) for d in template_dirs]),
            jinja2.PrefixLoader({"builtin": jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES))}),
        ]
    )
    env = SandboxedEnvironment(
        loader=_CleanLoader(loader),
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["date"] = _format_date
    # striptags decodes entities: '&#64;user@instance' would come back as a live mention
    env.filters["striptags"] = _striptags
    # urlize writes HTML (<a href=…>), which a post shows as text; servers link plain URLs
    env.filters["urlize"] = _plain
    return env


def _striptags(value: Any) -> str:
    return defuse_mentions(do_striptags(value))


def _plain(value: Any, *args: Any, **kwargs: Any) -> str:
    return str(value)


def _format_date(value: datetime | None, fmt: str = "%d/%m/%Y") -> str:
    return value.strftime(fmt) if value else ""


def template_names(name: str, platform: str) -> list[str]:
    own = [f"{name}.{platform}.j2", f"{name}.j2"]
    return own + [f"builtin/{n}" for n in own]


def find_template(env: jinja2.Environment, name: str, platform: str) -> jinja2.Template:
    """The per-platform variant when there is one, else the shared template."""
    try:
        return env.select_template(template_names(name, platform))
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"template {exc.filename or name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplatesNotFound:
        raise RenderError(f"no template {name!r} ({name}.j2 or {name}.{platform}.j2)") from None


def template_exists(env: jinja2.Environment, name: str) -> bool:
    assert env.loader is not None
    return catalog.exists(env.loader.list_templates(), name)


@dataclass(frozen=True)
class FeedInfo:
    name: str
    title: str
    url: str


@dataclass(frozen=True)
class Draft:
    """What a platform's rules need besides the text to judge and finish a post."""

    item: Item
    feed: FeedInfo
    link: str
    account: str
    language: str
    hashtags: tuple[str, ...] = ()
    spoiler_text: str = ""
    sensitive: bool = False
    images: bool = False
    visibility: str = ""
    credit: str = ""  # as the template showed it: the one handle that may be a live mention
    bluesky_embed: str = "images"


Measure = tuple[int, int]
"""A text's length as a platform counts it, and its UTF-8 bytes as shown. Two pieces of
text joined by white space measure the sum of their measures (URLs are matched up to white
space), and a piece without a URL measures its grapheme_length and utf8_length: so fit
measures the template's own text once and each cut of the feed's text from its clusters."""


class PostRules(Protocol):
    """What a platform asks of a post: how its text is counted, and what a post carries
    (facets, a card, a content warning). One implementation per platform, in relay.targets;
    render renders and asks the rules, without knowing the platforms."""

    @property
    def platform(self) -> str: ...  # the name templates are chosen and written by

    @property
    def keeps_feed_urls(self) -> bool: ...  # False where the first URL in the text makes the card

    def measure(self, text: str, draft: Draft) -> Measure: ...  # see Measure

    def capacity(self, draft: Draft) -> Measure: ...  # the most a post's text may measure

    def fits(self, text: str, draft: Draft) -> bool: ...  # measure within capacity

    def finish(self, text: str, draft: Draft) -> Post: ...


class _TooLong(RenderError):
    """Even without title and summary, the post is over the limit."""


def render_post(
    template: jinja2.Template,
    item: Item,
    feed: FeedInfo,
    *,
    rules: PostRules,
    account: str,
    hashtags: Sequence[str],
    language: str,
    spoiler_text: str = "",
    sensitive: bool = False,
    images: bool = False,
    visibility: str = "",
    optional_hashtags: int = 0,
    credit: str = "",
    bluesky_embed: str = "images",
    thread: int = 1,
    variables: Mapping[str, str] | None = None,
    trusted: bool = False,
) -> Post:
    """Render and fit one item for one account. Raises RenderError. With thread > 1, an
    item whose summary would be cut is posted as a thread of at most that many posts (see
    make_thread). The last
    `optional_hashtags` hashtags (those made from the item's categories) are left out, the
    last first, when the post cannot fit with them even without title and summary: a feed's
    categories never keep its items from being posted."""
    hashtags = tuple(hashtags)
    while True:
        try:
            draft = Draft(
                item=item,
                feed=feed,
                link="",  # set once the item is known to have one
                account=account,
                language=language,
                hashtags=hashtags,
                spoiler_text=spoiler_text,
                sensitive=sensitive,
                images=images,
                visibility=visibility,
                credit=credit,
                bluesky_embed=bluesky_embed,
            )
            return _render_post(template, rules, draft, thread, variables or {}, trusted)
        except _TooLong:
            if optional_hashtags <= 0:
                raise
            hashtags, optional_hashtags = hashtags[:-1], optional_hashtags - 1


def _render_post(
    template: jinja2.Template,
    rules: PostRules,
    draft: Draft,
    thread: int = 1,
    variables: Mapping[str, str] | None = None,
    trusted: bool = False,
) -> Post:
    """trusted: the text is the user's own (a call to action), not a feed's: its URLs stay."""
    item, feed = draft.item, draft.feed
    if item.link is None:
        raise RenderError(item.skip_reason or "no link")
    link = item.link
    # Where the first URL in the text makes the card, feed text brings none of its own.
    clean = _unchanged if rules.keeps_feed_urls or trusted else remove_urls
    title, summary = clean(item.title), clean(item.summary)
    author = clean(item.author) if item.author is not None else None
    tags = [t for t in (clean(tag) for tag in item.tags) if t]
    feed_title = clean(feed.title)
    if not title.strip() and not summary.strip():
        title = feed_title or feed.name  # an item that says nothing is named by its site, not a bare link
    draft = dataclasses.replace(draft, link=link)

    def produce_raw(title: str, summary: str, headline_text: str) -> str:
        context = {
            "item": {
                "title": title,
                "headline": headline_text,
                "link": link,
                "summary": summary,
                "author": author,
                "published": item.published,
                "tags": tags,
                "image": item.image,
                "feed": feed.name,
            },
            "feed": {"name": feed.name, "title": feed_title, "url": feed.url},
            "hashtags": list(draft.hashtags),
            "credit": draft.credit,
            "vars": dict(variables or {}),  # a call to action's --var / vars: (relay.calls)
            "platform": rules.platform,
            "account": draft.account,
        }
        try:
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {template.name}: {exc}") from None
        except Exception as exc:
            raise RenderError(f"template {template.name}: {type(exc).__name__}: {exc}") from None

    def produce(title: str, summary: str) -> str:
        return tidy(produce_raw(title, summary, headline(title, summary)))

    def fits(text: str) -> bool:
        return rules.fits(text, draft)

    text = fit_once(
        produce,
        produce_raw,
        lambda text: rules.measure(text, draft),
        rules.capacity(draft),
        title,
        summary,
        fits,
    )
    if text is None:
        text = fit(produce, fits, title, summary)
    if link not in text:
        raise RenderError(f"template {template.name} does not show item.link")
    if thread > 1:
        # the replies are the summary's own text: no link, card, image, hashtag or credit
        reply = dataclasses.replace(draft, link="", hashtags=(), images=False, credit="")
        first, replies = make_thread(produce, fits, lambda part: rules.fits(part, reply), title, summary, text, thread)
        if replies:
            parts = tuple(rules.finish(part, reply) for part in replies)
            return dataclasses.replace(rules.finish(first, draft), action="thread", thread=parts)
    return rules.finish(text, draft)


# the end of a sentence: its stop (and closing quotes or brackets, French « … » spaced) before
# white space or the end of the text; a CJK full stop; a line break
_SENTENCE_END = re.compile(r"[.!?…](?:[\"'»”’)\]]|[ \u00a0\u202f][»”])*(?=\s|$)|[。！？][」』”’)]*|\n")
THREAD_WINDOW = 8000  # code points of the text a reply is cut from: far more than a post shows


def make_thread(
    produce: Callable[[str, str], str],
    fits: Callable[[str], bool],
    reply_fits: Callable[[str], bool],
    title: str,
    summary: str,
    text: str,
    most: int,
) -> tuple[str, list[str]]:
    """An item whose summary the post would cut, as a thread of at most `most` posts: the
    first is the template's, with the title, the link and as much of the summary as fits;
    the replies carry the rest of the summary, each as much as fits. Every post ends at the
    end of a sentence when one ends in its second half, else at a word boundary (then with
    an ellipsis), else at a grapheme boundary. Where more would be needed, the last reply is
    cut with an ellipsis. (text, []) when the summary is not cut: the post as it was."""
    summary = summary.strip()
    if not summary or text == produce(title, summary) or produce(title, "") == produce(title, summary):
        return text, []  # nothing is cut, or the template does not show the summary
    if fits(produce(title, "")):
        head, rest = _cut(summary, lambda part: fits(produce(title, part)), sentences=True)
        first = produce(title, head) if head else produce(title, "")
    else:
        first, rest = text, summary  # even the title is cut: the first post is the post as it was
    replies: list[str] = []
    while rest and len(replies) < most - 1:
        if len(rest) <= THREAD_WINDOW and reply_fits(rest):
            replies.append(tidy(rest))
            break
        last = len(replies) == most - 2  # the last post allowed, text left: it ends with an ellipsis
        part, rest = _cut(rest, reply_fits, sentences=not last)
        if not part:
            break  # not even one grapheme fits: nothing more can be posted
        if last and reply_fits(spaced := re.sub(r"([.!?])…$", r"\1 …", part)):
            part = spaced  # "end. …", not "end.…"
        replies.append(tidy(part))
    return first, replies


def _cut(text: str, fits: Callable[[str], bool], *, sentences: bool) -> tuple[str, str]:
    """The longest start of text that fits, and the rest: cut at the end of a sentence in
    its second half (with sentences), else at a word boundary, else at a grapheme boundary,
    with an ellipsis unless at a sentence's end; never inside a URL (a cut URL could link
    somewhere else). Only the first THREAD_WINDOW code points are looked at (a post shows
    far fewer), up to the end of a URL there. ("", text) when not even one grapheme fits."""
    window = _window(text)
    low, high, best = 1, grapheme_length(window), 0
    while low <= high:  # the most clusters that fit, an ellipsis after them
        middle = (low + high) // 2
        if fits(window[: cluster_end(window, middle)].rstrip() + ELLIPSIS):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    if best == 0:
        return "", text
    end = cluster_end(window, best)
    inside = [start for start, stop in find_urls(window) if start < end < stop]
    if inside and inside[0] > 0:
        end = inside[0]  # before the URL, which goes whole into the next post
    room = text[:end]
    if sentences:
        stops = [m.end() for m in _SENTENCE_END.finditer(text[: end + 1]) if m.end() <= end]
        if stops and stops[-1] > end // 2 and fits(room[: stops[-1]].rstrip()):
            return room[: stops[-1]].rstrip(), text[stops[-1] :].strip()
    if end < len(text) and (text[end].isspace() or text[end - 1].isspace()):
        space = end  # the cut falls between words
    else:
        space = max(room.rfind(" "), room.rfind("\n"))
    if space > end // 3 and fits(cut := room[:space].rstrip(" ,;:-–—\n") + ELLIPSIS):
        return cut, text[space:].strip()
    return room.rstrip() + ELLIPSIS, text[end:].strip()


def _window(text: str) -> str:
    """The start of text a post is cut from: THREAD_WINDOW code points, and the rest of a
    URL that crosses its end."""
    if len(text) <= THREAD_WINDOW:
        return text
    crossing = [
        stop for start, stop in find_urls(text[THREAD_WINDOW - 2000 : THREAD_WINDOW + 2000]) if start < 2000 < stop
    ]
    return text[: THREAD_WINDOW - 2000 + crossing[0]] if crossing else text[:THREAD_WINDOW]


def _unchanged(text: str) -> str:
    return text


def remove_urls(text: str) -> str:
    """The text without its http(s) URLs, the words around them kept: 'Patreon:
    https://patreon.com/x' → 'Patreon:', 'our letter (https://…) monthly' → 'our letter
    monthly'. A bracket left empty goes with its URL; spaces left double are one."""
    spans = find_urls(text)
    if not spans:
        return text
    parts = []
    cursor = 0
    for start, end in spans:
        parts.append(text[cursor:start])
        cursor = end
    parts.append(text[cursor:])
    kept = "".join(parts)
    kept = re.sub(r"[ \t]*(?:\([ \t]*\)|\[[ \t]*\]|<[ \t]*>|\{[ \t]*\})", "", kept)
    kept = re.sub(r"[ \t]{2,}", " ", kept)
    kept = re.sub(r"[ \t]+(?=[,.;!?)\]]|\n|$)", "", kept)
    return tidy(kept)


_LETTER = re.compile(r"[^\W\d_]")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def headline(title: str, summary: str, max_graphemes: int = HEADLINE_GRAPHEMES) -> str:
    """The item's title; for an untitled item (a Mastodon status, a micro.blog post) the
    start of its summary on one line, without URLs, cut on a word boundary. A title without
    a single letter (a release titled "0.2.0") is followed by the start of the summary."""
    if _titled(title):
        return title
    start = truncate(_one_line(remove_urls(summary)), max_graphemes)
    if not title.strip():
        return start
    if start:
        return truncate(f"{title} — {start}", max_graphemes)
    return title


def _titled(title: str) -> bool:
    """Whether an item's headline is its title alone, whatever its summary."""
    return bool(title.strip()) and _LETTER.search(title) is not None


def card_title(title: str, summary: str, feed: FeedInfo) -> str:
    """A Bluesky card's title, never empty: the item's title, else the summary's first
    sentence, else the site's name."""
    if title.strip():
        return title
    text = _one_line(remove_urls(summary))
    sentence = re.split(r"(?<=[.!?…])\s", text, maxsplit=1)[0] if text else ""
    return truncate(sentence, CARD_TITLE_GRAPHEMES) or _one_line(feed.title) or feed.name


def tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def fit(
    produce: Callable[[str, str], str],
    fits: Callable[[str], bool],
    title: str,
    summary: str,
) -> str:
    """Shrink the summary, then the title, until the rendered text fits."""
    text = produce(title, summary)
    if fits(text):
        return text
    best = _largest_fitting(lambda n: produce(title, truncate(summary, n)), fits, grapheme_length(summary))
    if best is not None:
        return best
    best = _largest_fitting(lambda n: produce(truncate(title, n), ""), fits, grapheme_length(title))
    if best is not None:
        return best
    raise _TooLong("too long even without title and summary: the link and hashtags do not fit")


def _largest_fitting(make: Callable[[int], str], fits: Callable[[str], bool], upper: int) -> str | None:
    low, high = 0, upper
    best: str | None = None
    if not fits(make(0)):
        return None
    while low <= high:
        middle = (low + high) // 2
        candidate = make(middle)
        if fits(candidate):
            best = candidate
            low = middle + 1
        else:
            high = middle - 1
    return best


# Placeholders for the feed's fields in a render with markers: a private-use character
# around a nonce drawn per run, so feed text cannot write one (and any that the template or
# feed brings makes the count of edges wrong, so the search as before takes over).
_EDGE = "\U0010fffd"
_NONCE = secrets.token_hex(8)
_MARKS = {name: f"{_EDGE}{name}{_NONCE}{_EDGE}" for name in ("title", "summary", "headline")}
_MARK = re.compile("|".join(re.escape(mark) for mark in _MARKS.values()))
_JUNCTION = (" ", "\t", "\n")  # what must separate a field from the template's text for measures to add up
_LONGEST_RUN = 64  # spaces and punctuation after a cut looked through before searching as before


@dataclass(frozen=True)
class _Layout:
    """A rendered text with its fields left out: pieces[0] slots[0] pieces[1] … pieces[-1],
    and what the pieces measure together."""

    pieces: tuple[str, ...]
    slots: tuple[str, ...]
    fixed: Measure

    def join(self, values: Mapping[str, str]) -> str:
        parts = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts += [values[slot], piece]
        return "".join(parts)


def _layout(raw: str, empty: frozenset[str], measure: Callable[[str], Measure]) -> _Layout | None:
    """The layout of a render with markers once the empty fields are taken out and the text
    tidied; None where a field is not between white space (its measure would not add up)."""
    for name in empty:
        raw = raw.replace(_MARKS[name], "")
    text = tidy(raw)
    found = sorted((text.index(mark), name) for name, mark in _MARKS.items() if name not in empty and mark in text)
    pieces, slots, cursor = [], [], 0
    for start, name in found:
        pieces.append(text[cursor:start])
        slots.append(name)
        cursor = start + len(_MARKS[name])
    pieces.append(text[cursor:])
    for index in range(len(slots)):
        before, after = pieces[index], pieces[index + 1]
        if (before or index > 0) and before[-1:] not in _JUNCTION:
            return None
        if (after or index < len(slots) - 1) and after[:1] not in _JUNCTION:
            return None
    fixed = (0, 0)
    for piece in pieces:
        if piece:
            fixed = _add(fixed, measure(piece))
    return _Layout(tuple(pieces), tuple(slots), fixed)


def _add(first: Measure, second: Measure) -> Measure:
    return (first[0] + second[0], first[1] + second[1])


def _within(measure: Measure, capacity: Measure) -> bool:
    return measure[0] <= capacity[0] and measure[1] <= capacity[1]


def _fills_slot(value: str) -> bool:
    """Whether a field's value leaves tidy() and the clusters around it alone: one line, no
    white space at its ends, and no character there that could join the text around it."""
    return (
        bool(value)
        and "\n" not in value
        and not value[0].isspace()
        and not value[-1].isspace()
        and not joins_neighbours(value[0])
        and not joins_neighbours(value[-1])
    )


def _cuttable(cuts: Cuts) -> bool:
    """Whether every cut of a field can be measured from its clusters: countable, without a
    URL in the part looked at, starting with a character that stands on its own, one line."""
    lead = cuts.text[: cuts.ends[-1] + 3]
    return (
        cuts.exact
        and "://" not in lead
        and "\n" not in lead
        and bool(cuts.text)
        and not cuts.text[0].isspace()
        and not joins_neighbours(cuts.text[0])
    )


def _most_clusters(cuts: Cuts, budget: Measure, times: int) -> int:
    """The most clusters of the field a cut may keep (its ellipsis aside) for `times` copies
    of it to stay within budget; -1 when not even an ellipsis fits."""
    ellipsis = (1, len(ELLIPSIS.encode()))
    most = min(budget[0] // times - ellipsis[0], cuts.known)
    byte_room = budget[1] // times - ellipsis[1]
    if most < 0 or byte_room < 0:
        return -1
    if utf8_length(cuts.prefix(most)) <= byte_room:
        return most
    low, high = 0, most - 1  # the longest prefix within the bytes: it grows with the clusters
    while low < high:
        middle = (low + high + 1) // 2
        if utf8_length(cuts.prefix(middle)) <= byte_room:
            low = middle
        else:
            high = middle - 1
    return low


def _best_cut(cuts: Cuts, most: int) -> int | None:
    """The n for which truncate(text, n) keeps the most of the text while keeping at most
    `most` clusters: 0 when no cut does, None when the clusters looked at cannot tell.

    A cut keeps the first n - 1 clusters, less the white space at their end, and goes back
    to the last space when that is in the last third (then less " ,;:-–—"). Every n up to
    most + 1 keeps at most `most`; the largest keeps the most unless it went back to a
    space, and then every n down to just after that space goes back there too: the next
    candidate is the n that stops at the space. A larger n keeps no more than `most` only
    when what follows the first `most` clusters is spaces and punctuation, looked through."""
    last = cuts.known - 1 if cuts.whole else cuts.known  # the largest n that cuts
    best_n, best_kept = 0, -1
    n = min(most + 1, last)
    while n >= 1:
        _, kept = cuts.cut(n)
        if kept > best_kept:
            best_n, best_kept = n, kept
        start = cuts.text[: cuts.ends[n - 1]].rstrip()
        space = start.rfind(" ")
        if space <= len(start) * 2 // 3:
            break  # no word boundary: no smaller n keeps more
        at = bisect.bisect_left(cuts.ends, space)  # a space starts a cluster
        if at <= best_kept:
            break
        n = at + 1
    n = min(most + 1, last) + 1
    for _ in range(_LONGEST_RUN):
        if n > last:
            return best_n if cuts.whole else None
        _, kept = cuts.cut(n)
        if best_kept < kept <= most:
            best_n, best_kept = n, kept
        cluster = cuts.text[cuts.ends[n - 2] : cuts.ends[n - 1]]
        if not (cluster.isspace() or cluster in (" ", ",", ";", ":", "-", "–", "—")):
            return best_n
        n += 1
    return None


def fit_once(
    produce: Callable[[str, str], str],
    produce_raw: Callable[[str, str, str], str],
    measure: Callable[[str], Measure],
    capacity: Measure,
    title: str,
    summary: str,
    fits: Callable[[str], bool],
) -> str | None:
    """The text fit() gives, or one keeping more of the summary, rendering the template at
    most three times: the item as it is when it looks short; once with markers in place of
    the title, summary and headline, which shows what the template writes around them;
    and once with the cut chosen, checked to be the text foreseen and to fit. The summary
    is cut first, then the title, exactly as truncate() cuts; each cut is measured from the
    field's clusters, found once, plus what the template's own text measures. None where
    the template changes or repeats a field, a field is not between white space, or a
    field's text cannot be measured this way: then fit() searches as before."""
    if len(title) + len(summary) <= capacity[0]:
        text = produce(title, summary)
        if fits(text):
            return text
    raw = produce_raw(_MARKS["title"], _MARKS["summary"], _MARKS["headline"])
    counts = {name: raw.count(mark) for name, mark in _MARKS.items()}
    if max(counts.values()) > 1 or raw.count(_EDGE) != 2 * sum(counts.values()):
        return None  # a filter changed a field, the template repeats one, or feed text forged an edge
    # An untitled item's headline is the start of its summary: it changes as the summary is
    # cut, so only the item as it is can be foreseen.
    follows = bool(counts["headline"]) and not _titled(title)

    layouts: dict[frozenset[str], _Layout | None] = {}
    measured: dict[str, Measure] = {}

    def layout_for(values: Mapping[str, str]) -> _Layout | None:
        empty = frozenset(name for name, value in values.items() if not value)
        if empty not in layouts:
            layouts[empty] = _layout(raw, empty, measure)
        return layouts[empty]

    def measure_value(value: str) -> Measure:
        if value not in measured:
            measured[value] = measure(value)
        return measured[value]

    def fields(title: str, summary: str) -> dict[str, str]:
        shown = headline(title, summary) if counts["headline"] and not _titled(title) else title
        return {"title": title, "summary": summary, "headline": shown}

    def foresee(values: Mapping[str, str]) -> tuple[str, Measure] | None:
        """The text and its measure; None where they cannot be told from the layout."""
        layout = layout_for(values)
        if layout is None:
            return None
        total = layout.fixed
        for slot in layout.slots:
            if not _fills_slot(values[slot]):
                return None
            total = _add(total, measure_value(values[slot]))
        return layout.join(values), total

    def exactly(values: Mapping[str, str]) -> tuple[str, Measure]:
        text = tidy(_MARK.sub(lambda match: values[match.group()[1:-1].removesuffix(_NONCE)], raw))
        return text, measure(text)

    def final(values: Mapping[str, str], foreseen: str) -> str | None:
        text = produce(values["title"], values["summary"])
        return text if text == foreseen and fits(text) else None

    # The summary, whole then cut, the title whole.
    whole = fields(title, summary)
    layout = layout_for(whole)
    if layout is None:
        return None
    if "summary" not in layout.slots or follows:
        as_is = foresee(whole) or exactly(whole)
        if _within(as_is[1], capacity):
            return final(whole, as_is[0])
        if follows:
            return None
    else:
        fixed = layout.fixed
        for slot in layout.slots:
            if slot != "summary":
                if not _fills_slot(whole[slot]):
                    return None
                fixed = _add(fixed, measure_value(whole[slot]))
        budget = (capacity[0] - fixed[0], capacity[1] - fixed[1])
        cuts = Cuts(summary, max(budget[0], 0) + 8)
        if not _cuttable(cuts):
            return None
        if cuts.whole:
            as_is = foresee(whole) or exactly(whole)
            if _within(as_is[1], capacity):
                return final(whole, as_is[0])
        most = _most_clusters(cuts, budget, 1)
        n = _best_cut(cuts, most) if most >= 0 else 0
        if n is None:
            return None
        if n > 0:
            values = fields(title, cuts.cut(n)[0])
            found = foresee(values)
            if found is None:
                return None
            return final(values, found[0]) if _within(found[1], capacity) else None
        values = fields(title, "")
        found = foresee(values)
        if found is None:
            return None
        if _within(found[1], capacity):
            return final(values, found[0])

    # The title cut, without a summary.
    nothing = fields("", "")
    found = foresee(nothing)
    if found is None or not _within(found[1], capacity):
        return None  # the link and hashtags do not fit: fit() says so
    layout = layout_for(fields(title or "x", ""))
    if layout is None:
        return None
    times = sum(1 for slot in layout.slots if slot in ("title", "headline"))
    if not times or not title:
        return final(nothing, found[0])
    cuts = Cuts(title, max((capacity[0] - layout.fixed[0]) // times, 0) + 8)
    if not _cuttable(cuts):
        return None
    budget = (capacity[0] - layout.fixed[0], capacity[1] - layout.fixed[1])
    most = _most_clusters(cuts, budget, times)
    n = _best_cut(cuts, most) if most >= 0 else 0
    if n is None:
        return None
    if n == 0:
        return final(nothing, found[0])
    values = fields(cuts.cut(n)[0], "")
    cut = foresee(values)
    if cut is None or not _within(cut[1], capacity):
        return None
    return final(values, cut[0])


def post_language(item: Item, feed: Feed) -> tuple[str, str]:
    """A post's language and where it came from: the item's own (item), else the feed's
    language: in feeds.yaml when written for that feed (feed), else the one the channel
    declares (channel), else defaults.language (default). One rule for preview and run."""
    if item.language:
        return item.language, "item"
    if feed.language_set:
        return feed.language, "feed"
    if item.channel_language:
        return item.channel_language, "channel"
    return feed.language, "default"


def post_hashtags(item: Item, feed: Feed) -> tuple[tuple[str, ...], int]:
    """A post's hashtags: the feed's, then, with category_hashtags, the item's categories
    made hashtags (URLs in a category are no part of it), at most max_hashtags in all; and
    how many came from categories (the last ones). One rule for preview and run."""
    categories = [remove_urls(tag) for tag in item.tags] if feed.category_hashtags else []
    return item_hashtags(feed.hashtags, categories, tag_map=dict(feed.tag_map), limit=feed.max_hashtags)


def post_action(item: Item, feed: Feed, account: str, platform: str) -> str:
    """post, boost or quote: the feed's mode for the account, when the item is a post on the
    account's own platform (relay.social); a post from the other platform is posted."""
    mode = feed.mode_for(account)
    if mode == "post" or platform_of(item.original) != platform:
        return "post"
    return mode


def post_images(draft: Draft, fallback_alt: str) -> tuple[tuple[str, str], ...]:
    """The images a post attaches (images: true): the item's, each with its alt text, else
    the fallback (the item's title)."""
    if not draft.images:
        return ()
    item = draft.item
    images = item.images or (((item.image, item.image_alt),) if item.image else ())
    return tuple((url, alt or fallback_alt) for url, alt in images if url)


class Renderer:
    """Templates compiled once per run; one render per item and account."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = make_environment(config.template_dirs)

    def render(
        self,
        item: Item,
        feed: Feed,
        account: Account,
        rules: PostRules,
        feed_title: str = "",
        *,
        variables: Mapping[str, str] | None = None,
        trusted: bool = False,
    ) -> Post:
        template = find_template(self.env, feed.template, rules.platform)
        hashtags, from_categories = post_hashtags(item, feed)
        action = post_action(item, feed, account.name, rules.platform)
        post = render_post(
            template,
            item,
            FeedInfo(feed.name, feed_title or feed.name, feed.url),
            rules=rules,
            account=account.name,
            hashtags=hashtags,
            optional_hashtags=from_categories,
            credit=feed.credit.shown(rules.platform),
            bluesky_embed=feed.bluesky_embed,
            language=post_language(item, feed)[0],
            spoiler_text=feed.content_warning,
            sensitive=feed.sensitive,
            images=feed.images,
            visibility=feed.visibility,
            thread=feed.thread if action == "post" else 1,
            variables=variables,
            trusted=trusted,
        )
        if action == "post":
            return post
        # the text is rendered all the same: a quote's, and the post sent if the original is gone
        return dataclasses.replace(post, action=action, original=item.original, fallback=feed.fallback)
