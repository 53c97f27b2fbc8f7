import os
import sqlite3
from pathlib import Path

import pytest

from relay.errors import StateError
from relay.store import SCHEMA_VERSION, Store


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
