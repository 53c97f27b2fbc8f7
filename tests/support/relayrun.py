"""Run relay as a user would: in-process through Click, or as a real subprocess that tests
can kill."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from relay.cli import cli


def relay(*args: str, env: dict[str, str] | None = None, now: datetime | None = None) -> Result:
    environment = dict(env or {})
    if now is not None:
        environment["RELAY_NOW"] = now.isoformat()
    return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)


def relay_process(
    *args: str, env: dict[str, str] | None = None, now: datetime | None = None, **kwargs: Any
) -> subprocess.Popen[str]:
    environment = {**os.environ, **(env or {})}
    if now is not None:
        environment["RELAY_NOW"] = now.isoformat()
    return subprocess.Popen(
        [sys.executable, "-m", "relay", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        **kwargs,
    )


def killed_then_run(config: Path, env: dict[str, str], when: str, part: str) -> None:
    """relay run SIGKILLed at a point of its conversation with a server (tests/support/killpoint),
    then run again to completion, as cron would."""
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.killpoint", when, part, "--", "run", "-c", str(config)],
        env={**os.environ, **env},
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    result = relay("run", "-c", str(config), env=env)  # the real clock, like the killed run
    assert result.exit_code == 0, result.output
