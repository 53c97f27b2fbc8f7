"""Targets: where posts go, and what each platform allows. SDKs are imported lazily inside
each module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.targets.base import Limits

if TYPE_CHECKING:
    from datetime import datetime

    from relay.config import Account
    from relay.context import Context
    from relay.render import PostRules
    from relay.store import Store
    from relay.targets.base import Target


def known_limits(account: Account, store: Store | None) -> Limits:
    """An account's text limits without contacting it: the account's max_characters, else
    the instance's limits cached in the state by `relay check --online` or a run, else
    Mastodon's defaults. Preview and dry runs use these; a run's Mastodon target reads the
    instance and caches what preview then uses. (Bluesky's limits are fixed by its lexicon:
    render applies them whatever these say.)"""
    cached = (store.account_state(account.name).limits if store else None) or {}
    return Limits(
        max_characters=int(account.max_characters or cached.get("max_characters") or Limits().max_characters),
        url_length=int(cached.get("url_length") or Limits().url_length),
    )


def record_key(account: Account, now: datetime) -> str | None:
    """The record key a delivery keeps across attempts, where the platform has one: a
    Bluesky post is written at a TID chosen before the first attempt, so a retry after a
    crash cannot post twice. Mastodon needs none (its idempotency key does that)."""
    if account.platform == "bluesky":
        from relay.targets.bluesky import new_tid

        return new_tid(now)
    return None


def post_rules(account: Account, limits: Limits) -> PostRules:
    """The account's platform rules for a post's text (counting, facets, card)."""
    if account.platform == "bluesky":
        from relay.targets.bluesky import BlueskyText

        return BlueskyText()
    from relay.targets.mastodon import MastodonText

    return MastodonText(limits)


def make_target(account: Account, store: Store, context: Context) -> Target:
    """The account's target; context.dry_run gives one that collects posts instead."""
    if context.dry_run:
        from relay.targets.dry_run import DryRunTarget

        return DryRunTarget(account, known_limits(account, store))
    if account.platform == "mastodon":
        from relay.targets.mastodon import MastodonTarget

        return MastodonTarget(account, store, context)
    from relay.targets.bluesky import BlueskyTarget

    return BlueskyTarget(account, store, context)
