"""The delivery engine's own cost: queue N items and deliver them to the dry-run target
(no network: the engine's overhead per item), then to mastodon-mock (PyPI, the server the
integration tests post to) over HTTP on loopback (end to end). Then the state file size
and `relay status` time after 100,000 items. First, relay's own CPU per post for render
(fit): a mix of items, long summaries that need cutting and short ones that fit, titled and
untitled, for Mastodon and Bluesky (`--render-only` stops there).

    python bench/engine.py [--render-items 2000] [--render-only] [--items 10000] [--http-items 1000] [--stored 100000]"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import ROOT, command_ms

from relay.config import load_config
from relay.context import Context
from relay.dedupe import fingerprint
from relay.deliver import deliver
from relay.models import Item, ParsedFeed
from relay.render import FeedInfo, find_template, make_environment, render_post
from relay.store import Store, epoch
from relay.targets import make_target
from relay.targets.base import Limits
from relay.targets.bluesky import BlueskyText
from relay.targets.mastodon import MastodonText

MOCK_TOKEN = "mock_token"  # the account mastodon-mock creates at start


@contextmanager
def mastodon_mock() -> Iterator[str]:
    """A mastodon-mock server on a free loopback port, in memory; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mastodon_mock", "serve", "--in-memory", "--host", "127.0.0.1"]
    server = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/api/v1/instance").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        else:
            raise SystemExit(f"mastodon-mock did not answer at {url} within a minute")
        yield url
    finally:
        server.terminate()
        server.wait(10)


def server_alone_ms(url: str, count: int) -> float:
    """What mastodon-mock itself takes per status, posted to directly (no relay), in ms:
    its share of the end-to-end figure."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MOCK_TOKEN}"}) as client:
        start = time.perf_counter()
        for n in range(count):
            text = f"Article {n}\n\n{'Un résumé. ' * 10}\nhttps://example.org/{n}"
            client.post("/api/v1/statuses", data={"status": text, "language": "fr"}).raise_for_status()
        return (time.perf_counter() - start) / count * 1000


def statuses_count(url: str) -> int:
    me = httpx.get(url + "/api/v1/accounts/verify_credentials", headers={"Authorization": f"Bearer {MOCK_TOKEN}"})
    return int(me.json()["statuses_count"])


def config_text(url: str, items: int) -> str:
    return (
        f"defaults:\n  backfill: {items}\n  flood_threshold: {items}\n  max_age: 3650d\n"
        f"accounts:\n  masto:\n    platform: mastodon\n    instance: {url}\n    token: ${{TOKEN}}\n"
        f"pacing:\n  max_per_run: {items}\n  min_interval: 0s\n  max_per_day: {items}\n"
        "feeds:\n  - name: f\n    url: https://example.org/feed\n"
    )


def items(count: int, now: datetime) -> tuple[Item, ...]:
    return tuple(
        Item(
            "f",
            f"id:{n}",
            f"https://example.org/{n}",
            f"example.org/{n}",
            f"Article {n}",
            "Un résumé. " * 10,
            published=now - timedelta(seconds=n),
        )
        for n in range(count)
    )


def queue_and_deliver(count: int, url: str, context: Context, now: datetime, mix: bool = False) -> tuple[float, float]:
    from relay.poll import FeedPoll, FeedReport, decide_all, record_poll  # the render figures need none of it

    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    (tmp / "feeds.yaml").write_text(config_text(url, count))
    config = load_config(tmp / "feeds.yaml", environ={"TOKEN": MOCK_TOKEN})
    store = Store.open(tmp / "state")
    queued_items = tuple(render_items(count, now)) if mix else items(count, now)
    feed_poll = FeedPoll(config.feeds[0], FeedReport("f", "", "ok"), parsed=ParsedFeed("f", count, queued_items))
    start = time.perf_counter()
    decide_all([feed_poll], store, {}, now)
    record_poll(store, config, feed_poll, now)
    queued = time.perf_counter() - start
    target = make_target(config.accounts["masto"], store, context)
    start = time.perf_counter()
    report = deliver(config, store, {"masto": target}, lambda: now)
    delivered = time.perf_counter() - start
    assert sum(1 for e in report.events if e.outcome == "posted") == count, report.account_errors
    return queued, delivered


SENTENCES = (
    "La Quadrature du Net dénonce la surveillance biométrique dans l'espace public.",
    "Le Conseil d'État a rendu sa décision ce matin, après deux ans de procédure 🇫🇷.",
    "Nous appelons chacune et chacun à écrire à ses député·es avant le vote de mardi.",
    "Les données de santé de millions de personnes sont hébergées hors d'Europe.",
    "Rejoignez-nous samedi à 14 h place de la République ✊🏽 pour la marche.",
)


def render_items(count: int, now: datetime) -> list[Item]:
    """A realistic mix: a third with long summaries (1,000 to 8,000 characters) that must be
    cut, a third with short ones that fit, a third untitled statuses; some long titles."""
    mix = []
    for n in range(count):
        kind = n % 6
        sentences = [SENTENCES[(n + k) % len(SENTENCES)] for k in range(4 + (n * 7) % 100)]
        summary = " ".join(sentences)
        title = f"Article {n} : surveillance, santé et libertés numériques"
        if kind in (0, 1):
            pass  # long: cut
        elif kind in (2, 3):
            summary = " ".join(sentences[:2])  # short: fits
        elif kind == 4:
            title, summary = "", " ".join(sentences[:3])  # an untitled status
        else:
            title = " ".join(sentences[:8])  # a title too long for Bluesky's 300
        link = f"https://www.laquadrature.net/{now:%Y/%m}/article-{n}-surveillance-biometrique/"
        mix.append(Item("f", f"id:{n}", link, link, title, summary, published=now - timedelta(seconds=n)))
    return mix


def render_cpu(count: int, now: datetime) -> dict[str, float]:
    """relay's own CPU per post to render and fit each item for each platform, in ms."""
    env = make_environment([])
    feed = FeedInfo("quadrature", "La Quadrature du Net", "https://www.laquadrature.net/feed/")
    mix = render_items(count, now)
    figures = {}
    for platform, rules in (("mastodon", MastodonText(Limits())), ("bluesky", BlueskyText())):
        for template_name in ("news", "petition"):
            template = find_template(env, template_name, platform)
            start = time.process_time()
            for it in mix:
                render_post(
                    template,
                    it,
                    feed,
                    rules=rules,
                    account="acct",
                    hashtags=("SantéNumérique", "VSA"),
                    language="fr",
                )
            figures[f"{platform} {template_name}"] = (time.process_time() - start) / len(mix) * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--http-items", type=int, default=1_000)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--render-items", type=int, default=2_000)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    now = datetime.now(UTC)

    figures = render_cpu(args.render_items, now)
    print(f"render (fit): {args.render_items} items per platform and template, relay's own CPU per post")
    for name, per_post in figures.items():
        print(f"  {name:18} {per_post:.3f} ms")
    print(f"  mean               {sum(figures.values()) / len(figures):.3f} ms")
    if args.render_only:
        return

    queued, delivered = queue_and_deliver(args.items, "https://mastodon.example", Context(dry_run=True), now)
    print(f"engine: {args.items} items to the dry-run target")
    print(f"  queue (decide + record): {queued:6.2f} s  = {queued / args.items * 1000:.3f} ms per item")
    print(f"  deliver (render + outbox + send): {delivered:6.2f} s  = {delivered / args.items * 1000:.3f} ms per item")
    queued, delivered = queue_and_deliver(args.items, "https://mastodon.example", Context(dry_run=True), now, mix=True)
    print(f"  the same with the render mix above: {delivered / args.items * 1000:.3f} ms per item delivered")

    with mastodon_mock() as url:
        queued, delivered = queue_and_deliver(args.http_items, url, Context(), now)
        posted = statuses_count(url)
        alone = server_alone_ms(url, args.http_items // 5)
    per_item = delivered / args.http_items * 1000
    print(f"engine: {args.http_items} items to mastodon-mock over HTTP (Mastodon.py)")
    print(f"  deliver: {delivered:6.2f} s  = {per_item:.2f} ms per item ({posted} statuses)")
    print(
        f"  mastodon-mock alone (httpx, no relay): {alone:.2f} ms per status; relay's share {per_item - alone:.2f} ms"
    )

    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    store = Store.open(tmp / "state")
    start = time.perf_counter()
    with store.transaction():
        for n in range(args.stored):
            item_id = store.insert_item(
                "f",
                fingerprint(f"id:{n}"),
                fingerprint(f"example.org/{n}"),
                f"Article {n}",
                f"https://example.org/{n}",
                epoch(now),
                epoch(now),
                {"title": f"Article {n}"},
            )
            store.insert_delivery(item_id, "masto", "posted", f"key{n}", None, epoch(now))
    store.db.execute("UPDATE deliveries SET posted_at = ?", (epoch(now),))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filled = time.perf_counter() - start
    size = (tmp / "state" / "relay.db").stat().st_size
    env = {**os.environ, "RELAY_STATE_DIR": str(tmp / "state")}
    median, best = command_ms([sys.executable, "-m", "relay", "status"], runs=5, env=env)
    subprocess.run([sys.executable, "-m", "relay", "status"], env=env, check=True, capture_output=True, cwd=ROOT)
    print(f"state: {args.stored:,} items and deliveries written in {filled:.1f} s; relay.db {size / 1e6:.1f} MB")
    print(f"  relay status: median {median:.0f} ms, best {best:.0f} ms")


if __name__ == "__main__":
    main()
