"""relay: relay feeds to Mastodon and Bluesky, exactly once."""

__version__ = "0.1.0"
