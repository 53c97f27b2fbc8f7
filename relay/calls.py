"""Calls to action: a one-off message (`relay post`) and recurring ones (feeds.yaml's
`campaigns:`), queued in the outbox like feed items, so they are paced, posted exactly once
and kept in history. A call is an item of a feed of its own, "@post" or "@campaign:NAME",
whose payload holds what to render: a template and its variables, or the user's own text."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relay.config import Account, Campaign, Config, Feed
from relay.dedupe import fingerprint
from relay.models import Item, item_payload
from relay.store import Store, epoch

POST_FEED = "@post"
CAMPAIGN_PREFIX = "@campaign:"
TEXT_TEMPLATE = "message"  # the built-in template of a call written as text


@dataclass(frozen=True)
class Call:
    template: str  # TEXT_TEMPLATE for text
    text: str
    link: str
    vars: tuple[tuple[str, str], ...]
    language: str
    hashtags: tuple[str, ...]
    now: bool = False  # `relay post --now`: skips min_interval, never max_per_day or the window


def is_call(feed: str) -> bool:
    return feed.startswith("@")


def campaign_feed(name: str) -> str:
    return CAMPAIGN_PREFIX + name


def call_of(payload: str) -> Call | None:
    data = json.loads(payload).get("call")
    if not data:
        return None
    return Call(
        template=data["template"],
        text=data["text"],
        link=data["link"],
        vars=tuple((str(key), str(value)) for key, value in data["vars"]),
        language=data["language"],
        hashtags=tuple(data["hashtags"]),
        now=bool(data.get("now")),
    )


def call_feed(name: str, call: Call, account: str) -> Feed:
    """The feed a call is rendered as: its template, language and hashtags."""
    return Feed(
        name=name,
        url="",
        every=timedelta(days=1),
        max_age=timedelta(days=3650),
        backfill=0,
        template=call.template,
        language=call.language,
        language_set=True,
        hashtags=call.hashtags,
        to=(account,),
        priority="high",
        urgent=call.now,
    )


def call_item(feed: str, key: str, call: Call) -> Item:
    """A call as an item: a template's `action` is its title and `why` its summary (the
    summary shrinks first); a text call's text is its summary."""
    values = dict(call.vars)
    title = "" if call.template == TEXT_TEMPLATE else values.get("action", values.get("title", ""))
    summary = call.text or values.get("why", values.get("summary", ""))
    return Item(feed=feed, key=key, link=call.link, canonical_url=None, title=title, summary=summary, key_link=None)


def call_key(call: Call, to: Sequence[str], at: datetime | None) -> str:
    """The same call, to the same accounts, at the same time, is one call: running
    `relay post` twice by mistake queues it once."""
    fields = [
        call.template,
        call.text,
        call.link,
        json.dumps(call.vars),
        ",".join(sorted(to)),
        at.isoformat() if at else "",
    ]
    return "post:" + hashlib.sha256("\0".join(fields).encode()).hexdigest()[:32]


def queue_call(
    store: Store,
    config: Config,
    feed: str,
    key: str,
    call: Call,
    to: Sequence[str],
    *,
    now: datetime,
    not_before: datetime | None,
    record_key: Callable[[Account, datetime], str | None],
    delivery_key: Callable[[str, str, str], str],
    published: datetime | None = None,  # a campaign's occurrence: the time it is for
) -> tuple[bool, list[int]]:
    """Queue a call for each account of `to`, once: (whether it is new, its deliveries)."""
    item = call_item(feed, key, call)
    key_hash = fingerprint(key)
    payload: dict[str, Any] = {**item_payload(item), "call": dataclasses.asdict(call)}
    with store.transaction():
        new = not store.known_keys(feed, [key_hash])
        item_id = store.insert_item(
            feed,
            key_hash,
            None,
            item.title or item.summary[:200],
            call.link or None,
            epoch(published) if published else None,
            epoch(now),
            payload,
        )
        if new:
            for name in to:
                store.insert_delivery(
                    item_id,
                    name,
                    "queued",
                    delivery_key(name, feed, key),
                    record_key(config.accounts[name], now),
                    epoch(now),
                    not_before=epoch(not_before) if not_before else None,
                )
    ids = [d.id for d in store.deliveries(feed=feed) if d.item_id == item_id]
    return new, ids


def _step(campaign: Campaign, now: datetime) -> int:
    """How many `every` have passed since `from`, on the wall clock of from's zone: a weekly
    call at 09:00 stays at 09:00 across daylight saving."""
    zone = campaign.start.tzinfo
    elapsed = now.astimezone(zone).replace(tzinfo=None) - campaign.start.replace(tzinfo=None)
    step = int(elapsed / campaign.every)
    if _at(campaign, step) > now:  # the wall clock's hour skipped or repeated
        step -= 1
    return step


def _at(campaign: Campaign, step: int) -> datetime:
    return (campaign.start.replace(tzinfo=None) + step * campaign.every).replace(tzinfo=campaign.start.tzinfo)


def occurrence(campaign: Campaign, now: datetime) -> tuple[int, datetime] | None:
    """The campaign's latest occurrence due at now, and its number: one missed by runs
    that did not happen is posted once, late; none once the campaign is over (now past
    until)."""
    if now < campaign.start or (campaign.until is not None and now > campaign.until):
        return None
    step = _step(campaign, now)
    return (step, _at(campaign, step)) if step >= 0 else None


def next_occurrence(campaign: Campaign, now: datetime) -> datetime | None:
    if now < campaign.start:
        return campaign.start
    when = _at(campaign, _step(campaign, now) + 1)
    return when if campaign.until is None or when <= campaign.until else None


def campaign_call(config: Config, campaign: Campaign) -> Call:
    return Call(
        template=campaign.template,
        text=campaign.text,
        link=campaign.link,
        vars=campaign.vars,
        language=config.language,
        hashtags=config.hashtags,
    )


def due_campaigns(store: Store, config: Config, now: datetime) -> list[tuple[Campaign, str, datetime]]:
    """The campaigns whose occurrence due now is not queued yet, with that occurrence's key:
    its number, which a time zone read differently does not change; and never a second one
    within half an `every` of the last (an edited `from` or `every` starts no extra post)."""
    due = []
    for campaign in config.campaigns:
        found = occurrence(campaign, now)
        if found is None:
            continue
        feed = campaign_feed(campaign.name)
        key = f"campaign:{campaign.name}:{found[0]}"
        if store.known_keys(feed, [fingerprint(key)]):
            continue
        last = store.last_published_at(feed)  # the time the last occurrence queued was for
        if last is not None and found[1].timestamp() - last < campaign.every.total_seconds() / 2:
            continue
        due.append((campaign, key, found[1]))
    return due


def queue_campaigns(
    store: Store,
    config: Config,
    due: Sequence[tuple[Campaign, str, datetime]],
    now: datetime,
    *,
    record_key: Callable[[Account, datetime], str | None],
    delivery_key: Callable[[str, str, str], str],
) -> list[str]:
    """Queue each due occurrence (due_campaigns), once; the campaigns' names."""
    queued = []
    for campaign, key, when in due:
        new, _ = queue_call(
            store,
            config,
            campaign_feed(campaign.name),
            key,
            campaign_call(config, campaign),
            campaign.to,
            now=now,
            not_before=None,
            record_key=record_key,
            delivery_key=delivery_key,
            published=when,
        )
        if new:
            queued.append(campaign.name)
    return queued
