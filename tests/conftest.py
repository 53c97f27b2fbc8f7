"""Every test: state in tmp_path, no secrets from the developer's environment, and the
network blocked except loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_mastodon import FakeMastodon
from tests.support.feedserver import FeedServer

ROOT = Path(__file__).resolve().parent.parent
FEEDS = Path(__file__).resolve().parent / "feeds"
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # unix sockets
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.") or host.startswith("::ffff:127.")


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise OSError(f"network blocked in tests: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise OSError(f"network blocked in tests: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setenv("RELAY_STATE_DIR", str(tmp_path / "state"))
    for name in ("RELAY_CONFIG", "RELAY_MASTODON_TOKEN", "RELAY_BLUESKY_APP_PASSWORD", "RELAY_NOW", "RELAY_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    """relay's fake Mastodon on loopback; the token good-token is the account collectif."""
    server = FakeMastodon()
    yield server
    server.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def mastodon_mock() -> Iterator[Any]:
    from tests.support.servers import start_mastodon_mock

    server = start_mastodon_mock()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's) through Playwright, for the HTML preview."""
    from tests.support.browser import chromium

    with chromium() as running:
        yield running


@pytest.fixture(scope="session")
def pds() -> Iterator[Any]:
    from tests.support.servers import start_pds

    accounts = ",".join(
        f"{name}.test:{name}-pass"
        for name in (
            "alice",
            "bob",
            "carol",
            "dave",
            "erin",
            "frank",
            "grace",
            "heidi",
            "ivan",
            "judy",
            "kim",
            "leo",
            "mia",
        )
    )
    server = start_pds(accounts)
    yield server
    server.stop()
