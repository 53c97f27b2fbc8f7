import os
import sqlite3
from pathlib import Path

import pytest

from relay.errors import StateError
from relay.models import RELEASE, DeliveryState, Post
from relay.store import SCHEMA_VERSION, Store

POST = Post("mastodon", "m", "text https://example.org/", 28, 500, "fr", "https://example.org/")


def test_new_state_is_private_wal_and_migrated(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (tmp_path / "state" / "relay.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction():
        item = store.insert_item("f", b"k" * 16, None, "t", "https://e.org", None, 1.0, {"title": "t"})
        store.insert_delivery(item, "masto", "queued", "key", None, 1.0)
    store.close()
    again = Store.open(tmp_path)
    assert [d.idempotency_key for d in again.deliveries()] == ["key"]


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_item("f", b"k" * 16, None, "t", "https://e.org", None, 1.0, {})
        raise RuntimeError("crash in the middle of a poll")
    assert store.db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0


def test_not_sqlite_is_an_error_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "relay.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="not a usable relay state file"):
        Store.open(tmp_path)
    assert (tmp_path / "relay.db").read_bytes() == b"garbage" * 1000


def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "relay.db") as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StateError, match="not a relay state file"):
        Store.open(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "relay.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer relay"):
        Store.open(tmp_path)
    with pytest.raises(StateError, match="newer relay"):
        Store.open_read_only(tmp_path)


def test_read_only_open_creates_nothing(tmp_path: Path) -> None:
    assert Store.open_read_only(tmp_path / "absent") is None
    assert not (tmp_path / "absent").exists()


def test_sessions_are_stored_and_cleared(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.save_session("sky", "secret-session", 1.0)
    assert store.session("sky") == "secret-session"
    store.save_session("sky", None, 2.0)
    assert store.session("sky") is None
    assert os.stat(tmp_path / "relay.db").st_mode & 0o077 == 0


def test_open_permissions_are_tightened_with_one_warning(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Store.open(state).close()
    (state / "relay.lock").write_text("")
    state.chmod(0o755)
    (state / "relay.db").chmod(0o644)
    (state / "relay.lock").chmod(0o640)
    store = Store.open(state)
    [warning] = store.warnings
    assert "0755 -> 0700" in warning and "relay.db 0644 -> 0600" in warning and "relay.lock 0640 -> 0600" in warning
    assert state.stat().st_mode & 0o777 == 0o700
    assert all((state / n).stat().st_mode & 0o777 == 0o600 for n in ("relay.db", "relay.lock"))
    assert Store.open(state).warnings == []


def test_a_version_1_state_is_upgraded(tmp_path: Path) -> None:
    from relay.store import MIGRATIONS

    with sqlite3.connect(tmp_path / "relay.db") as db:
        MIGRATIONS[0](db)
        db.execute("PRAGMA user_version = 1")
    store = Store.open(tmp_path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "items_feed_seen" in indexes


def test_recent_counts_and_feed_activity(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction():
        for n, (feed, seen) in enumerate([("a", 100.0), ("a", 5000.0), ("a", 6000.0), ("b", 6000.0), ("c", 6000.0)]):
            item = store.insert_item(feed, bytes([n]) * 16, None, "t", None, None, seen, {})
            if feed != "c":  # c's item was only marked seen
                store.insert_delivery(item, "m", "queued", f"k{n}", None, seen)
    assert store.recent_item_counts(["a", "b", "c"], since=1000.0) == {"a": 2, "b": 1}
    first, second = store.deliveries()[:2]
    store.mark_sending(first.id, 5500.0, POST)
    store.mark_posted(first.id, 5500.0, "1", "")
    assert store.feed_activity("m", since=1000.0) == {"a": 1, "b": 0}
    store.requeue(second.id, 7000.0, "KeyError: 'id'", attempts=3)
    again = store.delivery(second.id)
    assert again is not None and (again.state, again.attempts, again.last_error) == ("queued", 3, "KeyError: 'id'")


def test_a_step_from_a_state_it_cannot_start_from_is_refused(tmp_path: Path) -> None:
    """Each step of a delivery's life says where it may start: a bug cannot post a dropped
    delivery, send a held one, or drop one being sent."""
    store = Store.open(tmp_path)
    with store.transaction():
        item = store.insert_item("a", b"k" * 16, None, "t", None, None, 1.0, {})
        store.insert_delivery(item, "m", "held", "key", None, 1.0)
    [held] = store.deliveries()
    for step in (
        lambda: store.mark_sending(held.id, 2.0, POST),
        lambda: store.mark_posted(held.id, 2.0, "1", ""),
        lambda: store.mark_dropped(held.id, "duplicate"),
    ):
        with pytest.raises(StateError, match=rf"delivery #{held.id} is held: it cannot become"):
            step()
    assert store.delivery(held.id).state == DeliveryState.HELD  # type: ignore[union-attr]
    store.move([held.id], RELEASE, 3.0)
    store.mark_sending(held.id, 4.0, POST)
    store.mark_posted(held.id, 5.0, "1", "https://m.example/1")
    with pytest.raises(StateError, match="is posted: it cannot become failed"):
        store.mark_failed(held.id, "late")
