"""Templates → post text that fits (pure). Jinja2 sandbox, StrictUndefined, autoescape off;
feed text is only ever a variable. The link and hashtags are never cut: the summary shrinks
first, then the title, on grapheme boundaries with an ellipsis, until the platform's rules
(PostRules, one per platform in relay.targets) say the text fits; the rules then finish the
post (facets, card, the final defusing of mentions on Mastodon, where a filter such as
striptags could have brought one back).

Where a post's card is made from the first link in its text (Mastodon), the URLs in feed
text (title, summary, author, tags, the feed's title) are removed before the template sees
them, the words around them kept: only the item's own link is a URL that comes from the
feed, whatever the template's order. An item without a title gets a headline from the
start of its summary, and a card title from the summary's first sentence or the site's
name."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
from relay.models import Item, Post
from relay.text import (
    defuse_mentions,
    find_urls,
    grapheme_length,
    truncate,
)

HEADLINE_GRAPHEMES = 200  # an untitled item's headline: the start of its summary
CARD_TITLE_GRAPHEMES = 120  # an untitled item's Bluesky card title: the summary's first sentence


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
        loader=loader,
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


class PostRules(Protocol):
    """What a platform asks of a post: how its text is counted, and what a post carries
    (facets, a card, a content warning). One implementation per platform, in relay.targets;
    render renders and asks the rules, without knowing the platforms."""

    @property
    def platform(self) -> str: ...  # the name templates are chosen and written by

    @property
    def keeps_feed_urls(self) -> bool: ...  # False where the first URL in the text makes the card

    def fits(self, text: str, draft: Draft) -> bool: ...

    def finish(self, text: str, draft: Draft) -> Post: ...


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
) -> Post:
    """Render and fit one item for one account. Raises RenderError."""
    if item.link is None:
        raise RenderError(item.skip_reason or "no link")
    link = item.link
    # Where the first URL in the text makes the card, feed text brings none of its own.
    clean = _unchanged if rules.keeps_feed_urls else remove_urls
    title, summary = clean(item.title), clean(item.summary)
    author = clean(item.author) if item.author is not None else None
    tags = [t for t in (clean(tag) for tag in item.tags) if t]
    feed_title = clean(feed.title)
    if not title.strip() and not summary.strip():
        title = feed_title or feed.name  # an item that says nothing is named by its site, not a bare link
    draft = Draft(item, feed, link, account, language, tuple(hashtags), spoiler_text, sensitive, images, visibility)

    def produce(title: str, summary: str) -> str:
        context = {
            "item": {
                "title": title,
                "headline": headline(title, summary),
                "link": link,
                "summary": summary,
                "author": author,
                "published": item.published,
                "tags": tags,
                "image": item.image,
                "feed": feed.name,
            },
            "feed": {"name": feed.name, "title": feed_title, "url": feed.url},
            "hashtags": list(hashtags),
            "platform": rules.platform,
            "account": account,
        }
        try:
            raw = template.render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {template.name}: {exc}") from None
        except Exception as exc:
            raise RenderError(f"template {template.name}: {type(exc).__name__}: {exc}") from None
        return tidy(raw)

    text = fit(produce, lambda text: rules.fits(text, draft), title, summary)
    if link not in text:
        raise RenderError(f"template {template.name} does not show item.link")
    return rules.finish(text, draft)


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
    start = truncate(_one_line(remove_urls(summary)), max_graphemes)
    if not title.strip():
        return start
    if not _LETTER.search(title) and start:
        return truncate(f"{title} — {start}", max_graphemes)
    return title


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
    raise RenderError("too long even without title and summary: the link and hashtags do not fit")


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


class Renderer:
    """Templates compiled once per run; one render per item and account."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = make_environment(config.template_dirs)

    def render(self, item: Item, feed: Feed, account: Account, rules: PostRules, feed_title: str = "") -> Post:
        template = find_template(self.env, feed.template, rules.platform)
        return render_post(
            template,
            item,
            FeedInfo(feed.name, feed_title or feed.name, feed.url),
            rules=rules,
            account=account.name,
            hashtags=feed.hashtags,
            language=post_language(item, feed)[0],
            spoiler_text=feed.content_warning,
            sensitive=feed.sensitive,
            images=feed.images,
            visibility=feed.visibility,
        )
