"""The fast parser path (pure): feedparser-rs, a Rust feed parser, when it is installed.
Its results are turned into the shape relay.parse reads from feedparser."""

from __future__ import annotations

import importlib.util


def available() -> bool:
    """Whether feedparser-rs is installed (`pip install 'relay[fast]'`)."""
    return importlib.util.find_spec("feedparser_rs") is not None
