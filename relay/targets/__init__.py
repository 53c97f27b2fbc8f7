"""Targets: where posts go. SDKs are imported lazily inside each module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.config import Account
    from relay.store import Store
    from relay.targets.base import Target


def make_target(account: Account, store: Store, *, dry_run: bool = False, allow_private: bool = False) -> Target:
    """allow_private lifts the network policy for pages and images named by feed content
    (feeds.yaml `network: {allow_private: true}`)."""
    if dry_run:
        from relay.pipeline import account_limits
        from relay.targets.dry_run import DryRunTarget

        return DryRunTarget(account, account_limits(account, store))
    if account.platform == "mastodon":
        from relay.targets.mastodon import MastodonTarget

        return MastodonTarget(account, store, allow_private=allow_private)
    from relay.targets.bluesky import BlueskyTarget

    return BlueskyTarget(account, store, allow_private=allow_private)
