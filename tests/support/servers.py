"""The real servers of the integration tests, started and stopped by the suite on loopback:
mastodon-mock (PyPI) and the reference Bluesky PDS (@atproto/pds from npm, installed by
tests/servers/install_pds.sh into the cache)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CACHE = Path(os.environ.get("RELAY_CACHE", Path.home() / ".cache" / "relay-ci"))
PDS_DIR = Path(os.environ.get("RELAY_PDS_DIR", CACHE / "pds"))
START_PDS = Path(__file__).resolve().parents[1] / "servers" / "start_pds.mjs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip locally with the reason; under CI a missing server is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the servers must run)")
    pytest.skip(reason)


@dataclass
class MastodonMock:
    url: str
    process: subprocess.Popen[bytes]
    token: str = "mock_token"

    def fault(self, **spec: Any) -> None:
        httpx.post(self.url + "/api/v1/_mock/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(self.url + "/api/v1/_mock/faults").raise_for_status()

    def new_user(self, username: str) -> str:
        response = httpx.post(self.url + "/api/v1/_mock/dev_user", json={"username": username})
        response.raise_for_status()
        return str(response.json()["access_token"])

    def statuses(self, token: str | None = None) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        me = httpx.get(self.url + "/api/v1/accounts/verify_credentials", headers=headers).json()
        response = httpx.get(self.url + f"/api/v1/accounts/{me['id']}/statuses", params={"limit": 40}, headers=headers)
        return list(response.json())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_mastodon_mock() -> MastodonMock:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="mastodon-mock-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mastodon_mock",
            "serve",
            "--in-memory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mastodon-mock died: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(url + "/api/v1/instance", timeout=1).status_code == 200:
                return MastodonMock(url, process)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("mastodon-mock did not start within 60 s")


@dataclass
class Pds:
    url: str
    info: dict[str, Any]
    process: subprocess.Popen[bytes]

    def account(self, handle: str) -> dict[str, Any]:
        return next(a for a in self.info["accounts"] if a["handle"] == handle)

    def records(self, did: str, collection: str = "app.bsky.feed.post") -> list[dict[str, Any]]:
        """An account's records of a collection, newest first (at most 100)."""
        response = httpx.get(
            f"{self.url}/xrpc/com.atproto.repo.listRecords",
            params={"repo": did, "collection": collection, "limit": 100},
        )
        response.raise_for_status()
        return list(response.json()["records"])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_pds(accounts: str, *, rate_limits: bool = False) -> Pds:
    node = shutil.which("node")
    if node is None:
        unavailable("Node.js is not installed: the Bluesky tests need the reference PDS")
    if not any(PDS_DIR.glob(".installed-*")):
        unavailable(f"the reference PDS is not installed in {PDS_DIR} (run tests/servers/install_pds.sh)")
    run_dir = Path(tempfile.mkdtemp(prefix="relay-pds-"))
    ready = run_dir / "ready.json"
    env = {
        **os.environ,
        "PDS_PORT": str(free_port()),
        "PLC_PORT": str(free_port()),
        "READY_FILE": str(ready),
        "ACCOUNTS": accounts,
        "RATE_LIMITS": "1" if rate_limits else "0",
        "DATA_DIR": str(run_dir / "data"),
    }
    shutil.copyfile(START_PDS, PDS_DIR / "start_pds.mjs")
    log = (run_dir / "pds.log").open("wb")
    process = subprocess.Popen(
        [str(node), str(PDS_DIR / "start_pds.mjs")], cwd=PDS_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready.exists() and ready.stat().st_size:
            info = json.loads(ready.read_text())
            return Pds(info["pdsUrl"], info, process)
        if process.poll() is not None:
            raise RuntimeError(f"the PDS died: {(run_dir / 'pds.log').read_text()[-3000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the PDS did not start within 120 s")
