"""SQLite state: feeds, items, deliveries (the outbox), sessions, accounts. One file, WAL,
migrations by PRAGMA user_version, files created 0600. Times are UTC epoch seconds."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from relay.errors import LockedError, StateError
from relay.models import DeliveryState, Move, Post

DB_NAME = "relay.db"


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Statement by statement: executescript() would commit the migration's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE feeds (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            etag TEXT,
            last_modified TEXT,
            body_hash BLOB,
            last_polled_at REAL,
            last_ok_at REAL,
            next_due_at REAL,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            entries INTEGER
        );
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            feed TEXT NOT NULL,
            key_hash BLOB NOT NULL,
            canonical BLOB,
            title TEXT NOT NULL,
            link TEXT,
            published_at REAL,
            first_seen_at REAL NOT NULL,
            payload TEXT NOT NULL,
            UNIQUE (feed, key_hash)
        );
        CREATE INDEX items_canonical ON items (canonical);
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items (id),
            account TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('queued', 'sending', 'posted', 'failed', 'held', 'dropped')),
            idempotency_key TEXT NOT NULL,
            rkey TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            queued_at REAL NOT NULL,
            next_attempt_at REAL,
            last_attempt_at REAL,
            posted_at REAL,
            remote_id TEXT,
            remote_url TEXT,
            last_error TEXT,
            post TEXT,
            UNIQUE (item_id, account)
        );
        CREATE INDEX deliveries_outbox ON deliveries (account, state, next_attempt_at);
        CREATE INDEX deliveries_posted ON deliveries (account, posted_at);
        CREATE TABLE sessions (
            account TEXT PRIMARY KEY,
            data TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE accounts (
            name TEXT PRIMARY KEY,
            blocked_until REAL,
            last_error TEXT,
            limits TEXT,
            limits_at REAL,
            logins INTEGER NOT NULL DEFAULT 0
        );
        """,
    )


def _v2(db: sqlite3.Connection) -> None:
    # the 24-hour flood guard counts a feed's items by first sight
    db.execute("CREATE INDEX items_feed_seen ON items (feed, first_seen_at)")


def _v3(db: sqlite3.Connection) -> None:
    # when an attempt first may have posted without relay knowing: Mastodon honours the
    # idempotency key for an hour only, so a resend after that could post twice
    db.execute("ALTER TABLE deliveries ADD COLUMN doubt_since REAL")


def _v4(db: sqlite3.Connection) -> None:
    # the DIDs of the Bluesky handles feeds.yaml credits, as resolveHandle gave them
    db.execute("CREATE TABLE handles (handle TEXT PRIMARY KEY, did TEXT NOT NULL, resolved_at REAL NOT NULL)")


def _v5(db: sqlite3.Connection) -> None:
    # a thread's replies (thread: N), each sent as a delivery of its own: its state, its
    # keys (a Mastodon idempotency key, a Bluesky record key) chosen with the thread, and
    # what the platform answered; part 1 is the first reply, the delivery itself part 0
    _run_script(
        db,
        """
        CREATE TABLE thread_parts (
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            part INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'posted', 'failed')),
            idempotency_key TEXT NOT NULL,
            rkey TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            last_attempt_at REAL,
            doubt_since REAL,
            posted_at REAL,
            remote_id TEXT,
            remote_url TEXT,
            cid TEXT,
            last_error TEXT,
            PRIMARY KEY (delivery_id, part)
        );
        CREATE INDEX thread_parts_waiting ON thread_parts (state, next_attempt_at);
        """,
    )


def _v6(db: sqlite3.Connection) -> None:
    # alerts (relay.alerts): since when a feed fails; the conditions a run sees that the
    # state does not keep otherwise (an account stopped, the lock held too long); and the
    # problems already reported, each reported once when it starts and once when it ends
    _run_script(
        db,
        """
        ALTER TABLE feeds ADD COLUMN failing_since REAL;
        CREATE TABLE conditions (key TEXT PRIMARY KEY, since REAL NOT NULL, text TEXT NOT NULL);
        CREATE TABLE alerted (key TEXT PRIMARY KEY, text TEXT NOT NULL, severity TEXT NOT NULL, at REAL NOT NULL);
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
SCHEMA_VERSION = len(MIGRATIONS)


def epoch(when: datetime) -> float:
    return when.timestamp()


@dataclass(frozen=True)
class AccountState:
    """What the state file knows of an account: a pause the platform asked for, the
    instance's limits cached by `relay check --online` or a run, logins counted."""

    blocked_until: float | None = None
    last_error: str | None = None
    limits: dict[str, Any] | None = None
    limits_at: float | None = None
    logins: int = 0


@dataclass(frozen=True)
class FeedState:
    name: str
    url: str
    etag: str | None
    last_modified: str | None
    body_hash: bytes | None
    last_polled_at: float | None
    last_ok_at: float | None
    next_due_at: float | None
    consecutive_failures: int
    last_error: str | None
    entries: int | None
    failing_since: float | None = None  # the first failure since the feed last answered


@dataclass(frozen=True)
class Delivery:
    id: int
    item_id: int
    account: str
    state: DeliveryState
    idempotency_key: str
    rkey: str | None
    attempts: int
    queued_at: float
    next_attempt_at: float | None
    last_attempt_at: float | None
    posted_at: float | None
    remote_id: str | None
    remote_url: str | None
    last_error: str | None
    post: Post | None  # as rendered for the first attempt, sent unchanged by every retry
    feed: str
    title: str
    link: str | None
    payload: str
    first_seen_at: float = 0.0
    doubt_since: float | None = None  # an attempt may have posted without relay knowing


@dataclass(frozen=True)
class ThreadPart:
    """One reply of a thread: its own state, keys and answer (Store.thread_parts)."""

    delivery_id: int
    part: int  # 1 is the first reply
    state: str  # queued, sending, posted or failed
    idempotency_key: str
    rkey: str | None
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    doubt_since: float | None
    posted_at: float | None
    remote_id: str | None
    remote_url: str | None
    cid: str | None
    last_error: str | None


_PART_COLUMNS = (
    "delivery_id, part, state, idempotency_key, rkey, attempts, next_attempt_at, last_attempt_at, doubt_since,"
    " posted_at, remote_id, remote_url, cid, last_error"
)


# a posted thread (deliveries d) whose next reply to send is due: interrupted ('sending'), or
# queued and its time come; a reply waiting for its retry keeps those after it waiting too
_NEXT_PART_DUE = (
    "EXISTS (SELECT 1 FROM thread_parts p WHERE p.delivery_id = d.id"
    " AND p.part = (SELECT MIN(q.part) FROM thread_parts q WHERE q.delivery_id = d.id AND q.state != 'posted')"
    " AND (p.state = 'sending' OR (p.state = 'queued' AND p.next_attempt_at <= ?)))"
)


class ItemRow(NamedTuple):
    """An item as insert_item and insert_items take it."""

    feed: str
    key_hash: bytes
    canonical: bytes | None
    title: str
    link: str | None
    published: float | None
    first_seen: float
    payload: dict[str, Any]


class FeedOk(NamedTuple):
    """A feed's state after a poll that succeeded, as save_feeds_ok takes it."""

    name: str
    url: str
    etag: str | None
    last_modified: str | None
    body_hash: bytes | None
    polled_at: float
    next_due: float
    entries: int | None


_UNBOUNDED = 2**63 - 1  # an item id larger than any
_FEEDS_PER_STATEMENT = 100  # 9 values each: within the 999 values a statement may hold before SQLite 3.32


def _chunks(values: Iterable[bytes], size: int = 500) -> Iterator[list[bytes]]:
    """Values in lists short enough for one IN (...) of SQLite."""
    chunk: list[bytes] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _delivery(row: tuple[Any, ...]) -> Delivery:
    values = list(row)
    values[3] = DeliveryState(values[3])
    values[14] = Post.from_json(json.loads(values[14])) if values[14] else None  # the post as first sent
    return Delivery(*values)


PRIVATE_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "relay.lock")


def tighten_permissions(state_dir: Path) -> str | None:
    """Make the state folder 0700 and its files 0600 when they are wider: they hold session
    tokens. A one-line warning saying what changed, or None."""
    changed = []
    for path, private in ((state_dir, 0o700), *((state_dir / name, 0o600) for name in PRIVATE_FILES)):
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            path.chmod(private)
            changed.append(f"{path.name or path} {mode:04o} -> {private:04o}")
    if not changed:
        return None
    return f"{state_dir}: others could read relay's state; tightened {', '.join(changed)}"


def state_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


class Store:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self.warnings: list[str] = []  # one line each, for the command to print
        self.created = False  # no state file existed before this open

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating if needed) the state file for writing, migrating it."""
        if state_dir.exists() and not state_dir.is_dir():
            raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        warning = tighten_permissions(state_dir)
        path = state_path(state_dir)
        old_umask = os.umask(0o077)  # the WAL and SHM files too
        try:
            created = not path.exists()
            if created:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(path, timeout=10, isolation_level=None)
            store = cls(db, path)
            store.created = created
            if warning:
                store.warnings.append(warning)
            store._prepare()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: not a usable relay state file ({exc}); move it away to start afresh") from None
        finally:
            os.umask(old_umask)
        return store

    @classmethod
    @contextlib.contextmanager
    def scratch_copy(cls, state_dir: Path) -> Iterator[Store]:
        """A throwaway copy of the state, so a dry run takes the real path and writes nothing.
        Private (0700 folder, 0600 files: it holds session tokens) and removed on the way
        out, even on Ctrl-C."""
        path = state_path(state_dir)
        old_umask = os.umask(0o077)
        scratch = Path(tempfile.mkdtemp(prefix="relay-dry-run-"))
        try:
            if path.exists():
                source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
                target = sqlite3.connect(scratch / DB_NAME)
                try:
                    source.backup(target)
                except sqlite3.DatabaseError as exc:
                    raise StateError(f"{path}: not a usable relay state file ({exc})") from None
                finally:
                    source.close()
                    target.close()
            os.umask(old_umask)
            store = cls.open(scratch)
            try:
                yield store
            finally:
                store.close()
        finally:
            os.umask(old_umask)
            shutil.rmtree(scratch, ignore_errors=True)

    @classmethod
    def open_read_only(cls, state_dir: Path) -> Store | None:
        """For preview: None when there is no state yet; never creates or migrates."""
        if state_dir.exists() and not state_dir.is_dir():
            raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
        path = state_path(state_dir)
        if not path.exists():
            return None
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10, isolation_level=None)
            store = cls(db, path)
            version = store._check_version()
            if version < SCHEMA_VERSION:
                raise StateError(
                    f"{path}: written by an older relay; run `relay run` or `relay status` once to upgrade it"
                )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: not a usable relay state file ({exc})") from None
        return store

    def _check_version(self) -> int:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer relay (schema {version}, this relay knows"
                f" {SCHEMA_VERSION}); upgrade relay"
            )
        if version:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"feeds", "items", "deliveries"} <= tables:
                raise StateError(f"{self.path}: state file is damaged (tables missing); move it away to start afresh")
        return version

    def _prepare(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        version = self._check_version()
        if version == 0:
            tables = list(self.db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
            if tables:
                raise StateError(f"{self.path}: not a relay state file (it has other tables)")
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            # SQLite may already have rolled back (a full disk); do not hide the first error
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def feed_state(self, name: str) -> FeedState | None:
        row = self.db.execute(
            "SELECT name, url, etag, last_modified, body_hash, last_polled_at, last_ok_at,"
            " next_due_at, consecutive_failures, last_error, entries, failing_since FROM feeds WHERE name = ?",
            (name,),
        ).fetchone()
        return FeedState(*row) if row else None

    def feed_states(self) -> dict[str, FeedState]:
        rows = self.db.execute(
            "SELECT name, url, etag, last_modified, body_hash, last_polled_at, last_ok_at,"
            " next_due_at, consecutive_failures, last_error, entries, failing_since FROM feeds"
        )
        return {row[0]: FeedState(*row) for row in rows}

    def record_feed_error(self, name: str, url: str, error: str, now: float, next_due: float) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO feeds (name, url, last_polled_at, next_due_at, consecutive_failures, last_error,"
                " failing_since) VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
                " last_polled_at = excluded.last_polled_at, next_due_at = excluded.next_due_at,"
                " consecutive_failures = consecutive_failures + 1, last_error = excluded.last_error,"
                " failing_since = COALESCE(failing_since, excluded.failing_since)",
                (name, url, now, next_due, error, now),
            )

    def save_feeds_ok(self, feeds: Sequence[FeedOk]) -> None:
        """The state of many feeds that brought nothing new, in one statement (atomic on its
        own): a poll where most feeds answer 304 writes them in a few statements, not one
        transaction each."""
        for start in range(0, len(feeds), _FEEDS_PER_STATEMENT):
            chunk = feeds[start : start + _FEEDS_PER_STATEMENT]
            self.db.execute(
                "INSERT INTO feeds (name, url, etag, last_modified, body_hash, last_polled_at, last_ok_at,"
                " next_due_at, consecutive_failures, last_error, entries) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?)"] * len(chunk))
                + " ON CONFLICT (name) DO UPDATE SET"
                " url = excluded.url, etag = excluded.etag, last_modified = excluded.last_modified,"
                " body_hash = COALESCE(excluded.body_hash, body_hash), last_polled_at = excluded.last_polled_at,"
                " last_ok_at = excluded.last_ok_at, next_due_at = excluded.next_due_at,"
                " consecutive_failures = 0, last_error = NULL, entries = COALESCE(excluded.entries, entries),"
                " failing_since = NULL",
                [
                    value
                    for feed in chunk
                    for value in (
                        feed.name,
                        feed.url,
                        feed.etag,
                        feed.last_modified,
                        feed.body_hash,
                        feed.polled_at,
                        feed.polled_at,
                        feed.next_due,
                        feed.entries,
                    )
                ],
            )

    def feed_key_hashes(self, feed: str, limit: int = 1000) -> frozenset[bytes]:
        """The fingerprints of the item keys the state holds for a feed, its newest `limit`:
        enough to spare the parser the entries a feed still shows (it shows at most 500), and
        bounded, as a feed's history is not."""
        rows = self.db.execute("SELECT key_hash FROM items WHERE feed = ? ORDER BY id DESC LIMIT ?", (feed, limit))
        return frozenset(row[0] for row in rows)

    def known_keys(self, feed: str, key_hashes: Iterable[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for chunk in _chunks(key_hashes):
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT key_hash FROM items WHERE feed = ? AND key_hash IN ({marks})", (feed, *chunk)
                )
            )
        return found

    def recent_item_counts(self, feeds: Iterable[str], since: float) -> dict[str, int]:
        """Per feed: items first seen since `since` that were queued or held for an account
        (items only marked seen do not count). One query for all feeds."""
        names = list(feeds)
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT i.feed, COUNT(*) FROM items i WHERE i.feed IN ({marks}) AND i.first_seen_at >= ?"
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.item_id = i.id) GROUP BY i.feed",
            (*names, since),
        )
        return {feed: int(count) for feed, count in rows}

    def hold_waiting(self, feed: str, reason: str) -> int:
        """Hold every queued delivery of a feed (inside the poll's transaction)."""
        cursor = self.db.execute(
            "UPDATE deliveries SET state = 'held', last_error = ? WHERE state = 'queued'"
            " AND item_id IN (SELECT id FROM items WHERE feed = ?)",
            (reason, feed),
        )
        return cursor.rowcount

    def last_item_id(self) -> int:
        """The newest item's id: what a poll started with (items with a larger id are its own)."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])

    def seen_elsewhere(self, canonicals: Iterable[bytes], feed: str, *, before: int | None = None) -> dict[bytes, str]:
        """For each canonical URL another feed already holds an item of (relayed or not),
        one such feed; with before, among the items up to that id."""
        found: dict[bytes, str] = {}
        last = _UNBOUNDED if before is None else before
        for chunk in _chunks(canonicals):
            rows = self.db.execute(
                f"SELECT canonical, feed FROM items WHERE canonical IN ({','.join('?' * len(chunk))}) AND feed != ?"
                " AND id <= ?",
                (*chunk, feed, last),
            )
            for canonical, other in rows:
                found.setdefault(canonical, other)
        return found

    def relayed(
        self, canonicals: Iterable[bytes], *, before: int | None = None
    ) -> dict[tuple[bytes, str], tuple[str, DeliveryState]]:
        """For each (canonical URL, account): the feed through which the article already went
        (or is queued to go) to the account, and that delivery's state, posted or sending
        first. A held or failed delivery does not count: another feed's copy must not be
        silenced by one that may never be posted. With before, among the items up to that id."""
        found: dict[tuple[bytes, str], tuple[str, DeliveryState]] = {}
        last = _UNBOUNDED if before is None else before
        for chunk in _chunks(set(canonicals)):
            rows = self.db.execute(
                "SELECT items.canonical, deliveries.account, items.feed, deliveries.state FROM items"
                " JOIN deliveries ON deliveries.item_id = items.id"
                f" WHERE items.canonical IN ({','.join('?' * len(chunk))}) AND items.id <= ?"
                " AND +deliveries.state IN ('queued', 'sending', 'posted') ORDER BY deliveries.state = 'queued'",
                (*chunk, last),
            )
            for canonical, account, feed, state in rows:
                found.setdefault((canonical, account), (feed, DeliveryState(state)))
        return found

    def posted_duplicate(self, delivery_id: int) -> str | None:
        """The feed through which this delivery's article was already posted to its account
        (a held copy released after another feed's copy went out)."""
        row = self.db.execute(
            "SELECT oi.feed FROM deliveries d JOIN items i ON i.id = d.item_id"
            " JOIN items oi ON oi.canonical = i.canonical JOIN deliveries od ON od.item_id = oi.id"
            # '+' keeps SQLite off the (account, state) index, which would walk every post
            # of the account: the copies of one article are found by its canonical URL
            " WHERE d.id = ? AND +od.account = d.account AND od.id != d.id AND +od.state = 'posted' LIMIT 1",
            (delivery_id,),
        ).fetchone()
        return row[0] if row else None

    def mark_dropped(self, delivery_id: int, reason: str) -> None:
        self._transition(delivery_id, DeliveryState.DROPPED, (DeliveryState.QUEUED,), "last_error = ?", (reason,))

    def insert_items(self, rows: Iterable[ItemRow]) -> None:
        """Items only marked seen, in one statement (a first poll of many feeds)."""
        self.db.executemany(
            "INSERT INTO items (feed, key_hash, canonical, title, link, published_at, first_seen_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (feed, key_hash) DO NOTHING",
            ((*row[:7], json.dumps(row.payload, ensure_ascii=False)) for row in rows),
        )

    def insert_item(
        self,
        feed: str,
        key_hash: bytes,
        canonical: bytes | None,
        title: str,
        link: str | None,
        published: float | None,
        now: float,
        payload: dict[str, Any],
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO items (feed, key_hash, canonical, title, link, published_at, first_seen_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (feed, key_hash) DO NOTHING",
            (feed, key_hash, canonical, title, link, published, now, json.dumps(payload, ensure_ascii=False)),
        )
        if cursor.rowcount == 0:
            row = self.db.execute("SELECT id FROM items WHERE feed = ? AND key_hash = ?", (feed, key_hash)).fetchone()
            return int(row[0])
        return int(cursor.lastrowid or 0)

    def insert_delivery(
        self,
        item_id: int,
        account: str,
        state: str,
        idempotency_key: str,
        rkey: str | None,
        now: float,
        *,
        not_before: float | None = None,  # a call to action scheduled for later (relay post --at)
    ) -> None:
        self.db.execute(
            "INSERT INTO deliveries (item_id, account, state, idempotency_key, rkey, queued_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_id, account) DO NOTHING",
            (item_id, account, state, idempotency_key, rkey, now, not_before if not_before is not None else now),
        )

    _DELIVERY_COLUMNS = (
        "d.id, d.item_id, d.account, d.state, d.idempotency_key, d.rkey, d.attempts, d.queued_at,"
        " d.next_attempt_at, d.last_attempt_at, d.posted_at, d.remote_id, d.remote_url, d.last_error,"
        " d.post, i.feed, i.title, i.link, i.payload, i.first_seen_at, d.doubt_since"
    )

    def deliveries(
        self,
        *,
        states: Iterable[DeliveryState] | None = None,
        account: str | None = None,
        feed: str | None = None,
        ids: Iterable[int] | None = None,
        newest_posted_first: bool = False,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Deliveries with their item, oldest first (or the newest posts first)."""
        where: list[str] = ["1"]
        params: list[Any] = []
        for column, value in (("d.account", account), ("i.feed", feed)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for column, values in (("d.state", states), ("d.id", ids)):
            if values is not None:
                chosen = list(values)
                where.append(f"{column} IN ({','.join('?' * len(chosen))})")
                params += chosen
        sql = (
            f"SELECT {self._DELIVERY_COLUMNS} FROM deliveries d JOIN items i ON i.id = d.item_id"
            f" WHERE {' AND '.join(where)} ORDER BY {'d.posted_at DESC' if newest_posted_first else 'd.id'}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_delivery(row) for row in self.db.execute(sql, params)]

    def delivery(self, delivery_id: int) -> Delivery | None:
        found = self.deliveries(ids=[delivery_id])
        return found[0] if found else None

    def has_due_deliveries(self, now: float) -> bool:
        """Something to send now: an in-doubt delivery, or a queued one whose time has come."""
        row = self.db.execute(
            "SELECT 1 FROM deliveries WHERE state = 'sending' OR (state = 'queued' AND next_attempt_at <= ?)"
            " UNION ALL SELECT 1 FROM thread_parts p JOIN deliveries d ON d.id = p.delivery_id"
            f" WHERE p.state IN ('queued', 'sending') AND d.state = 'posted' AND {_NEXT_PART_DUE}"
            " LIMIT 1",
            (now, now),
        ).fetchone()
        return row is not None

    def waiting_count(self, account: str) -> int:
        """Deliveries queued or being sent to account: they go before anything new."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE account = ? AND state IN ('queued', 'sending')", (account,)
        ).fetchone()
        return int(row[0])

    def due_deliveries(
        self, account: str, now: float, limit: int, levels: Mapping[str, int] | None = None
    ) -> list[Delivery]:
        """In-doubt ('sending') deliveries first, then the queue by priority level (levels:
        a feed's level, 0 first; a feed not named is level 1), and within a level in fair
        turns: each feed's deliveries by when relay first saw the item (never the feed's
        own date, which the feed controls; that date only orders the items first seen
        together), one per feed per turn; within a turn, feeds that posted least to this
        account in the last 24 hours, then the one waiting longest, go first."""
        named = sorted((levels or {}).items())
        level_table = (
            "level (feed, level) AS (VALUES " + ",".join("(?, ?)" for _ in named) + "), "
            if named
            else "level (feed, level) AS (SELECT NULL, NULL WHERE 0), "
        )
        rows = self.db.execute(
            f"WITH {level_table}recent AS ("
            "  SELECT i.feed, COUNT(*) AS posts FROM deliveries d JOIN items i ON i.id = d.item_id"
            "  WHERE d.account = ? AND d.state = 'posted' AND d.posted_at >= ? GROUP BY i.feed"
            f") SELECT {self._DELIVERY_COLUMNS} FROM deliveries d JOIN items i ON i.id = d.item_id"
            " LEFT JOIN recent ON recent.feed = i.feed LEFT JOIN level ON level.feed = i.feed"
            " WHERE d.account = ? AND (d.state = 'sending' OR (d.state = 'queued' AND d.next_attempt_at <= ?))"
            " ORDER BY d.state = 'queued',"
            "  COALESCE(level.level, 1),"
            "  ROW_NUMBER() OVER (PARTITION BY i.feed ORDER BY i.first_seen_at, i.published_at, d.id),"
            "  COALESCE(recent.posts, 0),"
            "  MIN(i.first_seen_at) OVER (PARTITION BY i.feed),"
            "  i.feed, d.id"
            f" LIMIT {int(limit)}",
            (*(value for pair in named for value in pair), account, now - 86400, account, now),
        )
        return [_delivery(row) for row in rows]

    def waiting_by_feed(self, account: str, now: float) -> dict[str, int]:
        """Deliveries due to account (queued and their time come, or being sent), per feed:
        they go before anything new of the same priority."""
        rows = self.db.execute(
            "SELECT i.feed, COUNT(*) FROM deliveries d JOIN items i ON i.id = d.item_id"
            " WHERE d.account = ? AND (d.state = 'sending' OR (d.state = 'queued' AND d.next_attempt_at <= ?))"
            " GROUP BY i.feed",
            (account, now),
        )
        return {feed: int(count) for feed, count in rows}

    def mark_sending(
        self, delivery_id: int, now: float, post: Post, parts: Sequence[tuple[str, str | None]] = ()
    ) -> None:
        """The post is kept as first rendered: every later attempt sends exactly it. A
        thread's replies (parts: each one's idempotency key and record key) are queued with
        it, in the same transaction, the first time only."""
        serialised = json.dumps(post.to_json(), ensure_ascii=False)
        self._transition(
            delivery_id,
            DeliveryState.SENDING,
            (DeliveryState.QUEUED, DeliveryState.SENDING),  # sending again: an interrupted attempt
            "attempts = attempts + 1, last_attempt_at = ?, post = COALESCE(post, ?)",
            (now, serialised),
            also=[
                (
                    "INSERT INTO thread_parts (delivery_id, part, state, idempotency_key, rkey, next_attempt_at)"
                    " VALUES (?, ?, 'queued', ?, ?, ?) ON CONFLICT (delivery_id, part) DO NOTHING",
                    (delivery_id, number, key, rkey, now),
                )
                for number, (key, rkey) in enumerate(parts, start=1)
            ],
        )

    def mark_posted(self, delivery_id: int, now: float, remote_id: str, remote_url: str) -> None:
        self._transition(
            delivery_id,
            DeliveryState.POSTED,
            (DeliveryState.SENDING,),
            "posted_at = ?, remote_id = ?, remote_url = ?, last_error = NULL",
            (now, remote_id, remote_url),
        )

    def mark_retry(
        self,
        delivery_id: int,
        next_attempt: float,
        error: str,
        *,
        count_attempt: bool = True,
        doubt_since: float | None = None,
    ) -> None:
        """Back to the queue; doubt_since (kept once set) when the attempt may have posted."""
        self._transition(
            delivery_id,
            DeliveryState.QUEUED,
            (DeliveryState.SENDING,),
            "next_attempt_at = ?, last_error = ?, attempts = attempts - ?, doubt_since = COALESCE(doubt_since, ?)",
            (next_attempt, error, 0 if count_attempt else 1, doubt_since),
        )

    def requeue(
        self, delivery_id: int, next_attempt: float, error: str, attempts: int, *, doubt_since: float | None = None
    ) -> None:
        """Back to the queue after an unexpected error (before or during the send), with the
        attempts counted so far."""
        self._transition(
            delivery_id,
            DeliveryState.QUEUED,
            (DeliveryState.QUEUED, DeliveryState.SENDING),
            "next_attempt_at = ?, last_error = ?, attempts = ?, doubt_since = COALESCE(doubt_since, ?)",
            (next_attempt, error, attempts, doubt_since),
        )

    def mark_failed(self, delivery_id: int, error: str) -> None:
        self._transition(
            delivery_id,
            DeliveryState.FAILED,
            (DeliveryState.QUEUED, DeliveryState.SENDING),
            "last_error = ?",
            (error,),
        )

    def _transition(
        self,
        delivery_id: int,
        to: DeliveryState,
        allowed_from: tuple[DeliveryState, ...],
        assignments: str,
        params: tuple[Any, ...],
        *,
        also: Iterable[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        """One step of a delivery's life, refused (StateError) unless the delivery is in a
        state the step may start from: a bug can never, say, post a dropped delivery. The
        statements `also` run in the same transaction, once the step is taken."""
        marks = ",".join("?" * len(allowed_from))
        with self.transaction():
            changed = self.db.execute(
                f"UPDATE deliveries SET state = ?, {assignments} WHERE id = ? AND state IN ({marks})",
                (to, *params, delivery_id, *allowed_from),
            ).rowcount
            if changed:
                for sql, values in also:
                    self.db.execute(sql, values)
        if not changed:
            found = self.delivery(delivery_id)
            now_in = found.state if found else "missing"
            raise StateError(f"delivery #{delivery_id} is {now_in}: it cannot become {to}")

    # a thread's replies (thread_parts): each sent on its own, after the post it answers

    def thread_parts(self, delivery_id: int) -> list[ThreadPart]:
        rows = self.db.execute(
            f"SELECT {_PART_COLUMNS} FROM thread_parts WHERE delivery_id = ? ORDER BY part", (delivery_id,)
        )
        return [ThreadPart(*row) for row in rows]

    def unfinished_threads(self, account: str, now: float) -> list[Delivery]:
        """The account's posted threads with a reply to send now: one an interrupted run
        left 'sending', or one queued whose time has come."""
        rows = self.db.execute(
            f"SELECT {self._DELIVERY_COLUMNS} FROM deliveries d JOIN items i ON i.id = d.item_id"
            f" WHERE d.account = ? AND d.state = 'posted' AND {_NEXT_PART_DUE} ORDER BY d.posted_at, d.id",
            (account, now),
        )
        return [_delivery(row) for row in rows]

    def _part_step(
        self,
        delivery_id: int,
        part: int,
        to: str,
        allowed_from: tuple[str, ...],
        assignments: str,
        params: tuple[Any, ...],
    ) -> None:
        marks = ",".join("?" * len(allowed_from))
        with self.transaction():
            changed = self.db.execute(
                f"UPDATE thread_parts SET state = ?, {assignments} WHERE delivery_id = ? AND part = ?"
                f" AND state IN ({marks})",
                (to, *params, delivery_id, part, *allowed_from),
            ).rowcount
        if not changed:
            raise StateError(f"delivery #{delivery_id}: thread part {part} cannot become {to}")

    def mark_part_sending(self, delivery_id: int, part: int, now: float) -> None:
        self._part_step(
            delivery_id, part, "sending", ("queued", "sending"), "attempts = attempts + 1, last_attempt_at = ?", (now,)
        )

    def mark_part_posted(self, delivery_id: int, part: int, now: float, remote_id: str, url: str, cid: str) -> None:
        self._part_step(
            delivery_id,
            part,
            "posted",
            ("sending",),
            "posted_at = ?, remote_id = ?, remote_url = ?, cid = ?, last_error = NULL",
            (now, remote_id, url, cid),
        )

    def mark_part_retry(
        self,
        delivery_id: int,
        part: int,
        next_attempt: float,
        error: str,
        *,
        count_attempt: bool = True,
        doubt_since: float | None = None,
    ) -> None:
        self._part_step(
            delivery_id,
            part,
            "queued",
            ("queued", "sending"),
            "next_attempt_at = ?, last_error = ?, attempts = attempts - ?, doubt_since = COALESCE(doubt_since, ?)",
            (next_attempt, error, 0 if count_attempt else 1, doubt_since),
        )

    def mark_part_failed(self, delivery_id: int, part: int, total: int, error: str) -> None:
        """The part failed for good, and the replies after it with it (each would answer a
        post that is not there); the delivery, posted, says so in its last error."""
        with self.transaction():
            self.db.execute(
                "UPDATE thread_parts SET state = 'failed', last_error = CASE WHEN part = ? THEN ?"
                " ELSE ? END WHERE delivery_id = ? AND part >= ? AND state IN ('queued', 'sending')",
                (part, error, f"not sent: part {part} failed", delivery_id, part),
            )
            self.db.execute(
                "UPDATE deliveries SET last_error = ? WHERE id = ?",
                (
                    f"thread of {total} posts: reply {part} failed, it and those after it not posted: {error}",
                    delivery_id,
                ),
            )

    def retry_parts(self, delivery_id: int, now: float) -> int:
        """`relay queue retry` of a posted thread whose replies failed: they are queued again,
        with their own keys (a reply that may have posted is the user's to check first)."""
        with self.transaction():
            count = self.db.execute(
                "UPDATE thread_parts SET state = 'queued', attempts = 0, next_attempt_at = ?, last_error = NULL,"
                " doubt_since = NULL WHERE delivery_id = ? AND state = 'failed'",
                (now, delivery_id),
            ).rowcount
            if count:
                self.db.execute("UPDATE deliveries SET last_error = NULL WHERE id = ?", (delivery_id,))
        return int(count)

    def move(self, delivery_ids: Iterable[int], move: Move, now: float) -> int:
        """Apply a user's move to these deliveries, all or none: StateError names the first
        that does not exist or is not in a state the move starts from."""
        ids = list(delivery_ids)
        with self.transaction():
            for delivery_id in ids:
                delivery = self.delivery(delivery_id)
                if delivery is None:
                    raise StateError(f"no delivery #{delivery_id} (see `relay queue list`)")
                if delivery.state not in move.allowed_from:
                    raise StateError(
                        f"delivery #{delivery_id} is {delivery.state}; only"
                        f" {', '.join(move.allowed_from)} can become {move.to}"
                    )
            return self._set_state(ids, move.to, now)

    def move_feed(self, feed: str, move: Move, now: float) -> int:
        """Apply a user's move to every delivery of feed in the state it starts from."""
        with self.transaction():
            ids = [d.id for d in self.deliveries(feed=feed, states=move.allowed_from)]
            return self._set_state(ids, move.to, now)

    def _set_state(self, ids: list[int], state: DeliveryState, now: float) -> int:
        count = 0
        for delivery_id in ids:
            count += self.db.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ?, last_error = CASE WHEN ? = 'queued'"
                " THEN NULL ELSE last_error END, attempts = CASE WHEN ? = 'queued' THEN 0 ELSE attempts END,"
                " doubt_since = CASE WHEN ? = 'queued' THEN NULL ELSE doubt_since END"  # the user checked
                " WHERE id = ?",
                (state, now, state, state, state, delivery_id),
            ).rowcount
        return count

    def posted_since(self, account: str, since: float) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE account = ? AND state = 'posted' AND posted_at >= ?",
            (account, since),
        ).fetchone()
        return int(row[0])

    def feed_activity(self, account: str, since: float) -> dict[str, int]:
        """The feeds active for this account since `since` (an item first seen, a post, or
        something waiting), each with its posts to the account in that time."""
        rows = self.db.execute(
            "SELECT i.feed, SUM(d.state = 'posted' AND d.posted_at >= ?) FROM deliveries d"
            " JOIN items i ON i.id = d.item_id WHERE d.account = ? AND (i.first_seen_at >= ?"
            " OR d.state IN ('queued', 'sending') OR (d.state = 'posted' AND d.posted_at >= ?))"
            " GROUP BY i.feed",
            (since, account, since, since),
        )
        return {feed: int(posts or 0) for feed, posts in rows}

    def held_feeds(self, account: str, since: float) -> set[str]:
        """The feeds whose items first seen since `since` the flood guard holds for this
        account: they wait for the user, not for a share of the day."""
        rows = self.db.execute(
            "SELECT DISTINCT i.feed FROM deliveries d JOIN items i ON i.id = d.item_id"
            " WHERE d.account = ? AND d.state = 'held' AND i.first_seen_at >= ?",
            (account, since),
        )
        return {row[0] for row in rows}

    def last_published_at(self, feed: str) -> float | None:
        """The newest item's date (a campaign's: the time its last occurrence queued was for)."""
        row = self.db.execute("SELECT MAX(published_at) FROM items WHERE feed = ?", (feed,)).fetchone()
        return None if row[0] is None else float(row[0])

    def next_delivery_at(self, account: str) -> float | None:
        """When the account's next delivery (or a thread's reply) is due: relay watch wakes then."""
        row = self.db.execute(
            "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM deliveries"
            "  WHERE account = ? AND state IN ('queued', 'sending')"
            " UNION ALL SELECT MIN(p.next_attempt_at) FROM thread_parts p JOIN deliveries d ON d.id = p.delivery_id"
            "  WHERE d.account = ? AND d.state = 'posted' AND p.state IN ('queued', 'sending'))",
            (account, account),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def posted_times(self, account: str, since: float) -> list[float]:
        rows = self.db.execute(
            "SELECT posted_at FROM deliveries WHERE account = ? AND state = 'posted' AND posted_at >= ?"
            " ORDER BY posted_at",
            (account, since),
        )
        return [float(row[0]) for row in rows]

    def last_posted_at(self, account: str) -> float | None:
        row = self.db.execute(
            "SELECT MAX(posted_at) FROM deliveries WHERE account = ? AND state = 'posted'", (account,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def outbox_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for account, state, count in self.db.execute(
            "SELECT account, state, COUNT(*) FROM deliveries GROUP BY account, state"
        ):
            counts.setdefault(account, {})[state] = count
        return counts

    # alerts (relay.alerts)

    def held_counts(self) -> dict[tuple[str, str], int]:
        """Items the flood guard holds, per (feed, account)."""
        rows = self.db.execute(
            "SELECT i.feed, d.account, COUNT(*) FROM deliveries d JOIN items i ON i.id = d.item_id"
            " WHERE d.state = 'held' GROUP BY i.feed, d.account"
        )
        return {(feed, account): int(count) for feed, account, count in rows}

    def failed_threads(self) -> list[Delivery]:
        """Posted deliveries whose thread has a reply that failed for good."""
        ids = [
            row[0] for row in self.db.execute("SELECT DISTINCT delivery_id FROM thread_parts WHERE state = 'failed'")
        ]
        return self.deliveries(ids=ids, states=[DeliveryState.POSTED]) if ids else []

    def conditions(self) -> dict[str, tuple[float, str]]:
        return {key: (since, text) for key, since, text in self.db.execute("SELECT key, since, text FROM conditions")}

    def set_condition(self, key: str, text: str, now: float) -> None:
        """A condition a run saw (kept with when it began, its text updated)."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO conditions (key, since, text) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET text = excluded.text",
                (key, now, text),
            )

    def clear_condition(self, key: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM conditions WHERE key = ?", (key,))

    def alerted(self) -> dict[str, tuple[str, str]]:
        """The problems reported as started and not yet as resolved: key → (severity, text)."""
        return {
            key: (severity, text) for key, severity, text in self.db.execute("SELECT key, severity, text FROM alerted")
        }

    def save_alerted(self, started: Mapping[str, tuple[str, str]], resolved: Iterable[str], now: float) -> None:
        with self.transaction():
            for key, (severity, text) in started.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO alerted (key, text, severity, at) VALUES (?, ?, ?, ?)",
                    (key, text, severity, now),
                )
            for key in resolved:
                self.db.execute("DELETE FROM alerted WHERE key = ?", (key,))

    def account_names(self) -> list[str]:
        """Accounts with a row of their own (a pause, limits, logins) or a delivery."""
        rows = self.db.execute("SELECT name FROM accounts UNION SELECT DISTINCT account FROM deliveries")
        return sorted(row[0] for row in rows)

    def account_state(self, name: str) -> AccountState:
        row = self.db.execute(
            "SELECT blocked_until, last_error, limits, limits_at, logins FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        if not row:
            return AccountState()
        return AccountState(
            blocked_until=row[0],
            last_error=row[1],
            limits=json.loads(row[2]) if row[2] else None,
            limits_at=row[3],
            logins=row[4],
        )

    def update_account(self, name: str, **fields: Any) -> None:
        if "limits" in fields and fields["limits"] is not None:
            fields["limits"] = json.dumps(fields["limits"])
        with self.transaction():
            self.db.execute("INSERT INTO accounts (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
            for key, value in fields.items():
                if key not in ("blocked_until", "last_error", "limits", "limits_at", "logins"):
                    raise ValueError(key)
                self.db.execute(f"UPDATE accounts SET {key} = ? WHERE name = ?", (value, name))

    def count_login(self, name: str) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO accounts (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
            self.db.execute("UPDATE accounts SET logins = logins + 1 WHERE name = ?", (name,))

    def session(self, account: str) -> str | None:
        row = self.db.execute("SELECT data FROM sessions WHERE account = ?", (account,)).fetchone()
        return row[0] if row else None

    def handle_did(self, handle: str, *, resolved_after: float) -> str | None:
        """The DID a handle resolved to, if it was resolved after that time."""
        row = self.db.execute(
            "SELECT did FROM handles WHERE handle = ? AND resolved_at > ?", (handle.lower(), resolved_after)
        ).fetchone()
        return row[0] if row else None

    def save_handle_did(self, handle: str, did: str, now: float) -> None:
        self.db.execute(
            "INSERT INTO handles (handle, did, resolved_at) VALUES (?, ?, ?)"
            " ON CONFLICT (handle) DO UPDATE SET did = excluded.did, resolved_at = excluded.resolved_at",
            (handle.lower(), did, now),
        )

    def save_session(self, account: str, data: str | None, now: float) -> None:
        with self.transaction():
            if data is None:
                self.db.execute("DELETE FROM sessions WHERE account = ?", (account,))
            else:
                self.db.execute(
                    "INSERT INTO sessions (account, data, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (account) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                    (account, data, now),
                )


@contextlib.contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    """One run at a time. flock is released by the kernel when a process dies, even by
    SIGKILL, so a crashed run never blocks the next one."""
    if state_dir.exists() and not state_dir.is_dir():
        raise StateError(f"{state_dir}: the state folder is a file; point --state-dir at a folder")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "relay.lock"
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LockedError(f"another relay run holds {path}; this one exits") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def describe_failure(exc: Exception, state_dir: Path) -> str | None:
    """One line for a failure of the state (SQLite or the disk under it), naming the state
    folder and what to do; None for any other error."""
    if isinstance(exc, sqlite3.Error):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        lowered = text.lower()
        if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
            hint = "the state file is damaged; move it away (relay starts afresh) or restore a backup"
        elif "full" in lowered or "i/o" in lowered:
            hint = "the disk is full or failing; free some space, check the disk, and run again"
        elif "readonly" in lowered or "unable to open" in lowered or "permission" in lowered:
            hint = "relay cannot write there; check the folder's owner and permissions"
        elif "locked" in lowered or "busy" in lowered:
            hint = "another program holds the state file; try again later"
        else:
            hint = "check the disk and the file, or move it away to start afresh"
        return f"state {state_dir}: {text}: {hint}"
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        where = exc.filename or state_dir
        if exc.filename and not str(Path(exc.filename).resolve()).startswith(str(state_dir.resolve())):
            return f"{where}: {exc.strerror or exc}"  # not the state: say only what failed
        reason = exc.strerror or str(exc)
        hints = {
            errno.ENOSPC: "the disk is full; free some space and run again",
            errno.EFBIG: "the disk is full or a file size limit was reached; free some space",
            errno.EDQUOT: "the disk quota is used up; free some space",
            errno.EACCES: "relay cannot write there; check the folder's owner and permissions",
            errno.EPERM: "relay cannot write there; check the folder's owner and permissions",
            errno.EROFS: "the file system is read-only; point --state-dir at a writable folder",
            errno.ENOTDIR: "--state-dir must name a folder, not a file",
            errno.EEXIST: "--state-dir must name a folder, not a file",
        }
        hint = hints.get(exc.errno or 0, "check the state folder")
        return f"state {state_dir}: {where}: {reason}: {hint}"
    return None
