"""Which new items are relayed (pure): include/exclude, maximum age."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from relay.models import Item


def _matches(pattern: str, text: str) -> bool:
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re.search(pattern[1:-1], text, re.IGNORECASE) is not None
    return pattern.casefold() in text.casefold()


def filter_reason(
    item: Item,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    max_age: timedelta,
    now: datetime,
) -> str | None:
    """Why this item is not relayed, or None when it passes."""
    haystack = "\n".join((item.title, item.summary, " ".join(item.tags)))
    for pattern in exclude:
        if _matches(pattern, haystack):
            return f"excluded by {pattern!r}"
    if include and not any(_matches(p, haystack) for p in include):
        return "matches none of include"
    if item.published is not None and item.published < now - max_age:
        days = (now - item.published).days
        return f"older than max_age ({days} days old)"
    return None
