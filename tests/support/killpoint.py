"""Run relay and SIGKILL it at an exact point of its conversation with a server:

    python -m tests.support.killpoint before|after URL_PART -- relay arguments…

URL_PART#N kills at the Nth such POST request (a thread's second post), else at the first
request.
before: as a request whose URL contains URL_PART is about to be sent (the delivery is
already marked 'sending'); after: once the server answered it with success, before relay
has seen the answer (the server accepted the post, relay has not recorded it). Patches the
HTTP clients of this test process only; relay's code is untouched."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import httpx
import requests


def main() -> None:
    when, part = sys.argv[1], sys.argv[2]
    part, _, nth = part.partition("#")
    hits = [0]
    wanted = int(nth or 1)
    args = sys.argv[sys.argv.index("--") + 1 :]

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def wrap(original: Any) -> Any:
        def send(self: Any, request: Any, *a: Any, **kw: Any) -> Any:
            # with #N, only writes are counted (a reply's parent read back is no post)
            hit = part in str(request.url) and (not nth or request.method == "POST")
            if hit:
                hits[0] += 1
                hit = hits[0] == wanted
            if hit and when == "before":
                die()
            response = original(self, request, *a, **kw)
            if hit and when == "after" and response.status_code < 300:
                die()
            return response

        return send

    httpx.Client.send = wrap(httpx.Client.send)  # type: ignore[method-assign]
    requests.Session.send = wrap(requests.Session.send)  # type: ignore[method-assign]
    from relay.cli import cli

    cli(args, prog_name="relay")


if __name__ == "__main__":
    main()
