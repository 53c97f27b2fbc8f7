"""The flow: poll → decide → (record | show) → deliver, one function per command: `run_once`
(relay run), `plan` (relay preview) and `seed` (relay seed). A dry run and a preview take the
same path as a real run and skip only the writes and the sends; cli only prints reports."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay import schedule
from relay.config import PRIORITIES, Config, Feed
from relay.context import Context, showing
from relay.errors import RenderError
from relay.models import SENT_ACTIONS, Item, Post
from relay.store import Store, epoch

if TYPE_CHECKING:
    import httpx

    from relay.calls import Call
    from relay.decide import ItemDecision
    from relay.deliver import DeliveryReport
    from relay.poll import FeedPoll, FeedReport
    from relay.render import PostRules, Renderer


@dataclass
class RunReport:
    """What one `relay run` did: the feeds it polled, the accounts it could not start, and
    what delivering did."""

    first_run: bool  # no state before: each feed relays at most its backfill
    polled: list[FeedReport] = field(default_factory=list)
    start_errors: list[str] = field(default_factory=list)  # "account X: cannot start: ..."
    target_warnings: list[str] = field(default_factory=list)
    delivery: DeliveryReport | None = None
    campaigns: list[str] = field(default_factory=list)  # the campaigns whose occurrence was queued

    @property
    def failed(self) -> bool:
        return (
            any(f.status == "error" for f in self.polled)
            or bool(self.start_errors)
            or (self.delivery is not None and self.delivery.failed)
        )


def run_once(config: Config, store: Store, context: Context, feeds: Sequence[Feed]) -> RunReport:
    """One cron pass: poll the feeds that are due, record what is new, deliver within pacing."""
    now = context.clock()
    states = store.feed_states()
    report = RunReport(first_run=not states and bool(feeds))
    due = [f for f in feeds if schedule.is_due(states.get(f.name), epoch(now))]
    if due:
        from relay.poll import Recorder, poll_each

        # each feed is recorded as it comes in, and let go
        with (
            showing(context.progress, "fetching feeds", len(due)) as progress,
            _http_client(context) as client,
            Recorder(store, config, now) as recorder,
        ):
            for feed_poll in poll_each(
                config, store, client, now, feeds=due, conditional=True, fast_parser=context.fast_parser
            ):
                recorder.record(feed_poll)
                report.polled.append(feed_poll.report)
                progress.step(failed=feed_poll.report.status == "error")
    if config.campaigns:
        from relay.calls import due_campaigns, queue_campaigns

        if due_occurrences := due_campaigns(store, config, now):
            from relay.poll import delivery_key
            from relay.targets import record_key

            report.campaigns = queue_campaigns(
                store, config, due_occurrences, now, record_key=record_key, delivery_key=delivery_key
            )
    if not store.has_due_deliveries(epoch(now)):
        return report
    from relay.deliver import deliver, one_line
    from relay.targets import make_target

    targets = {}
    for name, account in config.accounts.items():
        try:
            targets[name] = make_target(account, store, context)
        except sqlite3.Error:
            raise
        except Exception as exc:  # an SDK refusing its settings stops that account only
            report.start_errors.append(f"account {name}: cannot start: {one_line(exc)}")
    try:
        report.delivery = deliver(config, store, targets, context.clock, stopping=context.stopping)
    finally:
        for target in targets.values():
            target.close()
    report.target_warnings = [warning for target in targets.values() for warning in target.warnings]
    return report


def seed(config: Config, store: Store, context: Context, feeds: Sequence[Feed]) -> list[FeedReport]:
    """Mark everything the feeds hold now as seen, without queueing anything."""
    from relay.poll import Recorder, poll_each

    now = context.clock()
    reports = []
    with (
        showing(context.progress, "fetching feeds", len(feeds)) as progress,
        _http_client(context) as client,
        Recorder(store, config, now, seed=True) as recorder,
    ):
        for feed_poll in poll_each(
            config, store, client, now, feeds=feeds, conditional=False, all_items=True, fast_parser=context.fast_parser
        ):
            recorder.record(feed_poll)
            reports.append(feed_poll.report)
            progress.step(failed=feed_poll.report.status == "error")
    return reports


@dataclass(frozen=True)
class PlannedPost:
    """One line of a preview: what the next run would do with one item for one account."""

    feed: str
    key: str
    title: str
    link: str | None
    account: str
    platform: str
    text: str | None
    length: int | None
    limit: int | None
    facets: list[dict[str, Any]]
    embed: dict[str, Any] | None
    language: str
    language_source: str
    action: str  # post | boost | quote | thread | hold | skip
    reason: str | None
    spoiler_text: str | None = None
    original: str | None = None  # the post the item is (a Mastodon status URL, a Bluesky at-uri)
    credit: str | None = None  # the feed's credit on this platform, a live mention
    images: list[dict[str, str]] | None = None  # images: true: the images attached, with their alt text
    # action thread: the replies after the first post, each with its text, length and limit
    thread: list[dict[str, Any]] | None = None
    # the item's image: the thumbnail of the link card relay makes (Bluesky); a Mastodon
    # instance makes its card from the page's own tags
    card_image: str | None = None


@dataclass
class Plan:
    feeds: list[FeedReport]
    posts: list[PlannedPost]


def plan(
    config: Config, store: Store | None, context: Context, feeds: Sequence[Feed], *, all_items: bool = False
) -> Plan:
    """What the next run would post, per account, rendered as it would be sent; writes
    nothing and contacts no account. all_items renders every entry as if new."""
    from relay.deliver import account_budget, no_interval
    from relay.poll import poll_each
    from relay.render import Renderer, post_language
    from relay.schedule import window_closed
    from relay.targets import known_limits, post_rules

    now = context.clock()
    polls = []
    with showing(context.progress, "fetching feeds", len(feeds)) as progress, _http_client(context) as client:
        # preview keeps every feed: it renders them all
        for feed_poll in poll_each(
            config,
            store,
            client,
            now,
            feeds=feeds,
            conditional=False,
            all_items=all_items,
            fast_parser=context.fast_parser,
        ):
            polls.append(feed_poll)
            progress.step(failed=feed_poll.report.status == "error")
    renderer = Renderer(config)
    # each account's rules once: its limits are the state's, read without contacting it
    rules = {name: post_rules(account, known_limits(account, store)) for name, account in config.accounts.items()}
    # what each account may post now (urgent feeds: without min_interval), and what already
    # waits in its outbox, per feed: it goes before anything new of the same priority
    budgets: dict[str, tuple[int, int]] = {}
    waiting: dict[str, dict[str, int]] = {}
    for name, account in config.accounts.items():
        if all_items:
            budgets[name], waiting[name] = (10**9, 10**9), {}
            continue
        budget = account_budget(store, account, now)[0]
        urgent = (
            budget or account_budget(store, dataclasses.replace(account, pacing=no_interval(account.pacing)), now)[0]
        )
        budgets[name], waiting[name] = (budget, urgent), (store.waiting_by_feed(name, epoch(now)) if store else {})
    posts = []
    published: list[float] = []
    for feed_poll in polls:
        for decision in feed_poll.decisions:
            language = post_language(decision.item, feed_poll.feed)
            for post in _planned(config, rules, renderer, feed_poll, decision, language, all_items=all_items):
                posts.append(post)
                published.append(decision.item.published.timestamp() if decision.item.published else float("-inf"))
    # an account outside its posting window: everything waits for it to open
    later = {
        name: f"queued now, posted once the posting window opens ({why.split(': ', 1)[1]})"
        for name, account in config.accounts.items()
        if not all_items and (why := window_closed(account.pacing, now.timestamp()))
    }
    if config.campaigns and not all_items:
        # the campaigns' occurrences the next run queues, first in its outbox
        from relay.calls import campaign_call, campaign_feed, due_campaigns

        for campaign, key, _ in due_campaigns(store, config, now) if store else _every_occurrence(config, now):
            for post in plan_call(
                config, store, campaign_call(config, campaign), key, campaign.to, campaign_feed(campaign.name)
            ):
                posts.insert(0, post)
                published.insert(0, float("-inf"))
    _pace(config, posts, published, budgets, waiting, later)
    return Plan([feed_poll.report for feed_poll in polls], posts)


def _unrendered(
    feed: str,
    key: str,
    item: Item,
    account: str,
    platform: str,
    language: tuple[str, str],
    action: str,
    reason: str | None,
) -> PlannedPost:
    """A preview line before its post is rendered (and when it cannot be)."""
    return PlannedPost(
        feed=feed,
        key=key,
        title=item.title,
        link=item.link or None,
        account=account,
        platform=platform,
        text=None,
        length=None,
        limit=None,
        facets=[],
        embed=None,
        language=language[0],
        language_source=language[1],
        action=action,
        reason=reason,
    )


def _every_occurrence(config: Config, now: datetime) -> list[tuple[Any, str, datetime]]:
    """Without a state, every campaign's occurrence due now."""
    from relay.calls import occurrence

    due = []
    for campaign in config.campaigns:
        found = occurrence(campaign, now)
        if found is not None:
            due.append((campaign, f"campaign:{campaign.name}:{found[0]}", found[1]))
    return due


def _preview_embed(post: Post) -> dict[str, Any] | None:
    """What a Bluesky post will embed: the quoted record (its cid is read when it is sent),
    the images (images: true, bluesky_embed: images), or the link card."""
    if post.platform != "bluesky":
        return post.embed
    if post.action == "quote":
        return {"$type": "app.bsky.embed.record", "record": {"uri": post.original, "cid": None}}
    if post.attach_image and post.images and post.bluesky_embed == "images":
        return {"$type": "app.bsky.embed.images", "images": [{"url": url, "alt": alt} for url, alt in post.images[:4]]}
    return post.embed


def _pace(
    config: Config,
    posts: list[PlannedPost],
    published: list[float],
    budgets: Mapping[str, tuple[int, int]],
    waiting: Mapping[str, Mapping[str, int]],
    later: Mapping[str, str],
) -> None:
    """Mark the posts the next run leaves for later, in the order the run sends them
    (Store.due_deliveries): by priority, then in turns, each feed's oldest first, feeds by
    name within a turn; behind what already waits at the same or a higher priority. An
    urgent feed's post has the budget without min_interval (budgets: normal, urgent)."""
    feeds = {feed.name: feed for feed in config.feeds}

    def level(feed: str) -> int:
        if feed in feeds:
            return PRIORITIES.index(feeds[feed].priority)
        return 0 if feed.startswith("@") else 1  # a call to action goes first

    turns: dict[int, int] = {}
    per_feed: dict[tuple[str, str], list[int]] = {}
    for index, post in enumerate(posts):
        if post.action in SENT_ACTIONS:
            per_feed.setdefault((post.account, post.feed), []).append(index)
    for indices in per_feed.values():
        for turn, index in enumerate(sorted(indices, key=lambda i: (published[i], i))):
            turns[index] = turn

    def is_urgent(feed: str) -> bool:
        return feed in feeds and feeds[feed].urgent

    # as the run does: while min_interval holds the account (normal budget 0), only urgent
    # items go, and only they use the budget
    taken: dict[str, int] = {}
    for index in sorted(turns, key=lambda i: (level(posts[i].feed), turns[i], posts[i].feed, i)):
        post = posts[index]
        normal, urgent = budgets[post.account]
        counted = (lambda feed: True) if normal else is_urgent
        ahead = taken.get(post.account, 0) + sum(
            count
            for feed, count in waiting.get(post.account, {}).items()
            if level(feed) <= level(post.feed) and counted(feed)
        )
        if ahead >= (urgent if is_urgent(post.feed) else normal):
            reason = later.get(post.account, "queued now, posted in a later run (pacing)")
            posts[index] = dataclasses.replace(post, reason=reason)
        else:
            taken[post.account] = taken.get(post.account, 0) + 1


def _planned(
    config: Config,
    rules: Mapping[str, PostRules],
    renderer: Renderer,
    feed_poll: FeedPoll,
    decision: ItemDecision,
    language: tuple[str, str],
    *,
    all_items: bool,
) -> list[PlannedPost]:
    item, feed = decision.item, feed_poll.feed
    feed_title = feed_poll.parsed.title if feed_poll.parsed else ""
    targets = decision.accounts if decision.reason is None else {a: ("skip", decision.reason) for a in feed.to}
    planned = []
    for name, (action, reason) in targets.items():
        account = config.accounts[name]
        post = dataclasses.replace(
            _unrendered(feed.name, item.key, item, name, account.platform, language, action, reason),
            original=item.original or None,
            credit=feed.credit.shown(account.platform) or None,
        )
        if action != "skip" or all_items:
            try:
                rendered = renderer.render(item, feed, account, rules[name], feed_title)
            except RenderError as exc:
                post = dataclasses.replace(post, action="skip", reason=f"render: {exc}")
            else:
                post = dataclasses.replace(
                    post,
                    action=rendered.action if action == "post" else action,
                    text=rendered.text,
                    length=rendered.length,
                    limit=rendered.limit,
                    facets=list(rendered.facets),
                    # a Bluesky quote embeds the original (its cid is read when it is sent)
                    embed=_preview_embed(rendered),
                    language=rendered.language,
                    spoiler_text=rendered.spoiler_text or None,
                    images=[{"url": url, "alt": alt} for url, alt in rendered.images]
                    if rendered.attach_image
                    else None,
                    thread=[
                        {"text": part.text, "length": part.length, "limit": part.limit, "facets": list(part.facets)}
                        for part in rendered.thread
                    ]
                    or None,
                    card_image=rendered.image if rendered.link and rendered.image else None,
                )
        planned.append(post)
    return planned


# what relay check renders every template against: an ordinary item, and one whose every
# field holds a URL (the first URL in a Mastodon post makes its card)
_SAMPLE = Item(
    feed="sample",
    key="sample",
    link="https://example.org/2026/11/exemple-d-article?utm_source=rss",
    canonical_url="example.org/2026/11/exemple-d-article",
    title="Health Data Hub : le gouvernement confirme l'hébergement chez Microsoft",
    summary="Un exemple de résumé, assez long pour être raccourci. " * 20,
    author="Collectif",
    tags=("santé",),
)
_LINKED = Item(
    feed="sample",
    key="sample-urls",
    link="https://example.org/2026/11/item-link",
    canonical_url="example.org/2026/11/item-link",
    title="Title https://title.example/page",
    summary="Summary (https://summary.example/page) and https://summary.example/other",
    author="Author https://author.example/",
    tags=("https://tag.example/",),
    image="https://image.example/picture.jpg",
)


def check_templates(config: Config, now: datetime) -> tuple[list[str], list[str]]:
    """`relay check`: every feed's template rendered for each of its accounts against a
    sample item (problems, one line each), and, for Mastodon, against an item whose every
    field holds a URL: Mastodon's card is the first link in the text, so a template that
    puts another URL before item.link gets a warning."""
    from relay.render import Renderer
    from relay.targets import known_limits, post_rules
    from relay.targets.base import Limits

    renderer = Renderer(config)
    sample = dataclasses.replace(_SAMPLE, published=now)
    problems = []
    for index, feed in enumerate(config.feeds):
        for name in feed.to:
            account = config.accounts[name]
            try:
                renderer.render(sample, feed, account, post_rules(account, known_limits(account, None)))
            except RenderError as exc:
                problems.append(
                    f"{config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for {account.platform}: {exc}"
                )
    if problems:
        return problems, []
    linked = dataclasses.replace(_LINKED, published=now)
    warnings = []
    for index, feed in enumerate(config.feeds):
        # thread: N needs a template that shows the summary (the sample's is too long for one post)
        platforms = {config.accounts[n].platform: config.accounts[n] for n in feed.to} if feed.thread > 1 else {}
        for platform, account in sorted(platforms.items()):
            # a summary longer than the account's posts, whatever their limit
            limit = known_limits(account, None).max_characters
            long = dataclasses.replace(sample, summary=sample.summary * (2 + limit // len(sample.summary)))
            post = renderer.render(long, feed, account, post_rules(account, known_limits(account, None)))
            if post.action != "thread":
                warnings.append(
                    f"{config.path.name}:{feed.line}: feeds[{index}].thread: {feed.template} for {platform}"
                    f" (feed {feed.name}) does not show item.summary: long items are cut, never threaded"
                )
    for index, feed in enumerate(config.feeds):
        # the platforms where the first URL in the text makes the card
        carded = [
            (account, rules)
            for account in (config.accounts[n] for n in feed.to)
            if not (rules := post_rules(account, Limits())).keeps_feed_urls
        ]
        if not carded:
            continue
        account, rules = carded[0]
        try:
            post = renderer.render(linked, feed, account, rules, "Site https://site.example/")
        except RenderError:
            continue
        from relay.text import find_urls

        urls = [post.text[start:end] for start, end in find_urls(post.text)]
        if urls and urls[0] != linked.link:
            source = {linked.image: "item.image", feed.url: "feed.url"}.get(urls[0], urls[0])
            warnings.append(
                f"{config.path.name}:{feed.line}: feeds[{index}].template: {feed.template} for {rules.platform}"
                f" (feed {feed.name}) puts {source} before item.link: {rules.platform.capitalize()}'s card"
                " would show that page"
            )
    return problems, warnings


def write_starter(directory: Path) -> list[str]:
    """`relay init`: a starter feeds.yaml, .env.example and the built-in templates to copy
    from, never over a file that exists; the files written."""
    from relay.catalog import BUILTIN_TEMPLATES

    directory.mkdir(parents=True, exist_ok=True)
    starter = Path(__file__).parent / "starter"
    written = []
    for source, target in (
        (starter / "feeds.yaml", directory / "feeds.yaml"),
        (starter / "env.example", directory / ".env.example"),
    ):
        if not target.exists():
            shutil.copyfile(source, target)
            written.append(str(target))
    (directory / "templates").mkdir(exist_ok=True)
    for template in sorted(BUILTIN_TEMPLATES.glob("*.j2")):
        target = directory / "templates" / template.name
        if not target.exists():
            shutil.copyfile(template, target)
            written.append(str(target))
    return written


def check_accounts(config: Config, store: Store, context: Context) -> list[tuple[str, str, str | None]]:
    """`relay check --online`: each account logged in to and its limits read; (name, what
    the platform says of the account, None) or (name, "", the error)."""
    from relay.targets import make_target
    from relay.targets.base import PublishError
    from relay.targets.mastodon import MastodonTarget

    results: list[tuple[str, str, str | None]] = []
    for name, account in config.accounts.items():
        target = make_target(account, store, context)
        try:
            line = target.check()
            boosts = any(feed.mode_for(name) != "post" for feed in config.feeds if name in feed.to)
            if boosts and isinstance(target, MastodonTarget):
                missing = target.missing_scopes(("read:search", "read:statuses"))
                if missing:
                    line += (
                        f"; warning: the token lacks {' and '.join(missing)}: boosts and quotes cannot find"
                        " their originals (make a token with it, or use mode: post)"
                    )
            results.append((name, line, None))
        except PublishError as exc:
            results.append((name, "", str(exc)))
        finally:
            target.close()
    return results


def _http_client(context: Context) -> httpx.Client:
    if context.http_client is not None:
        return context.http_client()
    from relay.fetch import make_client

    return make_client()


def plan_call(
    config: Config, store: Store | None, call: Call, key: str, to: Sequence[str], feed: str = ""
) -> list[PlannedPost]:
    """`relay post --dry-run`, and a campaign's occurrence in preview: the call rendered for
    each account, as preview shows posts."""
    from relay.calls import POST_FEED, call_feed, call_item
    from relay.render import Renderer
    from relay.targets import known_limits, post_rules

    feed = feed or POST_FEED
    renderer = Renderer(config)
    item = call_item(feed, key, call)
    planned = []
    for name in to:
        account = config.accounts[name]
        post = _unrendered(feed, key, item, name, account.platform, (call.language, "default"), "post", None)
        try:
            rendered = renderer.render(
                item,
                call_feed(feed, call, name),
                account,
                post_rules(account, known_limits(account, store)),
                variables=dict(call.vars),
                trusted=True,
            )
        except RenderError as exc:
            post = dataclasses.replace(post, action="skip", reason=f"render: {exc}")
        else:
            post = dataclasses.replace(
                post,
                text=rendered.text,
                length=rendered.length,
                limit=rendered.limit,
                facets=list(rendered.facets),
                embed=_preview_embed(rendered),
            )
        planned.append(post)
    return planned


def send_call(
    config: Config, store: Store, context: Context, call: Call, key: str, to: Sequence[str], at: datetime | None
) -> tuple[bool, list[int], RunReport | None]:
    """`relay post`: queue the call once for each account, then deliver what is due for
    those accounts now (unless it is for later): (new, its deliveries, the delivery's report)."""
    from relay.calls import POST_FEED, queue_call
    from relay.poll import delivery_key
    from relay.targets import record_key

    now = context.clock()
    new, ids = queue_call(
        store,
        config,
        POST_FEED,
        key,
        call,
        to,
        now=now,
        not_before=at if at and at > now else None,
        record_key=record_key,
        delivery_key=delivery_key,
    )
    if not new or (at is not None and at > now):
        return new, ids, None
    from relay.deliver import deliver, one_line
    from relay.targets import make_target

    report = RunReport(first_run=False)
    targets = {}
    for name in to:
        try:
            targets[name] = make_target(config.accounts[name], store, context)
        except sqlite3.Error:
            raise
        except Exception as exc:
            report.start_errors.append(f"account {name}: cannot start: {one_line(exc)}")
    try:
        report.delivery = deliver(config, store, targets, context.clock)
    finally:
        for target in targets.values():
            target.close()
    report.target_warnings = [warning for target in targets.values() for warning in target.warnings]
    return new, ids, report
