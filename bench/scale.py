"""relay at scale, as cron runs it: N feeds x 20 items, each feed on its own loopback host
(its own port), 50 ms of latency per request, served by a separate process. relay runs as
the real command, in its own process, and each figure comes with that process's peak RSS
(its parser processes are counted apart: they are forked and killed with each run).

    python bench/scale.py [--feeds 200 1000 5000] [--latency 0.05]

For each N, the rows of issue 13's table:
  run 1  `relay seed`: the first poll, every feed fetched, parsed and recorded;
  run 2  `relay run` an hour later: every feed due, every server answers 304;
  no-op  `relay run` a minute after that: nothing due (median of 5).
The 200-feeds-on-one-host row is bench/one_host.py; relay's CPU per post is bench/engine.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from common import ROOT

ITEMS = 20


def feed_body(number: int, now: datetime) -> bytes:
    host = f"site{number}.example"
    items = "".join(
        f"<item><title>Article {n} du collectif {number}</title><link>https://{host}/articles/{n}</link>"
        f"<guid>https://{host}/?p={n}</guid>"
        f"<description><![CDATA[<p>Le <b>Health Data Hub</b> et les données de santé : épisode {n}, "
        f"une lecture de {40 + n} lignes sur l'hébergement chez Microsoft.</p>]]></description>"
        f"<category>Santé</category><pubDate>{format_datetime(now - timedelta(hours=ITEMS - n))}</pubDate></item>"
        for n in reversed(range(ITEMS))
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Collectif "
        f"{number}</title><link>https://{host}/</link><language>fr</language>{items}</channel></rss>"
    ).encode()


async def _serve(count: int, latency: float, now: datetime) -> None:
    """count HTTP/1.1 servers, one port each, keep-alive, ETag and 304."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes, etag: str) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(latency)
                if f"if-none-match: {etag}".encode() in head.lower():
                    writer.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n".encode())
                else:
                    writer.write(
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: {etag}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    ports = []
    servers = []
    for number in range(count):
        body = feed_body(number, now)
        etag = f'"{number}-{len(body)}"'
        server = await asyncio.start_server(
            lambda r, w, body=body, etag=etag: answer(r, w, body, etag), "127.0.0.1", 0, backlog=64
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(" ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()


def serve_main() -> None:
    count, latency, stamp = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    asyncio.run(_serve(count, latency, datetime.fromtimestamp(stamp, UTC)))


def measured(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str, float]:
    """Wall time (s), peak RSS of relay's own process (MB), exit code, stderr's last line,
    and the CPU time (user + system, s) of relay's own process."""
    start = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    errors = process.stderr.read().decode(errors="replace").strip().splitlines()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, usage.ru_maxrss / 1024, process.returncode, errors[-1] if errors else "", cpu


def one_scale(count: int, latency: float) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(count), str(latency), str(now.timestamp())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = server.stdout.readline().split()
        tmp = Path(tempfile.mkdtemp(prefix="relay-scale-"))
        lines = [
            "defaults:\n  every: 15m\n  to: [masto]\n",
            "accounts:\n  masto:\n    platform: mastodon\n    instance: https://m.example\n    token: ${TOKEN}\n",
            "feeds:\n",
        ]
        lines += [f"  - name: feed{n}\n    url: http://127.0.0.1:{port}/feed.xml\n" for n, port in enumerate(ports)]
        (tmp / "feeds.yaml").write_text("".join(lines))
        relay = shutil.which("relay") or str(Path(sys.executable).parent / "relay")
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**base, "TOKEN": "x", "RELAY_STATE_DIR": str(tmp / "state")}
        config = ["-c", str(tmp / "feeds.yaml")]

        def at(moment: datetime) -> dict[str, str]:
            return {**env, "RELAY_NOW": moment.isoformat()}

        first = measured([relay, "seed", *config], at(now))
        second = measured([relay, "run", *config], at(now + timedelta(hours=1)))
        idle = [measured([relay, "run", *config], at(now + timedelta(hours=1, minutes=1 + n))) for n in range(5)]
        print(f"{count} feeds x {ITEMS} items, each on its own host, {latency * 1000:.0f} ms latency per request:")
        for label, (seconds, rss, code, last, cpu) in (
            ("run 1, first poll (relay seed)", first),
            ("run 2, all 304 (relay run)", second),
        ):
            problem = f"  exit {code}: {last}" if code else ""
            print(f"  {label:34s} {seconds:6.2f} s   peak RSS {rss:5.0f} MB   CPU {cpu:5.2f} s{problem}")
        median = statistics.median(seconds for seconds, *_ in idle)
        rss = max(rss for _, rss, *_ in idle)
        print(f"  {'no-op run (nothing due), median':34s} {median * 1000:6.0f} ms  peak RSS {rss:5.0f} MB")
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    for count in args.feeds:
        one_scale(count, args.latency)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_main()
    else:
        sys.path.insert(0, str(ROOT))
        main()
