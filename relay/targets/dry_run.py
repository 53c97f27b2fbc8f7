"""A target that collects posts instead of sending them: the real path, minus the send."""

from __future__ import annotations

from relay.config import Account
from relay.models import Post
from relay.targets.base import Limits, Receipt, Reply


class DryRunTarget:
    def __init__(self, account: Account, limits: Limits) -> None:
        self.account = account
        self._limits = limits
        self.posts: list[Post] = []
        self.warnings: list[str] = []

    def limits(self) -> Limits:
        return self._limits

    def publish(self, post: Post, *, idempotency_key: str, rkey: str | None, reply_to: Reply | None = None) -> Receipt:
        self.posts.append(post)
        return Receipt(remote_id=f"dry-run:{idempotency_key}", url="")

    def find(self, *, idempotency_key: str, rkey: str | None) -> Receipt | None:
        return None

    def check(self) -> str:
        return f"{self.account.name}: dry run, not contacted"

    def close(self) -> None:
        pass
