"""The Dockerfile (issue 12, part 6), built with Debian's podman on a Debian base made by
tests/servers/container_base.sh (no image registry is reachable here): the image previews the
offline example with no network, runs as a non-root user, and `relay watch`, its command,
keeps its state on the volume and exits 0 on SIGTERM (podman stop)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import unavailable

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("RELAY_CONTAINER_BASE", "localhost/relay-base:bookworm")
# this machine: crun refuses its hybrid cgroups, and its limits may not be raised
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]


def podman() -> list[str]:
    if shutil.which("podman") is None:
        unavailable("no podman (scripts/test installs Debian's)")
    command = ["podman"] + (["--runtime", "runc"] if shutil.which("runc") else [])
    if subprocess.run([*command, "image", "exists", BASE], check=False).returncode != 0:
        unavailable(f"no base image {BASE} (tests/servers/container_base.sh makes it)")
    return command


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[list[str], str]]:
    command = podman()
    tag = f"localhost/relay-test-{uuid.uuid4().hex[:8]}"
    # the build reaches PyPI as this machine does: its network, and the CA its pip trusts
    cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    trust = ["--build-arg", f"PIP_CERT={cert}", "-v", f"{cert}:{cert}:ro"] if Path(cert).is_file() else []
    built = run(
        *command,
        "build",
        "--layers=false",  # no intermediate image left behind
        *LIMITS,
        "--network=host",
        "--build-arg",
        f"BASE={BASE}",
        *trust,
        "-t",
        tag,
        str(ROOT),
        timeout=800,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    yield command, tag
    run(*command, "rmi", "-f", tag)


def test_the_image_previews_the_offline_example_without_network(image: tuple[list[str], str]) -> None:
    command, tag = image
    example = ROOT / "examples" / "offline"
    preview = run(
        *command, "run", "--rm", "--network=none", *LIMITS, "-v", f"{example}:/config:ro", tag, "relay", "preview"
    )
    assert preview.returncode == 0, preview.stderr
    assert "== mastodon (mastodon):" in preview.stdout and "Signez la pétition" in preview.stdout
    who = run(*command, "run", "--rm", "--network=none", *LIMITS, tag, "id", "-u")
    assert who.stdout.strip() == "10001"  # not root
    files = run(*command, "run", "--rm", "--network=none", *LIMITS, tag, "ls", "/opt/relay/lib")
    assert files.returncode == 0 and "python3" in files.stdout


def test_relay_watch_is_the_command_keeps_its_state_on_the_volume_and_stops_on_sigterm(
    image: tuple[list[str], str],
) -> None:
    command, tag = image
    name = f"relay-watch-{uuid.uuid4().hex[:8]}"
    volume = f"relay-state-{uuid.uuid4().hex[:8]}"
    example = ROOT / "examples" / "offline"
    try:
        started = run(
            *command, "run", "-d", "--name", name, "--network=none", *LIMITS,
            "-e", "RELAY_MASTODON_TOKEN=x", "-e", "RELAY_BLUESKY_APP_PASSWORD=y",
            "-v", f"{example}:/config:ro", "-v", f"{volume}:/data", tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        logs = ""
        while time.monotonic() < deadline and "feed santenathon: ok" not in logs:
            time.sleep(0.5)
            logs = run(*command, "logs", name).stderr
        assert "relay watch: 4 feeds, 2 accounts; SIGTERM stops" in logs, logs
        assert "feed santenathon: ok" in logs, logs
        status = run(*command, "exec", name, "relay", "status")  # as the README says
        assert status.returncode in (0, 1) and "santenathon" in status.stdout, status.stdout + status.stderr
        stopped = run(*command, "stop", "-t", "60", name, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
        code = run(*command, "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0", run(*command, "logs", name).stderr
        state = run(
            *command, "run", "--rm", "--network=none", *LIMITS, "-v", f"{volume}:/data", tag, "ls", "/data/state"
        )
        assert "relay.db" in state.stdout, state.stderr
    finally:
        run(*command, "rm", "-f", name)
        run(*command, "volume", "rm", "-f", volume)
