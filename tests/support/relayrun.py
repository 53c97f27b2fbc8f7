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
