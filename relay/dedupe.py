"""Canonical URLs and fingerprints for dedupe (pure). The canonical URL is a key, never
something we post: the original link is what goes out."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# Query parameters that only track where a click came from, for dedupe keys only (never
# posted: the posted link is cleaned by the ClearURLs rules in relay.trackers).
_TRACKERS = re.compile(
    r"^(utm_\w+|fbclid|gclid|gclsrc|dclid|msclkid|mc_cid|mc_eid|mc_\w+|xtor|xtref|_hsenc|_hsmi"
    r"|igshid|yclid|twclid|ref_src|ref_url|at_medium|at_campaign|at_\w+|pk_\w+|piwik_\w+"
    r"|matomo_\w+|mtm_\w+|oly_anon_id|oly_enc_id|wt_mc|wt\.\w+|ncid|sr_share|spm|ito|ns_\w+"
    r"|rss|ocid|cmpid|source)$",
    re.IGNORECASE,
)
_GOOGLE_REDIRECT = re.compile(r"^(www\.)?google\.[a-z.]+$")


def canonical_url(url: str) -> str:
    """A fingerprint of url: trackers dropped; scheme, 'www.', default port, trailing slash,
    fragment and query order folded; meaningful parameters (?p=24275) kept."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower().rstrip(".")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if _GOOGLE_REDIRECT.match(host) and parts.path == "/url":
        target = dict(query).get("url") or dict(query).get("q")
        if target and target.startswith(("http://", "https://")):
            return canonical_url(target)
    if host.startswith("www."):
        host = host[4:]
    port = parts.port if _valid_port(parts) else None
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", unquote(parts.path)) or "/"
    path = path.rstrip("/") or ""
    kept = sorted((k, v) for k, v in query if not _TRACKERS.match(k))
    canonical = host + path
    if kept:
        canonical += "?" + urlencode(kept)
    return canonical  # no fragment: #xtor=RSS-1 tracks, and a page anchor is the same page


def key_link(url: str) -> str:
    """The link an item without a guid is known by: the link minus the parameters in
    _TRACKERS. Frozen: state written by earlier versions holds these keys, and a new key
    would post those items again. The link that is posted is cleaned by relay.trackers."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query and "xtor=" not in parts.fragment:
        return url
    pairs = [p for p in parts.query.split("&") if p and not _TRACKERS.match(unquote(p.split("=", 1)[0]))]
    fragment = "" if parts.fragment.lower().startswith("xtor=") else parts.fragment
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(pairs), fragment))


def _valid_port(parts: object) -> bool:
    try:
        return getattr(parts, "port", None) is not None
    except ValueError:
        return False


def fingerprint(value: str) -> bytes:
    """A 16-byte key for SQLite (binary keys index far faster than hex text)."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).digest()
